/*
 * Whole-domain Xen save/restore jobs (checkpoint/xen_job.h): the libxl
 * stream layer, the helper and the domain operations, in the order
 * libxl_stream_write.c / libxl_create.c run them.
 */
#include "checkpoint/xen_job.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <xenctrl.h>
#include <xenguest.h>

#include "checkpoint/xen_dm.h"
#include "checkpoint/xen_helper.h"
#include "libxl_rec.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "qmp/devstate.h"
#include "qmp/qmp.h"
#include "transport/colo_rec.h"
#include "transport/record.h"
#include "transport/xen_stream.h"

#define SUSPEND_TIMEOUT_MS  60000
#define PRECOPY_MAX_ROUNDS  5 /* libxc's simple_precopy_policy */
#define PRECOPY_DIRTY_FLOOR 50
#define REMUS_INTERVAL_MS   200
#define REMUS_ACK_MS        10000
#define REMUS_FAILOVER_MS   5000

enum job_kind { JOB_SAVE, JOB_RESTORE };

struct ckpt_xen_job {
    enum job_kind kind;
    struct event_base *base;
    struct ckpt_xen_dom *d;
    struct ckpt_xen_job_common c;
    struct ckpt_xen_helper *h;
    struct event *ev_done;
    int fd;
    uint32_t domid;
    bool started, finished, cancelled;
    /* save */
    struct ckpt_xen_save_params sp;
    bool suspended;
    /* restore */
    struct ckpt_xen_restore_params rp;
    char *json;
    bool created;
    uint64_t store_gfn, console_gfn;
    bool have_results;
    /* checkpointed streams */
    int stream;
    uint64_t ckpts;
    bool stop_req, target_lost, failed_over, ended_by_source;
    bool quiet_libxc; /* we ended the stream: libxc's complaints are noise */
    struct event *ev_interval;
    uint64_t last_pause_us;
    /* COLO */
    bool svm_running;  /* save: the secondary has resumed once */
    bool dom_finished; /* restore: xenstore, console, introduce done */
    uint64_t span_pfn; /* COLO restore: ckpt_xen_dom_dirty_span's page */
    enum { SVM_NONE, SVM_RESUMED, SVM_SUSPENDED } svm;
    struct event *ev_wait; /* restore: the source's CHECKPOINT_NEW */
    /* HVM: the device model */
    bool hvm;
    struct qmp_client *dm;   /* save: its QMP */
    bool dm_keep;            /* Remus: one connection for all checkpoints */
    struct qmp_saver *saver; /* ... and one memfd/fdset for the states */
    enum dm_op {
        DM_OP_NONE,
        DM_OP_SAVE,
        DM_OP_LOGDIRTY_ON,
        DM_OP_LOGDIRTY_OFF,
        DM_OP_CONT
    } dm_op;
    uint8_t *emu; /* its state (EMULATOR_CONTEXT payload) */
    size_t emu_len;
    char *emu_xs; /* its xenstore keys (EMULATOR_XENSTORE_DATA) */
    size_t emu_xs_len;
    uint8_t *emu_next; /* restore, Remus: a checkpoint's, until its END */
    size_t emu_next_len;
    char *emu_xs_next;
    size_t emu_xs_next_len;
    struct ckpt_xen_dm_start *dms; /* restore: starting it */
    /* result */
    int rc;
    char why[768];
    uint64_t t_stop_ns, downtime_ms;
};

static void job_fire(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_xen_job *j = arg;

    (void)fd;
    (void)what;
    j->finished = true;
    j->c.done(j, j->rc, j->rc < 0 ? j->why : "", j->c.opaque);
}

/* ---- HVM: the device model's QMP (save side) --------------------------- */

/* QEMU serves one QMP client: let go before anything else talks to it. */
static void dm_drop(struct ckpt_xen_job *j)
{
    qmp_saver_free(j->saver); /* before its client */
    j->saver = NULL;
    qmp_client_free(j->dm);
    j->dm = NULL;
}

/* Everything ends here: clean up per the rules in the header, then done()
 * from the loop. */
