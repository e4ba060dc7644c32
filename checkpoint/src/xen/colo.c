/*
 * COLO streams of a Xen job, in libxl_colo_save.c's and
 * libxl_colo_restore.c's order: the source's checkpoint exchange and
 * the secondary's resume/suspend/failover.
 */
#include "job_priv.h"

/* ---- COLO, the source (libxl_colo_save.c's order) ----------------------
 * suspend:  suspend here; from the second checkpoint on, the secondary's
 *           SVM_SUSPENDED (then libxc reads its dirty pfns)
 * checkpoint: libxl's CHECKPOINT_END
 * postcopy: SVM_READY, resume here (fast), SVM_RESUMED: committed
 * wait_checkpoint: the interval, then CHECKPOINT_NEW; a planned end sends
 *           ERROR(-ECANCELLED) instead, so the secondary discards its copy.
 * Anything missing from the secondary: it is lost; the domain runs on. */

unsigned ckpt_xj_colo_ack_ms(const struct ckpt_xen_job *j)
{
    unsigned ack = j->sp.ack_timeout_ms ? j->sp.ack_timeout_ms : REMUS_ACK_MS;

    /* The first: the secondary builds and introduces its domain. */
    return j->ckpts == 0 ? 10 * ack : ack;
}

void ckpt_xj_colo_p_lost(struct ckpt_xen_job *j, const char *step,
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

void ckpt_xj_colo_p_checkpoint(struct ckpt_xen_job *j)
{
    int rc = ckpt_xen_stream_checkpoint_end(j->fd, NULL, 0);

    if (rc < 0) {
        ckpt_xj_colo_p_lost(j, "CHECKPOINT_END", colo_strerror(rc));
        return;
    }
    ckpt_xen_helper_reply(j->h, 1);
}

void ckpt_xj_colo_p_resume(struct ckpt_xen_job *j)
{
    char why[512] = "";
    int rc = ckpt_xen_read_state(j->fd, (int)ckpt_xj_colo_ack_ms(j),
                                 XPRT_CKPT_SVM_READY, NULL, why, sizeof(why));

    if (rc < 0) {
        ckpt_xj_colo_p_lost(j, "SVM_READY", why);
        return; /* ckpt_xj_on_done resumes the guest */
    }
    if (ckpt_xen_dom_resume(j->d, j->domid, true) < 0) {
        snprintf(j->why, sizeof(j->why), "resume after checkpoint: %s",
                 ckpt_xen_dom_error(j->d));
        ckpt_xen_helper_reply(j->h, 0);
        return;
    }
    j->suspended = false;
    j->last_pause_us = (colo_now_ns() - j->t_stop_ns) / 1000u;
    rc = ckpt_xen_read_state(j->fd, (int)ckpt_xj_colo_ack_ms(j),
                             XPRT_CKPT_SVM_RESUMED, NULL, why, sizeof(why));
    if (rc < 0) {
        ckpt_xj_colo_p_lost(j, "SVM_RESUMED", why);
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

void ckpt_xj_colo_p_wait(struct ckpt_xen_job *j)
{
    unsigned ivl = j->sp.interval_ms ? j->sp.interval_ms : REMUS_INTERVAL_MS;
    struct timeval tv = colo_ms_to_tv(ivl);

    if (colo_p_last(j)) {
        colo_p_end(j);
        return;
    }
    evtimer_add(j->ev_interval, &tv);
}

void ckpt_xj_colo_p_new(struct ckpt_xen_job *j)
{
    int rc;

    if (colo_p_last(j)) {
        colo_p_end(j);
        return;
    }
    rc = ckpt_xen_send_state(j->fd, XPRT_CKPT_NEW);
    if (rc < 0) {
        ckpt_xj_colo_p_lost(j, "CHECKPOINT_NEW", colo_strerror(rc));
        return;
    }
    ckpt_xen_helper_reply(j->h, 1);
}

/* ---- COLO, the secondary (libxl_colo_restore.c's order) ----------------
 * checkpoint: libxl's records up to CHECKPOINT_END (ckpt_xj_restore_checkpoint)
 * postcopy: the state is in: committed. The first time the domain is
 *           finished (xenstore, console, introduce), log-dirty turned on,
 *           SVM_READY, unpause, SVM_RESUMED; later SVM_READY, full resume
 *           (the guest reconnects its PV devices), SVM_RESUMED
 * wait_checkpoint: the source's CHECKPOINT_NEW, from the loop
 * suspend:  suspend the copy, SVM_SUSPENDED (then libxc sends our dirty
 *           pfns)
 * The source gone: FAILOVER; libxc returns 0 and ckpt_xj_on_done pauses the
 * copy for the owner's tie-breaker. */

/* The standby's deadline: this much silence from the source is a failover
 * (Remus and COLO). */
unsigned ckpt_xj_failover_ms(const struct ckpt_xen_job *j)
{
    return j->rp.failover_timeout_ms ? j->rp.failover_timeout_ms
                                     : REMUS_FAILOVER_MS;
}

int ckpt_xj_colo_s_resume(struct ckpt_xen_job *j)
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
        (void)colo_fd_set_timeouts(j->fd, ckpt_xj_failover_ms(j), 0);
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
                  j->domid, ckpt_xj_failover_ms(j), j->ckpts);
        ckpt_xen_helper_reply(j->h, XGR_CHECKPOINT_FAILOVER);
        return;
    }
    rc = ckpt_xen_read_state(j->fd, (int)ckpt_xj_failover_ms(j), XPRT_CKPT_NEW,
                             &code, why, sizeof(why));
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

void ckpt_xj_colo_s_wait(struct ckpt_xen_job *j)
{
    struct timeval tv = colo_ms_to_tv(ckpt_xj_failover_ms(j));

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

void ckpt_xj_colo_s_suspend(struct ckpt_xen_job *j)
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
int ckpt_xj_colo_s_failover(struct ckpt_xen_job *j)
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
