/*
 * Whole-domain Xen save/restore jobs (checkpoint/xen_job.h): the core
 * every stream kind shares: the end of a job (first error wins, the
 * guest resumed or the half-made domain destroyed), the helper's
 * callbacks dispatched to the stream's steps, start and accessors.
 * The steps are save.c, restore.c, remus.c and colo.c.
 */
#include "job_priv.h"

static void job_fire(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_xen_job *j = arg;

    (void)fd;
    (void)what;
    j->finished = true;
    j->c.done(j, j->rc, j->rc < 0 ? j->why : "", j->c.opaque);
}

void ckpt_xj_job_end(struct ckpt_xen_job *j, int rc, const char *fmt, ...)
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
    ckpt_xj_dm_drop(j); /* a resume talks to the device model itself */
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

/* ---- helper owner ------------------------------------------------------ */

/* why = "device model of domain N: [WHAT: ]DESC or the error's text". */

static void on_call(struct ckpt_xen_helper *h, const struct ckpt_xen_call *c,
                    void *opaque)
{
    struct ckpt_xen_job *j = opaque;
    int rc;

    switch (c->cb) {
    case CKPT_XEN_CB_SUSPEND:
        if (j->kind == JOB_RESTORE && j->stream == CKPT_XEN_STREAM_COLO) {
            ckpt_xj_colo_s_suspend(j);
            return;
        }
        if (j->kind != JOB_SAVE)
            break;
        rc = ckpt_xen_dom_suspend_start(j->d, j->base, j->domid,
                                        j->sp.suspend_timeout_ms
                                            ? j->sp.suspend_timeout_ms
                                            : SUSPEND_TIMEOUT_MS,
                                        ckpt_xj_save_suspended, j);
        if (rc < 0) {
            snprintf(j->why, sizeof(j->why), "suspend failed: %s",
                     ckpt_xen_dom_error(j->d));
            ckpt_xen_helper_reply(h, 0);
        }
        return;
    case CKPT_XEN_CB_PRECOPY_POLICY:
        ckpt_xen_helper_reply(h, ckpt_xj_precopy_policy(c));
        return;
    case CKPT_XEN_CB_SWITCH_LOGDIRTY:
        if (j->hvm && j->kind == JOB_SAVE) {
            ckpt_xj_dm_run(j, c->a ? DM_OP_LOGDIRTY_ON : DM_OP_LOGDIRTY_OFF);
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
            ckpt_xj_colo_p_checkpoint(j);
            return;
        }
        if (j->stream == CKPT_XEN_STREAM_COLO) {
            ckpt_xen_helper_reply(h, ckpt_xj_restore_checkpoint(j));
            return;
        }
        if (j->stream == CKPT_XEN_STREAM_REMUS && j->kind == JOB_SAVE) {
            ckpt_xj_remus_checkpoint(j); /* answers later */
            return;
        }
        if (j->stream == CKPT_XEN_STREAM_REMUS) {
            ckpt_xen_helper_reply(h, ckpt_xj_restore_checkpoint(j));
            return;
        }
        /* A plain stream has no checkpoints: stop. */
        ckpt_xen_helper_reply(h, 0);
        return;
    case CKPT_XEN_CB_WAIT_CHECKPOINT:
        if (j->stream != CKPT_XEN_STREAM_COLO)
            break;
        if (j->kind == JOB_SAVE)
            ckpt_xj_colo_p_wait(j);
        else
            ckpt_xj_colo_s_wait(j);
        return;
    case CKPT_XEN_CB_POSTCOPY:
        if (j->stream == CKPT_XEN_STREAM_COLO) {
            if (j->kind == JOB_SAVE)
                ckpt_xj_colo_p_resume(j);
            else
                ckpt_xen_helper_reply(h, ckpt_xj_colo_s_resume(j));
            return;
        }
        if (j->kind == JOB_SAVE && j->stream != CKPT_XEN_STREAM_PLAIN &&
            j->suspended && j->hvm) {
            ckpt_xj_dm_run(j, DM_OP_CONT); /* then the vcpus; answers later */
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

void ckpt_xj_on_done(struct ckpt_xen_helper *h, int rc,
                     const struct ckpt_xen_result *res, void *opaque)
{
    struct ckpt_xen_job *j = opaque;

    (void)h;
    ckpt_xj_dm_drop(
        j); /* libxc is done with it; a resume below talks to QEMU */
    if (rc < 0 && j->kind == JOB_SAVE && j->target_lost && !j->cancelled) {
        /* COLO: the secondary went away inside a checkpoint; libxc's save
         * failed on it. The guest runs on here, unprotected. */
        if (j->suspended) {
            if (ckpt_xen_dom_resume(j->d, j->domid, true) < 0) {
                ckpt_xj_job_end(j, -COLO_EXEN,
                                "the secondary is lost and resuming "
                                "failed: %s",
                                ckpt_xen_dom_error(j->d));
                return;
            }
            j->suspended = false;
        }
        ckpt_xj_job_end(j, 0, NULL);
        return;
    }
    if (rc < 0) {
        if (j->cancelled)
            ckpt_xj_job_end(j, -COLO_ECANCELLED, "cancelled");
        else if (j->ended_by_source)
            ckpt_xj_job_end(j, -COLO_ECANCELLED, "the source ended protection");
        else if (j->why[0])
            ckpt_xj_job_end(j, rc, NULL); /* keeps the reason already in why */
        else
            ckpt_xj_job_end(j, rc, "libxenguest %s failed: %s",
                            j->kind == JOB_SAVE ? "save" : "restore",
                            res->error);
        return;
    }
    if (j->kind == JOB_SAVE && j->stream != CKPT_XEN_STREAM_PLAIN) {
        /* Checkpointing stopped (planned, or the target is lost): the
         * guest was resumed after its last checkpoint. */
        if (j->suspended) {
            ckpt_xen_dom_resume(j->d, j->domid, true);
            j->suspended = false;
        }
        ckpt_xj_job_end(j, 0, NULL);
        return;
    }
    if (j->kind == JOB_SAVE) {
        if (!j->suspended) {
            ckpt_xj_job_end(j, -COLO_EXEN,
                            "libxc finished but never suspended the "
                            "domain");
            return;
        }
        if (j->hvm && !j->emu) {
            ckpt_xj_job_end(
                j, -COLO_EXEN,
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
            ckpt_xj_job_end(j, rc, "writing the stream's END: %s",
                            colo_strerror(rc));
            return;
        }
        if (j->sp.leave_suspended) {
            j->suspended = false; /* the caller's now */
        } else if (j->sp.keep_running) {
            rc = ckpt_xen_dom_resume(j->d, j->domid, true);
            j->suspended = false;
            if (rc < 0) {
                ckpt_xj_job_end(j, rc, "saved, but resuming failed: %s",
                                ckpt_xen_dom_error(j->d));
                return;
            }
        } else {
            rc = ckpt_xen_dom_destroy(j->d, j->domid);
            j->suspended = false;
            if (rc < 0) {
                ckpt_xj_job_end(j, rc, "saved, but destroying failed: %s",
                                ckpt_xen_dom_error(j->d));
                return;
            }
        }
        j->downtime_ms = (colo_now_ns() - j->t_stop_ns) / 1000000u;
        ckpt_xj_job_end(j, 0, NULL);
        return;
    }
    /* restore */
    if (!j->have_results) {
        j->store_gfn = res->store_gfn;
        j->console_gfn = res->console_gfn;
    }
    if (j->stream == CKPT_XEN_STREAM_PLAIN) {
        rc = ckpt_xj_read_tail(j);
        if (rc < 0)
            return; /* ckpt_xj_job_end called */
    } else {
        /* A checkpointed stream only ends when the source is gone:
         * libxc completed the last checkpoint. */
        j->failed_over = true;
        j->rp.paused = true;   /* the owner decides (tie-breaker) */
        if (j->dom_finished) { /* COLO: the copy exists and ran */
            rc = ckpt_xj_colo_s_failover(j);
            if (rc < 0) {
                ckpt_xj_job_end(j, rc, "failing over: %s",
                                ckpt_xen_dom_error(j->d));
                return;
            }
            j->created = false; /* the user's domain now */
            ckpt_xj_job_end(j, 0, NULL);
            return;
        }
    }
    rc = ckpt_xen_dom_finish(j->d, j->domid, &j->rp.newdom, j->store_gfn,
                             j->console_gfn, j->json);
    if (rc < 0) {
        ckpt_xj_job_end(j, rc, "%s", ckpt_xen_dom_error(j->d));
        return;
    }
    if (j->hvm) {
        /* libxl's domcreate_launch_dm: the device model, with the state
         * the stream carried; the domain stays paused until it is up. */
        if (!j->emu) {
            ckpt_xj_job_end(j, -COLO_ESTREAM_CORRUPT,
                            "no device-model state for the HVM domain");
            return;
        }
        rc = ckpt_xen_dom_dm_xs_restore(j->d, j->domid, j->emu_xs,
                                        j->emu_xs_len);
        if (rc < 0) {
            ckpt_xj_job_end(j, rc, "%s", ckpt_xen_dom_error(j->d));
            return;
        }
        rc = ckpt_xen_dm_start(j->base, j->d, j->domid, &j->rp.newdom, j->emu,
                               j->emu_len, ckpt_xj_dm_started, j, &j->dms);
        if (rc < 0)
            ckpt_xj_job_end(j, rc, "starting the device model: %s",
                            colo_strerror(rc));
        return;
    }
    ckpt_xj_restore_complete(j);
}

static const struct ckpt_xen_helper_owner owner = {
    .call = on_call,
    .log = on_log,
    .progress = on_progress,
    .restore_results = on_results,
    .done = ckpt_xj_on_done,
};

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
    j->ev_interval = evtimer_new(base, ckpt_xj_interval_fire, j);
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
    ckpt_xen_helper_cancel(j->h); /* ckpt_xj_on_done follows from the loop */
}

void ckpt_xen_job_free(struct ckpt_xen_job *j)
{
    if (!j)
        return;
    ckpt_xen_dom_suspend_cancel(j->d);
    ckpt_xen_helper_free(j->h);
    ckpt_xj_dm_drop(j);
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