static void job_end(struct ckpt_xen_job *j, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void job_end(struct ckpt_xen_job *j, int rc, const char *fmt, ...)
{
    va_list ap;

    if (j->finished || event_pending(j->ev_done, EV_TIMEOUT, NULL))
        return;
    if (rc < 0 && fmt) {
        va_start(ap, fmt);
        vsnprintf(j->why, sizeof(j->why), fmt, ap);
        va_end(ap);
    }
    j->rc = rc;
    ckpt_xen_dom_suspend_cancel(j->d);
    if (j->ev_wait)
        event_del(j->ev_wait);
    dm_drop(j); /* a resume talks to the device model itself */
    ckpt_xen_dm_start_free(j->dms); /* kills a device model not yet up */
    j->dms = NULL;
    if (rc < 0 && j->kind == JOB_SAVE && j->suspended) {
        /* Nothing lost on failure: the guest runs on where it was. */
        if (ckpt_xen_dom_resume(j->d, j->domid, true) < 0)
            colo_err("domain %" PRIu32 ": resuming after a failed save: %s",
                     j->domid, ckpt_xen_dom_error(j->d));
        else
            colo_info("domain %" PRIu32 " resumed after the failed save",
                      j->domid);
        j->suspended = false;
    }
    if (rc < 0 && j->kind == JOB_RESTORE && j->created) {
        if (ckpt_xen_dom_destroy(j->d, j->domid) < 0)
            colo_err("domain %" PRIu32 ": destroying the half-restored "
                     "domain: %s",
                     j->domid, ckpt_xen_dom_error(j->d));
        j->created = false;
    }
    event_active(j->ev_done, EV_TIMEOUT, 0);
}

/* ---- Remus, the source: one checkpoint's end --------------------------- */

static void colo_p_new(struct ckpt_xen_job *j);

static void interval_fire(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_xen_job *j = arg;

    (void)fd;
    (void)what;
    if (j->stream == CKPT_XEN_STREAM_COLO) {
        colo_p_new(j);
        return;
    }
    ckpt_xen_helper_reply(j->h, 1); /* the next checkpoint */
}

static void remus_checkpoint(struct ckpt_xen_job *j)
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

/* ---- COLO, the source (libxl_colo_save.c's order) ----------------------
 * suspend:  suspend here; from the second checkpoint on, the secondary's
 *           SVM_SUSPENDED (then libxc reads its dirty pfns)
 * checkpoint: libxl's CHECKPOINT_END
 * postcopy: SVM_READY, resume here (fast), SVM_RESUMED: committed
 * wait_checkpoint: the interval, then CHECKPOINT_NEW; a planned end sends
 *           ERROR(-ECANCELLED) instead, so the secondary discards its copy.
 * Anything missing from the secondary: it is lost; the domain runs on. */

static unsigned colo_ack_ms(const struct ckpt_xen_job *j)
{
    unsigned ack = j->sp.ack_timeout_ms ? j->sp.ack_timeout_ms : REMUS_ACK_MS;

    /* The first: the secondary builds and introduces its domain. */
    return j->ckpts == 0 ? 10 * ack : ack;
}

static void colo_p_lost(struct ckpt_xen_job *j, const char *step,
                        const char *why)
{
    colo_warn("domain %" PRIu32 ": secondary lost at checkpoint %" PRIu64
              " (%s: %s); the domain runs on unprotected",
              j->domid, j->ckpts + 1, step, why);
    j->target_lost = true;
    j->quiet_libxc = true;
    ckpt_xen_helper_reply(j->h, 0);
}

static bool colo_p_last(const struct ckpt_xen_job *j)
{
    return j->stop_req ||
           (j->sp.max_checkpoints && j->ckpts >= j->sp.max_checkpoints);
}

static void colo_p_checkpoint(struct ckpt_xen_job *j)
{
    int rc = ckpt_xen_stream_checkpoint_end(j->fd, NULL, 0);

    if (rc < 0) {
        colo_p_lost(j, "CHECKPOINT_END", colo_strerror(rc));
        return;
    }
    ckpt_xen_helper_reply(j->h, 1);
}

static void colo_p_resume(struct ckpt_xen_job *j)
{
    char why[512] = "";
    int rc = ckpt_xen_read_state(j->fd, (int)colo_ack_ms(j),
                                 XPRT_CKPT_SVM_READY, NULL, why, sizeof(why));

    if (rc < 0) {
        colo_p_lost(j, "SVM_READY", why);
        return; /* on_done resumes the guest */
    }
    if (ckpt_xen_dom_resume(j->d, j->domid, true) < 0) {
        snprintf(j->why, sizeof(j->why), "resume after checkpoint: %s",
                 ckpt_xen_dom_error(j->d));
        ckpt_xen_helper_reply(j->h, 0);
        return;
    }
    j->suspended = false;
    j->last_pause_us = (colo_now_ns() - j->t_stop_ns) / 1000u;
    rc = ckpt_xen_read_state(j->fd, (int)colo_ack_ms(j), XPRT_CKPT_SVM_RESUMED,
                             NULL, why, sizeof(why));
    if (rc < 0) {
        colo_p_lost(j, "SVM_RESUMED", why);
        return;
    }
    j->ckpts++;
    j->svm_running = true;
    if (j->c.checkpoint)
        j->c.checkpoint(j, j->ckpts, j->last_pause_us, j->c.opaque);
    ckpt_xen_helper_reply(j->h, 1);
}

static void colo_p_end(struct ckpt_xen_job *j)
{
    (void)ckpt_xen_send_error(j->fd, -COLO_ECANCELLED,
                              "protection ends after this checkpoint");
    j->quiet_libxc = true;
    ckpt_xen_helper_reply(j->h, 0); /* libxc ends the stream: done(0) */
}

static void colo_p_wait(struct ckpt_xen_job *j)
{
    unsigned ivl = j->sp.interval_ms ? j->sp.interval_ms : REMUS_INTERVAL_MS;
    struct timeval tv = colo_ms_to_tv(ivl);

    if (colo_p_last(j)) {
        colo_p_end(j);
        return;
    }
    evtimer_add(j->ev_interval, &tv);
}

static void colo_p_new(struct ckpt_xen_job *j)
{
    int rc;

    if (colo_p_last(j)) {
        colo_p_end(j);
        return;
    }
    rc = ckpt_xen_send_state(j->fd, XPRT_CKPT_NEW);
    if (rc < 0) {
        colo_p_lost(j, "CHECKPOINT_NEW", colo_strerror(rc));
        return;
    }
    ckpt_xen_helper_reply(j->h, 1);
}

/* ---- COLO, the secondary (libxl_colo_restore.c's order) ----------------
 * checkpoint: libxl's records up to CHECKPOINT_END (restore_checkpoint)
 * postcopy: the state is in: committed. The first time the domain is
 *           finished (xenstore, console, introduce), log-dirty turned on,
 *           SVM_READY, unpause, SVM_RESUMED; later SVM_READY, full resume
 *           (the guest reconnects its PV devices), SVM_RESUMED
 * wait_checkpoint: the source's CHECKPOINT_NEW, from the loop
 * suspend:  suspend the copy, SVM_SUSPENDED (then libxc sends our dirty
 *           pfns)
 * The source gone: FAILOVER; libxc returns 0 and on_done pauses the copy
 * for the owner's tie-breaker. */

/* The standby's deadline: this much silence from the source is a failover
 * (Remus and COLO). */
static unsigned failover_ms(const struct ckpt_xen_job *j)
{
    return j->rp.failover_timeout_ms ? j->rp.failover_timeout_ms
                                     : REMUS_FAILOVER_MS;
}

static int colo_s_resume(struct ckpt_xen_job *j)
{
    bool first = !j->dom_finished;
    int rc = 0;

    j->ckpts++; /* libxc applied it */
    if (first) {
        rc = ckpt_xen_dom_finish(j->d, j->domid, &j->rp.newdom, j->store_gfn,
                                 j->console_gfn, j->json);
        /* libxc sized its dirty bitmap at the start: the page did it. */
        if (rc >= 0 &&
            ckpt_xen_dom_dirty_span_drop(j->d, j->domid, j->span_pfn) < 0)
            colo_warn("domain %" PRIu32 ": %s", j->domid,
                      ckpt_xen_dom_error(j->d));
        if (rc >= 0) {
            j->dom_finished = true;
            rc = ckpt_xen_dom_logdirty(j->d, j->domid, true);
        }
    }
    if (rc >= 0) {
        if (ckpt_xen_send_state(j->fd, XPRT_CKPT_SVM_READY) < 0)
            return XGR_CHECKPOINT_FAILOVER;
        /* A fresh domain only needs to run; later ones are made new for
         * the guest's full resume. */
        rc = first ? ckpt_xen_dom_unpause(j->d, j->domid)
                   : ckpt_xen_dom_reset_resume(j->d, j->domid, &j->rp.newdom,
                                               j->store_gfn);
    }
    if (rc < 0) {
        snprintf(j->why, sizeof(j->why), "%s", ckpt_xen_dom_error(j->d));
        return XGR_CHECKPOINT_ERROR;
    }
    j->svm = SVM_RESUMED;
    if (ckpt_xen_send_state(j->fd, XPRT_CKPT_SVM_RESUMED) < 0)
        return XGR_CHECKPOINT_FAILOVER;
    if (j->ckpts == 1)
        (void)colo_fd_set_timeouts(j->fd, failover_ms(j), 0);
    if (j->c.checkpoint)
        j->c.checkpoint(j, j->ckpts, 0, j->c.opaque);
    return XGR_CHECKPOINT_SUCCESS;
}

static void colo_s_new(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_xen_job *j = arg;
    char why[512] = "";
    int32_t code = 0;
    int rc;

    (void)fd;
    if (what & EV_TIMEOUT) {
        colo_warn("domain %" PRIu32 ": the source is silent for %u ms after "
                  "checkpoint %" PRIu64,
                  j->domid, failover_ms(j), j->ckpts);
        ckpt_xen_helper_reply(j->h, XGR_CHECKPOINT_FAILOVER);
        return;
    }
    rc = ckpt_xen_read_state(j->fd, (int)failover_ms(j), XPRT_CKPT_NEW, &code,
                             why, sizeof(why));
    if (rc == 0) {
        ckpt_xen_helper_reply(j->h, XGR_CHECKPOINT_SUCCESS);
        return;
    }
    if (rc == -COLO_EPEER_REJECTED && code == -COLO_ECANCELLED) {
        colo_info("domain %" PRIu32 ": the source ends protection", j->domid);
        j->ended_by_source = true;
        j->quiet_libxc = true;
        ckpt_xen_helper_reply(j->h, XGR_CHECKPOINT_ERROR);
        return;
    }
    if (rc == -COLO_ESTREAM_CORRUPT || rc == -COLO_EPEER_REJECTED) {
        snprintf(j->why, sizeof(j->why), "after checkpoint %" PRIu64 ": %s",
                 j->ckpts, why);
        ckpt_xen_helper_reply(j->h, XGR_CHECKPOINT_ERROR);
        return;
    }
    colo_warn("domain %" PRIu32 ": the source is gone after checkpoint "
              "%" PRIu64 " (%s)",
              j->domid, j->ckpts, why);
    ckpt_xen_helper_reply(j->h, XGR_CHECKPOINT_FAILOVER);
}

static void colo_s_wait(struct ckpt_xen_job *j)
{
    struct timeval tv = colo_ms_to_tv(failover_ms(j));

    if (!j->ev_wait)
        j->ev_wait = event_new(j->base, j->fd, EV_READ, colo_s_new, j);
    if (!j->ev_wait || event_add(j->ev_wait, &tv) < 0) {
        snprintf(j->why, sizeof(j->why), "out of memory");
        ckpt_xen_helper_reply(j->h, XGR_CHECKPOINT_ERROR);
    }
}

static void colo_s_suspended(struct ckpt_xen_dom *d, int rc, void *opaque)
{
    struct ckpt_xen_job *j = opaque;

    (void)d;
    if (rc != 0) {
        snprintf(j->why, sizeof(j->why), "suspending the secondary: %s",
                 ckpt_xen_dom_error(j->d));
        colo_err("domain %" PRIu32 ": %s", j->domid, j->why);
        ckpt_xen_helper_reply(j->h, XGR_CHECKPOINT_ERROR);
        return;
    }
    j->svm = SVM_SUSPENDED;
    ckpt_xen_helper_reply(
        j->h, ckpt_xen_send_state(j->fd, XPRT_CKPT_SVM_SUSPENDED) < 0
                  ? XGR_CHECKPOINT_FAILOVER
                  : XGR_CHECKPOINT_SUCCESS);
}

static void colo_s_suspend(struct ckpt_xen_job *j)
{
    int rc = ckpt_xen_dom_suspend_start(
        j->d, j->base, j->domid, SUSPEND_TIMEOUT_MS, colo_s_suspended, j);

    if (rc < 0) {
        snprintf(j->why, sizeof(j->why), "suspending the secondary: %s",
                 ckpt_xen_dom_error(j->d));
        ckpt_xen_helper_reply(j->h, XGR_CHECKPOINT_ERROR);
    }
}

/* libxc failed over: the copy holds the last checkpoint (suspended) or ran
 * on from it (resumed). Either way it ends paused, log-dirty off. */
static int colo_s_failover(struct ckpt_xen_job *j)
{
    int rc = ckpt_xen_dom_pause(j->d, j->domid);

    if (rc >= 0 && j->svm == SVM_SUSPENDED) /* it stays paused */
        rc = ckpt_xen_dom_reset_resume(j->d, j->domid, &j->rp.newdom,
                                       j->store_gfn);
    if (rc < 0)
        return rc;
    if (ckpt_xen_dom_logdirty(j->d, j->domid, false) < 0)
        colo_warn("domain %" PRIu32 ": %s", j->domid, ckpt_xen_dom_error(j->d));
    return 0;
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
 * error; emulator_why says why. */
static int take_emulator(struct ckpt_xen_job *j, uint32_t type, uint8_t *body,
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

static const char *emulator_why(const struct ckpt_xen_job *j)
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
static int restore_checkpoint(struct ckpt_xen_job *j)
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
                (void)colo_fd_set_timeouts(j->fd, failover_ms(j), 0);
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
            rc = take_emulator(j, type, body, len, true);
            if (rc < 0) {
                colo_err("domain %" PRIu32 ": device-model record %" PRIu32
                         ": %s (%s)",
                         j->domid, type, colo_strerror(rc), emulator_why(j));
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

/* ---- helper owner ------------------------------------------------------ */

/* why = "device model of domain N: [WHAT: ]DESC or the error's text". */
static void dm_why(struct ckpt_xen_job *j, const char *what, int rc,
                   const char *desc)
{
    snprintf(j->why, sizeof(j->why),
             "device model of domain %" PRIu32 ": %s%s%s", j->domid,
             what ? what : "", what ? ": " : "",
             desc ? desc : colo_strerror(rc));
}

/* A device-model operation answered: a plain save lets the connection go
 * (one per operation: a resume connects itself), Remus keeps it. */
static void dm_op_done(struct ckpt_xen_job *j)
{
    j->dm_op = DM_OP_NONE;
    if (!j->dm_keep)
        dm_drop(j);
}

static void dm_saved(struct qmp_client *c, int rc, uint8_t *blob, size_t len,
                     bool was_running, void *arg)
{
    struct ckpt_xen_job *j = arg;

    (void)c;
    (void)was_running;
    dm_op_done(j);
    if (rc == 0) {
        free(j->emu);
        j->emu = blob;
        j->emu_len = len;
        free(j->emu_xs);
        j->emu_xs = NULL;
        rc =
            ckpt_xen_dom_dm_xs_save(j->d, j->domid, &j->emu_xs, &j->emu_xs_len);
        if (rc < 0)
            snprintf(j->why, sizeof(j->why), "%s", ckpt_xen_dom_error(j->d));
        else
            colo_debug("domain %" PRIu32 ": device model state: %zu bytes",
                       j->domid, len);
    } else {
        dm_why(j, "saving its state", rc, NULL);
    }
    ckpt_xen_helper_reply(j->h, rc == 0 ? 1 : 0);
}

static void dm_logdirty_done(struct qmp_client *c, int rc, json_t *ret,
                             const char *desc, void *arg)
{
    struct ckpt_xen_job *j = arg;

    (void)c;
    (void)ret;
    dm_op_done(j);
    if (rc < 0)
        dm_why(j, "xen-set-global-dirty-log", rc, desc);
    ckpt_xen_helper_reply(j->h, rc < 0 ? -1 : 0);
}

/* Remus postcopy: QEMU runs again, then the vcpus (libxl__domain_resume's
 * order), and the checkpoint's pause ends. */
static void dm_cont_done(struct qmp_client *c, int rc, json_t *ret,
                         const char *desc, void *arg)
{
    struct ckpt_xen_job *j = arg;

    (void)c;
    (void)ret;
    dm_op_done(j);
    if (rc == 0)
        rc = ckpt_xen_dom_resume_vcpus(j->d, j->domid, true);
    else
        dm_why(j, "cont", rc, desc);
    if (rc < 0) {
        if (!j->why[0])
            snprintf(j->why, sizeof(j->why), "resume after checkpoint: %s",
                     ckpt_xen_dom_error(j->d));
        ckpt_xen_helper_reply(j->h, 0);
        return;
    }
    j->suspended = false;
    j->last_pause_us = (colo_now_ns() - j->t_stop_ns) / 1000u;
    ckpt_xen_helper_reply(j->h, 1);
}

/* Device-model operations: connect, issue the operation once connected;
 * its callback (dm_saved, dm_logdirty_done, dm_cont_done) answers the
 * helper. A plain save uses one connection per operation (a resume
 * connects on its own) and drops it in that callback; Remus keeps one
 * connection and one saver for all checkpoints (the hot path), and lets
 * go before anything synchronous talks to QEMU. A failure before the
 * callback answers here: the save callback and postcopy 0, switch
 * logdirty -1, as libxl does. */
static void dm_failed(struct ckpt_xen_job *j, int rc)
{
    enum dm_op op = j->dm_op;

    j->dm_op = DM_OP_NONE;
    dm_drop(j);
    dm_why(j, NULL, rc, NULL);
    ckpt_xen_helper_reply(
        j->h, op == DM_OP_LOGDIRTY_ON || op == DM_OP_LOGDIRTY_OFF ? -1 : 0);
}

static int dm_issue(struct ckpt_xen_job *j)
{
    json_t *a;
    int rc;

    if (j->dm_op == DM_OP_SAVE && j->dm_keep) {
        if (!j->saver) {
            rc = qmp_saver_new(j->dm, &j->saver);
            if (rc < 0)
                return rc;
        }
        return qmp_saver_save(j->saver, 0, dm_saved, j);
    }
    if (j->dm_op == DM_OP_SAVE) /* stop, then xen-save-devices-state */
        return qmp_devstate_save(j->dm, 0, dm_saved, j);
    if (j->dm_op == DM_OP_CONT)
        return qmp_cont(j->dm, dm_cont_done, j);
    /* switch_qemu_logdirty (libxl__domain_common_switch_qemu_logdirty) */
    a = json_pack("{s:b}", "enable", j->dm_op == DM_OP_LOGDIRTY_ON);
    rc = a ? qmp_send(j->dm, "xen-set-global-dirty-log", a, -1, 0,
                      dm_logdirty_done, j, NULL)
           : -ENOMEM;
    json_decref(a);
    return rc;
}

static void dm_connected(struct qmp_client *c, int rc, void *arg)
{
    struct ckpt_xen_job *j = arg;

    (void)c;
    if (rc == 0)
        rc = dm_issue(j);
    if (rc < 0)
        dm_failed(j, rc);
}

static void dm_run(struct ckpt_xen_job *j, enum dm_op op)
{
    struct qmp_client_opts o = {
        .greeting_timeout_ms = 5000,
        .default_cmd_timeout_ms = 10000,
        .name = "xen-dm",
    };
    char path[64];
    int rc;

    if (j->dm_keep && j->dm && qmp_client_state(j->dm) == QMP_CONNECTED) {
        j->dm_op = op;
        rc = dm_issue(j);
        if (rc < 0)
            dm_failed(j, rc);
        return;
    }
    dm_drop(j);
    j->dm_op = op;
    j->dm = qmp_client_new(j->base, &o);
    if (!j->dm) {
        dm_failed(j, -ENOMEM);
        return;
    }
    ckpt_xen_dm_qmp_path(j->domid, path, sizeof(path));
    rc = qmp_client_connect_path(j->dm, path, dm_connected, j);
    if (rc < 0)
        dm_failed(j, rc);
}

static void save_suspended(struct ckpt_xen_dom *d, int rc, void *opaque)
{
    struct ckpt_xen_job *j = opaque;

    (void)d;
    if (rc == 0) {
        j->suspended = true;
        j->t_stop_ns = colo_now_ns();
        if (j->stream == CKPT_XEN_STREAM_COLO && j->svm_running) {
            char why[512] = "";

            if (ckpt_xen_read_state(j->fd, (int)colo_ack_ms(j),
                                    XPRT_CKPT_SVM_SUSPENDED, NULL, why,
                                    sizeof(why)) < 0) {
                colo_p_lost(j, "SVM_SUSPENDED", why);
                return;
            }
        }
    } else {
        colo_err("domain %" PRIu32 ": suspend failed: %s", j->domid,
                 ckpt_xen_dom_error(j->d));
        snprintf(j->why, sizeof(j->why), "suspend failed: %s",
                 ckpt_xen_dom_error(j->d));
    }
    if (rc == 0 && j->hvm) {
        /* libxl__domain_suspend_device_model: stop QEMU, take its state;
         * the helper's answer waits for it. */
        dm_run(j, DM_OP_SAVE);
        return;
    }
    ckpt_xen_helper_reply(j->h, rc == 0 ? 1 : 0);
}

static int precopy_policy(const struct ckpt_xen_call *c)
{
    int64_t dirty = (int64_t)c->c;

    if ((dirty >= 0 && dirty < PRECOPY_DIRTY_FLOOR) ||
        c->b >= PRECOPY_MAX_ROUNDS)
        return XGS_POLICY_STOP_AND_COPY;
    return XGS_POLICY_CONTINUE_PRECOPY;
}

static void on_call(struct ckpt_xen_helper *h, const struct ckpt_xen_call *c,
                    void *opaque)
{
    struct ckpt_xen_job *j = opaque;
    int rc;

    switch (c->cb) {
    case CKPT_XEN_CB_SUSPEND:
        if (j->kind == JOB_RESTORE && j->stream == CKPT_XEN_STREAM_COLO) {
            colo_s_suspend(j);
            return;
        }
        if (j->kind != JOB_SAVE)
            break;
        rc = ckpt_xen_dom_suspend_start(j->d, j->base, j->domid,
                                        j->sp.suspend_timeout_ms
                                            ? j->sp.suspend_timeout_ms
                                            : SUSPEND_TIMEOUT_MS,
                                        save_suspended, j);
        if (rc < 0) {
            snprintf(j->why, sizeof(j->why), "suspend failed: %s",
                     ckpt_xen_dom_error(j->d));
            ckpt_xen_helper_reply(h, 0);
        }
        return;
    case CKPT_XEN_CB_PRECOPY_POLICY:
        ckpt_xen_helper_reply(h, precopy_policy(c));
        return;
    case CKPT_XEN_CB_SWITCH_LOGDIRTY:
        if (j->hvm && j->kind == JOB_SAVE) {
            dm_run(j, c->a ? DM_OP_LOGDIRTY_ON : DM_OP_LOGDIRTY_OFF);
            return;
        }
        /* PV/PVH: no device model whose log-dirty to switch. */
        ckpt_xen_helper_reply(h, 0);
        return;
    case CKPT_XEN_CB_STATIC_DATA_DONE:
        if (c->a & XGR_SDD_MISSING_CPUID)
            colo_warn("domain %" PRIu32 ": the stream has no CPUID policy "
                      "(from Xen < 4.14?); Xen's default policy applies",
                      j->domid);
        ckpt_xen_helper_reply(h, 0);
        return;
    case CKPT_XEN_CB_CHECKPOINT:
        if (j->stream == CKPT_XEN_STREAM_COLO && j->kind == JOB_SAVE) {
            colo_p_checkpoint(j);
            return;
        }
        if (j->stream == CKPT_XEN_STREAM_COLO) {
            ckpt_xen_helper_reply(h, restore_checkpoint(j));
            return;
        }
        if (j->stream == CKPT_XEN_STREAM_REMUS && j->kind == JOB_SAVE) {
            remus_checkpoint(j); /* answers later */
            return;
        }
        if (j->stream == CKPT_XEN_STREAM_REMUS) {
            ckpt_xen_helper_reply(h, restore_checkpoint(j));
            return;
        }
        /* A plain stream has no checkpoints: stop. */
        ckpt_xen_helper_reply(h, 0);
        return;
    case CKPT_XEN_CB_WAIT_CHECKPOINT:
        if (j->stream != CKPT_XEN_STREAM_COLO)
            break;
        if (j->kind == JOB_SAVE)
            colo_p_wait(j);
        else
            colo_s_wait(j);
        return;
    case CKPT_XEN_CB_POSTCOPY:
        if (j->stream == CKPT_XEN_STREAM_COLO) {
            if (j->kind == JOB_SAVE)
                colo_p_resume(j);
            else
                ckpt_xen_helper_reply(h, colo_s_resume(j));
            return;
        }
        if (j->kind == JOB_SAVE && j->stream != CKPT_XEN_STREAM_PLAIN &&
            j->suspended && j->hvm) {
            dm_run(j, DM_OP_CONT); /* then the vcpus; answers later */
            return;
        }
        if (j->kind == JOB_SAVE && j->stream != CKPT_XEN_STREAM_PLAIN &&
            j->suspended) {
            /* Remus: the checkpoint's memory is out; the guest runs on
             * while the target commits it. */
            if (ckpt_xen_dom_resume(j->d, j->domid, true) < 0) {
                snprintf(j->why, sizeof(j->why), "resume after checkpoint: %s",
                         ckpt_xen_dom_error(j->d));
                ckpt_xen_helper_reply(h, 0);
                return;
            }
            j->suspended = false;
            j->last_pause_us = (colo_now_ns() - j->t_stop_ns) / 1000u;
        }
        ckpt_xen_helper_reply(h, 1);
        return;
    }
    colo_err("domain %" PRIu32 ": unexpected %s from the helper", j->domid,
             ckpt_xen_cb_name(c->cb));
    ckpt_xen_helper_reply(h, 0);
}

static void on_log(struct ckpt_xen_helper *h, int level, const char *line,
                   void *opaque)
{
    struct ckpt_xen_job *j = opaque;

    (void)h;
    if (level >= 8 && !j->quiet_libxc) /* XTL_ERROR */
        colo_warn("domain %" PRIu32 ": libxc: %s", j->domid, line);
    else
        colo_debug("domain %" PRIu32 ": libxc: %s", j->domid, line);
}

static void on_progress(struct ckpt_xen_helper *h, uint64_t done,
                        uint64_t total, const char *what, void *opaque)
{
    struct ckpt_xen_job *j = opaque;

    (void)h;
    if (j->c.progress)
        j->c.progress(j, done, total, what, j->c.opaque);
}

static void on_results(struct ckpt_xen_helper *h, uint64_t store_gfn,
                       uint64_t console_gfn, void *opaque)
{
    struct ckpt_xen_job *j = opaque;

    (void)h;
    j->store_gfn = store_gfn;
    j->console_gfn = console_gfn;
    j->have_results = true;
}

static int read_tail(struct ckpt_xen_job *j);
static void restore_complete(struct ckpt_xen_job *j);

static void dm_started(int rc, const char *why, void *opaque)
{
    struct ckpt_xen_job *j = opaque;

    ckpt_xen_dm_start_free(j->dms);
    j->dms = NULL;
    if (rc < 0) {
        job_end(j, rc, "%s", why);
        return;
    }
    restore_complete(j);
}

static void on_done(struct ckpt_xen_helper *h, int rc,
                    const struct ckpt_xen_result *res, void *opaque)
{
    struct ckpt_xen_job *j = opaque;

    (void)h;
    dm_drop(j); /* libxc is done with it; a resume below talks to QEMU */
    if (rc < 0 && j->kind == JOB_SAVE && j->target_lost && !j->cancelled) {
        /* COLO: the secondary went away inside a checkpoint; libxc's save
         * failed on it. The guest runs on here, unprotected. */
        if (j->suspended) {
            if (ckpt_xen_dom_resume(j->d, j->domid, true) < 0) {
                job_end(j, -COLO_EXEN,
                        "the secondary is lost and resuming "
                        "failed: %s",
                        ckpt_xen_dom_error(j->d));
                return;
            }
            j->suspended = false;
        }
        job_end(j, 0, NULL);
        return;
    }
    if (rc < 0) {
        if (j->cancelled)
            job_end(j, -COLO_ECANCELLED, "cancelled");
        else if (j->ended_by_source)
            job_end(j, -COLO_ECANCELLED, "the source ended protection");
        else if (j->why[0])
            job_end(j, rc, NULL); /* keeps the reason already in why */
        else
            job_end(j, rc, "libxenguest %s failed: %s",
                    j->kind == JOB_SAVE ? "save" : "restore", res->error);
        return;
    }
    if (j->kind == JOB_SAVE && j->stream != CKPT_XEN_STREAM_PLAIN) {
        /* Checkpointing stopped (planned, or the target is lost): the
         * guest was resumed after its last checkpoint. */
        if (j->suspended) {
            ckpt_xen_dom_resume(j->d, j->domid, true);
            j->suspended = false;
        }
        job_end(j, 0, NULL);
        return;
    }
    if (j->kind == JOB_SAVE) {
        if (!j->suspended) {
            job_end(j, -COLO_EXEN,
                    "libxc finished but never suspended the "
                    "domain");
            return;
        }
        if (j->hvm && !j->emu) {
            job_end(j, -COLO_EXEN,
                    "libxc finished but the device model's state was not "
                    "taken");
            return;
        }
        rc = j->emu_xs_len ? ckpt_xen_stream_emulator_xenstore(j->fd, j->emu_xs,
                                                               j->emu_xs_len)
                           : 0;
        if (rc >= 0)
            rc = ckpt_xen_stream_end(j->fd, j->emu, j->emu_len);
        if (rc < 0) {
            job_end(j, rc, "writing the stream's END: %s", colo_strerror(rc));
            return;
        }
        if (j->sp.leave_suspended) {
            j->suspended = false; /* the caller's now */
        } else if (j->sp.keep_running) {
            rc = ckpt_xen_dom_resume(j->d, j->domid, true);
            j->suspended = false;
            if (rc < 0) {
                job_end(j, rc, "saved, but resuming failed: %s",
                        ckpt_xen_dom_error(j->d));
                return;
            }
        } else {
            rc = ckpt_xen_dom_destroy(j->d, j->domid);
            j->suspended = false;
            if (rc < 0) {
                job_end(j, rc, "saved, but destroying failed: %s",
                        ckpt_xen_dom_error(j->d));
                return;
            }
        }
        j->downtime_ms = (colo_now_ns() - j->t_stop_ns) / 1000000u;
        job_end(j, 0, NULL);
        return;
    }
    /* restore */
    if (!j->have_results) {
        j->store_gfn = res->store_gfn;
        j->console_gfn = res->console_gfn;
    }
    if (j->stream == CKPT_XEN_STREAM_PLAIN) {
        rc = read_tail(j);
        if (rc < 0)
            return; /* job_end called */
    } else {
        /* A checkpointed stream only ends when the source is gone:
         * libxc completed the last checkpoint. */
        j->failed_over = true;
        j->rp.paused = true;   /* the owner decides (tie-breaker) */
        if (j->dom_finished) { /* COLO: the copy exists and ran */
            rc = colo_s_failover(j);
            if (rc < 0) {
                job_end(j, rc, "failing over: %s", ckpt_xen_dom_error(j->d));
                return;
            }
            j->created = false; /* the user's domain now */
            job_end(j, 0, NULL);
            return;
        }
    }
    rc = ckpt_xen_dom_finish(j->d, j->domid, &j->rp.newdom, j->store_gfn,
                             j->console_gfn, j->json);
    if (rc < 0) {
        job_end(j, rc, "%s", ckpt_xen_dom_error(j->d));
        return;
    }
    if (j->hvm) {
        /* libxl's domcreate_launch_dm: the device model, with the state
         * the stream carried; the domain stays paused until it is up. */
        if (!j->emu) {
            job_end(j, -COLO_ESTREAM_CORRUPT,
                    "no device-model state for the HVM domain");
            return;
        }
        rc = ckpt_xen_dom_dm_xs_restore(j->d, j->domid, j->emu_xs,
                                        j->emu_xs_len);
        if (rc < 0) {
            job_end(j, rc, "%s", ckpt_xen_dom_error(j->d));
            return;
        }
        rc = ckpt_xen_dm_start(j->base, j->d, j->domid, &j->rp.newdom, j->emu,
                               j->emu_len, dm_started, j, &j->dms);
        if (rc < 0)
            job_end(j, rc, "starting the device model: %s", colo_strerror(rc));
        return;
    }
    restore_complete(j);
}

static void restore_complete(struct ckpt_xen_job *j)
{
    int rc;

    if (!j->rp.paused) {
        rc = ckpt_xen_dom_unpause(j->d, j->domid);
        if (rc < 0) {
            job_end(j, rc, "%s", ckpt_xen_dom_error(j->d));
            return;
        }
    }
    j->created = false; /* it is the user's domain now */
    job_end(j, 0, NULL);
}

static const struct ckpt_xen_helper_owner owner = {
    .call = on_call,
    .log = on_log,
    .progress = on_progress,
    .restore_results = on_results,
    .done = on_done,
};

/* ---- restore: the libxl layer around libxc ----------------------------- */

/* After libxc's END: libxl records up to libxl's END. PV/PVH streams have
 * none; HVM streams carry the device model's xenstore keys and state. */
static int read_tail(struct ckpt_xen_job *j)
{
    for (int n = 0; n < 64; n++) {
        uint8_t *body;
        uint32_t type = 0, len = 0;
        int rc = ckpt_xen_read_rec_raw(j->fd, &type, &len, &body);

        if (rc == -COLO_ESTREAM_TOO_BIG) {
            job_end(j, rc,
                    "libxl record type %" PRIu32 " of %" PRIu32 " bytes is "
                    "over the cap",
                    type, len);
            return rc;
        }
        if (rc < 0) {
            if (rc == -COLO_EPEER_CLOSED)
                rc = -COLO_ESTREAM_TRUNCATED;
            job_end(j, rc, "reading a libxl record: %s", colo_strerror(rc));
            return rc;
        }
        switch (type) {
        case XPRT_LIBXL_END:
            free(body);
            if (j->hvm && !j->emu) {
                job_end(j, -COLO_ESTREAM_CORRUPT,
                        "an HVM stream without the device model's state "
                        "(no EMULATOR_CONTEXT record)");
                return -COLO_ESTREAM_CORRUPT;
            }
            return 0;
        case XPRT_LIBXL_EMULATOR_XENSTORE_DATA:
        case XPRT_LIBXL_EMULATOR_CONTEXT:
            rc = take_emulator(j, type, body, len, false);
            if (rc < 0) {
                free(body);
                job_end(j, rc, "device-model record %" PRIu32 ": %s (%s)", type,
                        colo_strerror(rc), emulator_why(j));
                return rc;
            }
            continue;
        case XPRT_LIBXL_CHECKPOINT_END:
            free(body);
            job_end(j, -COLO_ESTREAM_UNSUPPORTED,
                    "a checkpointed (Remus/COLO) stream is not a save "
                    "file; use colo standby to receive it");
            return -COLO_ESTREAM_UNSUPPORTED;
        default:
            free(body);
            if (type & 0x80000000u)
                continue; /* optional: skipped */
            job_end(j, -COLO_ESTREAM_CORRUPT,
                    "unexpected libxl record type %" PRIu32
                    " after libxc's stream",
                    type);
            return -COLO_ESTREAM_CORRUPT;
        }
    }
    job_end(j, -COLO_ESTREAM_CORRUPT, "no libxl END record");
    return -COLO_ESTREAM_CORRUPT;
}

/* ---- start ------------------------------------------------------------- */

static struct ckpt_xen_job *job_new(struct event_base *base,
                                    struct ckpt_xen_dom *d,
                                    const struct ckpt_xen_job_common *c,
                                    enum job_kind kind)
{
    struct ckpt_xen_job *j = calloc(1, sizeof(*j));

    if (!j)
        return NULL;
    j->kind = kind;
    j->base = base;
    j->d = d;
    j->c = *c;
    j->fd = -1;
    j->ev_done = event_new(base, -1, 0, job_fire, j);
    j->ev_interval = evtimer_new(base, interval_fire, j);
    j->h = ckpt_xen_helper_new(base, &owner, j);
    if (!j->ev_done || !j->ev_interval || !j->h) {
        ckpt_xen_job_free(j);
        return NULL;
    }
    return j;
}

static int start_helper(struct ckpt_xen_job *j, enum ckpt_xen_op op)
{
    struct ckpt_xen_helper_params hp = {
        .exe = j->c.helper_exe,
        .exe_args = j->c.helper_args,
        .op = op,
        .stream = (enum ckpt_xen_stream)j->stream,
        .domid = j->domid,
        .io_fd = j->fd,
        /* COLO's back channel is the same socket's other direction. */
        .back_fd = j->stream == CKPT_XEN_STREAM_COLO ? j->fd : -1,
    };

    if (op == CKPT_XEN_OP_SAVE) {
        hp.save_flags = j->sp.live ? CKPT_XEN_SAVE_LIVE : 0;
    } else {
        hp.store_evtchn = j->rp.newdom.store_evtchn;
        hp.store_domid = j->rp.newdom.store_domid;
        hp.console_evtchn = j->rp.newdom.console_evtchn;
        hp.console_domid = j->rp.newdom.console_domid;
    }
    return ckpt_xen_helper_start(j->h, &hp);
}

int ckpt_xen_save_start(struct ckpt_xen_job **ret, struct event_base *base,
                        struct ckpt_xen_dom *d,
                        const struct ckpt_xen_save_params *p,
                        const struct ckpt_xen_job_common *c)
{
    struct ckpt_xen_dominfo di;
    struct ckpt_xen_job *j;
    int rc;

    *ret = NULL;
    rc = ckpt_xen_dom_info(d, p->domid, &di);
    if (rc < 0)
        return rc;
    if (di.type != CKPT_XEN_DOM_PVH && p->stream == CKPT_XEN_STREAM_COLO)
        return -ENOTSUP; /* COLO: PVH only (see xen_job.h) */
    j = job_new(base, d, c, JOB_SAVE);
    if (!j)
        return -ENOMEM;
    j->sp = *p;
    j->fd = p->fd;
    j->domid = p->domid;
    j->hvm = di.type == CKPT_XEN_DOM_HVM;
    j->dm_keep = j->hvm && p->stream == CKPT_XEN_STREAM_REMUS;
    j->stream = p->stream;
    if (j->stream != CKPT_XEN_STREAM_PLAIN)
        j->sp.live = true;
    rc = ckpt_xen_stream_begin(j->fd);
    if (rc >= 0)
        rc = start_helper(j, CKPT_XEN_OP_SAVE);
    if (rc < 0) {
        ckpt_xen_job_free(j);
        return rc;
    }
    j->started = true;
    *ret = j;
    return 0;
}

int ckpt_xen_restore_start(struct ckpt_xen_job **ret, struct event_base *base,
                           struct ckpt_xen_dom *d,
                           const struct ckpt_xen_restore_params *p,
                           const struct ckpt_xen_job_common *c)
{
    uint8_t hdr[XPRT_LIBXL_HDR_SIZE], rh[8];
    struct ckpt_xen_job *j;
    int rc;

    *ret = NULL;
    if (p->newdom.type != CKPT_XEN_DOM_PVH && p->stream == CKPT_XEN_STREAM_COLO)
        return -ENOTSUP; /* COLO: PVH only (see xen_job.h) */
    rc = colo_read_all(p->fd, hdr, sizeof(hdr));
    if (rc < 0)
        return rc == -COLO_EPEER_CLOSED ? -COLO_ESTREAM_TRUNCATED : rc;
    rc = xprt_libxl_hdr_check(hdr, NULL);
    if (rc < 0)
        return rc;
    rc = colo_read_all(p->fd, rh, sizeof(rh));
    if (rc < 0)
        return rc == -COLO_EPEER_CLOSED ? -COLO_ESTREAM_TRUNCATED : rc;
    if (colo_get_le32(rh) != XPRT_LIBXL_LIBXC_CONTEXT || colo_get_le32(rh + 4))
        return -COLO_ESTREAM_CORRUPT;
    j = job_new(base, d, c, JOB_RESTORE);
    if (!j)
        return -ENOMEM;
    j->rp = *p;
    j->fd = p->fd;
    j->stream = p->stream;
    j->hvm = p->newdom.type == CKPT_XEN_DOM_HVM;
    if (p->config_json) {
        j->json = strdup(p->config_json);
        if (!j->json) {
            ckpt_xen_job_free(j);
            return -ENOMEM;
        }
    }
    j->rp.config_json = NULL;
    rc = ckpt_xen_dom_create(d, &j->rp.newdom, &j->domid);
    if (rc < 0) {
        ckpt_xen_job_free(j);
        return rc;
    }
    j->created = true;
    if (j->stream == CKPT_XEN_STREAM_COLO)
        rc = ckpt_xen_dom_dirty_span(d, j->domid, &j->rp.newdom, &j->span_pfn);
    if (rc >= 0)
        rc = start_helper(j, CKPT_XEN_OP_RESTORE);
    if (rc < 0) {
        ckpt_xen_dom_destroy(d, j->domid);
        j->created = false;
        ckpt_xen_job_free(j);
        return rc;
    }
    j->started = true;
    *ret = j;
    return 0;
}

uint32_t ckpt_xen_job_domid(const struct ckpt_xen_job *j)
{
    return j->domid;
}

uint64_t ckpt_xen_job_downtime_ms(const struct ckpt_xen_job *j)
{
    return j->downtime_ms;
}

void ckpt_xen_job_stop(struct ckpt_xen_job *j)
{
    if (j)
        j->stop_req = true;
}

uint64_t ckpt_xen_job_checkpoints(const struct ckpt_xen_job *j)
{
    return j->ckpts;
}

bool ckpt_xen_job_target_lost(const struct ckpt_xen_job *j)
{
    return j->target_lost;
}

bool ckpt_xen_job_failed_over(const struct ckpt_xen_job *j)
{
    return j->failed_over;
}

void ckpt_xen_job_cancel(struct ckpt_xen_job *j)
{
    if (!j || !j->started || j->finished)
        return;
    j->cancelled = true;
    if (j->ev_interval)
        evtimer_del(j->ev_interval);
    if (j->ev_wait)
        event_del(j->ev_wait);
    ckpt_xen_dom_suspend_cancel(j->d);
    ckpt_xen_helper_cancel(j->h); /* on_done follows from the loop */
}

void ckpt_xen_job_free(struct ckpt_xen_job *j)
{
    if (!j)
        return;
    ckpt_xen_dom_suspend_cancel(j->d);
    ckpt_xen_helper_free(j->h);
    dm_drop(j);
    ckpt_xen_dm_start_free(j->dms);
    free(j->emu);
    free(j->emu_xs);
    free(j->emu_next);
    free(j->emu_xs_next);
    if (j->ev_done)
        event_free(j->ev_done);
    if (j->ev_interval)
        event_free(j->ev_interval);
    if (j->ev_wait)
        event_free(j->ev_wait);
    free(j->json);
    free(j);
}
