/*
 * Remus streams of a Xen job: the source's end of one checkpoint
 * (ACK, interval) and the target's libxl records of one checkpoint.
 */
#include "job_priv.h"

/* ---- Remus, the source: one checkpoint's end --------------------------- */

void ckpt_xj_interval_fire(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_xen_job *j = arg;

    (void)fd;
    (void)what;
    if (j->stream == CKPT_XEN_STREAM_COLO) {
        ckpt_xj_colo_p_new(j);
        return;
    }
    ckpt_xen_helper_reply(j->h, 1); /* the next checkpoint */
}

void ckpt_xj_remus_checkpoint(struct ckpt_xen_job *j)
{
    uint64_t n = ++j->ckpts, v = 0;
    bool last =
        j->stop_req || (j->sp.max_checkpoints && n >= j->sp.max_checkpoints);
    unsigned ack = j->sp.ack_timeout_ms ? j->sp.ack_timeout_ms : REMUS_ACK_MS;
    unsigned ivl = j->sp.interval_ms ? j->sp.interval_ms : REMUS_INTERVAL_MS;
    char why[512] = "";
    struct timeval tv;
    int rc = 0;

    /* libxc's CHECKPOINT is out; libxl's layer ends the checkpoint. A
     * planned end says so first, so the target discards rather than takes
     * over. */
    if (last)
        rc = ckpt_xen_send_error(j->fd, -COLO_ECANCELLED,
                                 "protection ends after this checkpoint");
    if (rc >= 0 && j->emu_xs_len)
        rc = ckpt_xen_stream_emulator_xenstore(j->fd, j->emu_xs, j->emu_xs_len);
    if (rc >= 0)
        rc = ckpt_xen_stream_checkpoint_end(j->fd, j->emu, j->emu_len);
    if (rc >= 0)
        rc = ckpt_xen_read_ack(j->fd, (int)(n == 1 ? 10 * ack : ack), &v, why,
                               sizeof(why));
    if (rc >= 0 && v != n) {
        snprintf(why, sizeof(why), "ACK %" PRIu64 " for checkpoint %" PRIu64, v,
                 n);
        rc = -COLO_ESTREAM_CORRUPT;
    }
    if (rc < 0) {
        colo_warn("domain %" PRIu32 ": target lost at checkpoint %" PRIu64
                  " (%s); the domain runs on unprotected",
                  j->domid, n, why[0] ? why : colo_strerror(rc));
        j->target_lost = true;
        j->ckpts = n - 1;
        j->quiet_libxc = true;
        ckpt_xen_helper_reply(j->h, 0);
        return;
    }
    if (j->c.checkpoint)
        j->c.checkpoint(j, n, j->last_pause_us, j->c.opaque);
    if (last) {
        j->quiet_libxc = true;
        ckpt_xen_helper_reply(j->h, 0);
        return;
    }
    tv = colo_ms_to_tv(ivl);
    evtimer_add(j->ev_interval, &tv);
}

/* ---- Remus, the target: libxl's records of one checkpoint -------------- */

/* An EMULATOR_* record's body in place: its header checked (colo starts
 * one upstream QEMU: index 0) and stripped; the payload is len - 8 bytes. */
static int emulator_payload(uint8_t *body, uint32_t len)
{
    uint32_t id, index;
    int rc = xprt_emulator_hdr_decode(body, len, &id, &index);

    if (rc == 0 && (id != XPRT_EMULATOR_QEMU_UPSTREAM || index != 0))
        rc = -COLO_ESTREAM_UNSUPPORTED;
    if (rc == 0)
        memmove(body, body + 8, len - 8);
    return rc;
}

/* An EMULATOR_* record (body malloc'd, len bytes) taken over: checked
 * (an HVM domain's, QEMU upstream, index 0) and kept as the device model's
 * state, or, for a checkpoint (next), aside until its CHECKPOINT_END
 * commits it with the memory it goes with. Body stays the caller's on an
 * error; ckpt_xj_emulator_why says why. */
int ckpt_xj_take_emulator(struct ckpt_xen_job *j, uint32_t type, uint8_t *body,
                          uint32_t len, bool next)
{
    int rc = emulator_payload(body, len);

    if (rc == 0 && !j->hvm)
        rc = -COLO_ESTREAM_CORRUPT;
    if (rc < 0)
        return rc;
    if (type == XPRT_LIBXL_EMULATOR_CONTEXT) {
        uint8_t **dst = next ? &j->emu_next : &j->emu;

        free(*dst);
        *dst = body;
        *(next ? &j->emu_next_len : &j->emu_len) = len - 8;
    } else {
        char **dst = next ? &j->emu_xs_next : &j->emu_xs;

        free(*dst);
        *dst = (char *)body;
        *(next ? &j->emu_xs_next_len : &j->emu_xs_len) = len - 8;
    }
    return 0;
}

