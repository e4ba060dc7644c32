/*
 * Save side of a Xen job: the HVM device model's QMP (its state,
 * log-dirty, resume), the suspend callback and colo's precopy policy.
 */
#include "job_priv.h"

/* ---- HVM: the device model's QMP (save side) --------------------------- */

/* QEMU serves one QMP client: let go before anything else talks to it. */
void ckpt_xj_dm_drop(struct ckpt_xen_job *j)
{
    qmp_saver_free(j->saver); /* before its client */
    j->saver = NULL;
    qmp_client_free(j->dm);
    j->dm = NULL;
}

/* Everything ends here: clean up per the rules in the header, then done()
 * from the loop. */

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
        ckpt_xj_dm_drop(j);
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
    ckpt_xj_dm_drop(j);
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

void ckpt_xj_dm_run(struct ckpt_xen_job *j, enum dm_op op)
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
    ckpt_xj_dm_drop(j);
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

void ckpt_xj_save_suspended(struct ckpt_xen_dom *d, int rc, void *opaque)
{
    struct ckpt_xen_job *j = opaque;

    (void)d;
    if (rc == 0) {
        j->suspended = true;
        j->t_stop_ns = colo_now_ns();
        if (j->stream == CKPT_XEN_STREAM_COLO && j->svm_running) {
            char why[512] = "";

            if (ckpt_xen_read_state(j->fd, (int)ckpt_xj_colo_ack_ms(j),
                                    XPRT_CKPT_SVM_SUSPENDED, NULL, why,
                                    sizeof(why)) < 0) {
                ckpt_xj_colo_p_lost(j, "SVM_SUSPENDED", why);
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
        ckpt_xj_dm_run(j, DM_OP_SAVE);
        return;
    }
    ckpt_xen_helper_reply(j->h, rc == 0 ? 1 : 0);
}

int ckpt_xj_precopy_policy(const struct ckpt_xen_call *c)
{
    int64_t dirty = (int64_t)c->c;

    if ((dirty >= 0 && dirty < PRECOPY_DIRTY_FLOOR) ||
        c->b >= PRECOPY_MAX_ROUNDS)
        return XGS_POLICY_STOP_AND_COPY;
    return XGS_POLICY_CONTINUE_PRECOPY;
}