const char *ckpt_xj_emulator_why(const struct ckpt_xen_job *j)
{
    return j->hvm ? "colo starts one upstream QEMU"
                  : "the domain configuration is not HVM";
}

/* CHECKPOINT_END: the checkpoint's device-model state is the one a
 * failover starts from. */
static void commit_emulator(struct ckpt_xen_job *j)
{
    if (j->emu_next) {
        free(j->emu);
        j->emu = j->emu_next;
        j->emu_len = j->emu_next_len;
        j->emu_next = NULL;
    }
    if (j->emu_xs_next) {
        free(j->emu_xs);
        j->emu_xs = j->emu_xs_next;
        j->emu_xs_len = j->emu_xs_next_len;
        j->emu_xs_next = NULL;
    }
}

/* Returns the answer for libxc (XGR_CHECKPOINT_*). */
int ckpt_xj_restore_checkpoint(struct ckpt_xen_job *j)
{
    uint8_t *body = NULL;
    uint32_t type, len;
    int32_t code;
    char text[256];
    int rc;

    for (int i = 0; i < 16; i++) {
        free(body);
        rc = ckpt_xen_read_rec_raw(j->fd, &type, &len, &body);
        if (rc < 0) {
            colo_warn("domain %" PRIu32 ": the source is gone after "
                      "checkpoint %" PRIu64 " (%s)",
                      j->domid, j->ckpts, colo_strerror(rc));
            return j->ckpts ? XGR_CHECKPOINT_FAILOVER : XGR_CHECKPOINT_ERROR;
        }
        switch (type) {
        case XPRT_LIBXL_CHECKPOINT_END:
            free(body);
            if (j->stream == CKPT_XEN_STREAM_COLO)
                return j->ended_by_source ? XGR_CHECKPOINT_ERROR
                                          : XGR_CHECKPOINT_SUCCESS;
            if (j->hvm && !j->emu_next) {
                colo_err("domain %" PRIu32 ": an HVM checkpoint without the "
                         "device model's state",
                         j->domid);
                return XGR_CHECKPOINT_ERROR;
            }
            commit_emulator(j);
            j->ckpts++;
            if (ckpt_xen_send_ack(j->fd, j->ckpts) < 0)
                return XGR_CHECKPOINT_FAILOVER;
            if (j->ended_by_source) {
                j->quiet_libxc = true;
                return XGR_CHECKPOINT_ERROR; /* discard, do not take over */
            }
            if (j->ckpts == 1)
                (void)colo_fd_set_timeouts(j->fd, ckpt_xj_failover_ms(j), 0);
            if (j->c.checkpoint)
                j->c.checkpoint(j, j->ckpts, 0, j->c.opaque);
            return XGR_CHECKPOINT_SUCCESS;
        case XPRT_COLO_ERROR:
            if (xprt_error_decode(body, len, &code, text, sizeof(text)) >= 0 &&
                code == -COLO_ECANCELLED) {
                colo_info("domain %" PRIu32 ": the source ends protection",
                          j->domid);
                j->ended_by_source = true;
                continue;
            }
            free(body);
            colo_err("domain %" PRIu32 ": the source reports: %s", j->domid,
                     text);
            return XGR_CHECKPOINT_ERROR;
        case XPRT_LIBXL_EMULATOR_XENSTORE_DATA:
        case XPRT_LIBXL_EMULATOR_CONTEXT:
            rc = ckpt_xj_take_emulator(j, type, body, len, true);
            if (rc < 0) {
                colo_err("domain %" PRIu32 ": device-model record %" PRIu32
                         ": %s (%s)",
                         j->domid, type, colo_strerror(rc),
                         ckpt_xj_emulator_why(j));
                free(body);
                return XGR_CHECKPOINT_ERROR;
            }
            body = NULL; /* kept */
            continue;
        default:
            if (type & 0x80000000u)
                continue; /* optional: skipped */
            free(body);
            colo_err("domain %" PRIu32 ": unexpected libxl record %" PRIu32
                     " in a checkpoint",
                     j->domid, type);
            return XGR_CHECKPOINT_ERROR;
        }
    }
    free(body);
    return XGR_CHECKPOINT_ERROR;
}
