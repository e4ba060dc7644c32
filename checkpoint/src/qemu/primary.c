/*
 * The primary engine. States and transitions are documented in
 * checkpoint/primary.h; the protocol in docs/protocol.md.
 *
 * Layout of this file, in execution order of one checkpoint:
 *   start -> link up -> HELLO/VM_CONFIG -> peer HELLO
 *   ckpt_begin -> stop_done -> saved -> cont_done -> pump (send) -> END
 *   -> ack -> interval timer -> ckpt_begin ...
 * Migrate: peer HELLO -> round (capture while running, pump) -> round ...
 *   -> converged: stop -> final capture + save -> pump -> END -> ack -> done
 */
#include "checkpoint/primary.h"

#include "checkpoint/disk.h"

#include "common/error.h"
#include "common/fault.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "engine_util.h"
#include "transport/colo_rec.h"
#include "transport/link.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

/* What pump() sends next. */
enum send_step {
    SEND_BEGIN = 0,
    SEND_PAGES,
    SEND_DISK,
    SEND_DEVSTATE,
    SEND_END,
    SEND_DONE,
};

struct ckpt_primary {
    struct event_base *evb;
    bool link_steady; /* the setup heartbeat timeout is over */
    struct ckpt_primary_opts o;
    char *vm_name;
    char *vm_config;
    char *auth_key;
    struct ckpt_memory *mem;
    struct ckpt_vm *vm;
    struct ckpt_primary_cbs cbs;
    void *arg;

    enum ckpt_primary_state state;
    struct xprt_link *link;
    struct event *timer;    /* the current waiting state's deadline */
    struct event *deferred; /* done() after cancel, from the loop */
    int deferred_rc;
    bool vm_busy;    /* a VM operation is in flight */
    bool cancelling; /* cancel() waits for that operation */
    bool forced;     /* the next checkpoint was asked for (checkpoint_now) */
    bool done_called;

    /* The checkpoint in flight. */
    uint64_t n;             /* its number; 0 before the first */
    int64_t last_acked;     /* -1: none to the current peer */
    bool full_next;         /* next capture is a full sync */
    bool guest_stopped;     /* we stopped it and have not resumed it */
    bool end_sent;          /* migrate: final END queued */
    bool go_sent;           /* migrate: HANDOVER(GO) queued */
    bool peer_ready;        /* peer HELLO received */
    struct ckpt_pageset ps; /* captured pages */
    size_t send_idx;        /* next page of ps to send */
    enum send_step step;
    bool send_devstate; /* this batch ends with device state + END */
    uint8_t *devstate;
    size_t devstate_len;
    uint8_t head[XPRT_RAM_PAGES_HEAD_SIZE(CKPT_MAX_PAGES_PER_RECORD)];

    /* Disks. */
    bool begin_sent;   /* BEGIN(n) went out with the full disk sync */
    size_t disk_idx;   /* next sealed write to send */
    uint8_t *sync_buf; /* CKPT_DISK_SYNC_CHUNK */
    uint64_t t_sync_ns;
    uint64_t sync_logged;

    /* Timing. */
    uint64_t t_stop_ns;  /* stop sent */
    uint64_t t_start_ns; /* migrate start */
    uint64_t t_round_ns; /* current round started */
    uint64_t round_bytes0;
    uint64_t rate_bps; /* measured link rate (bytes/s) */

    /* Metrics. */
    struct ckpt_stats st;
    struct ckpt_window pauses;
    uint64_t bytes_sent_prev_links;

    ckpt_primary_capture_hook_fn *capture_hook;
    void *capture_hook_arg;
    int test_fault_point; /* ckpt_primary_set_fault */
    uint64_t test_fault_n;
};

static const char *const state_names[] = {
    [CKPT_P_IDLE] = "idle",           [CKPT_P_HELLO] = "hello",
    [CKPT_P_PRECOPY] = "precopy",     [CKPT_P_STOPPING] = "stopping",
    [CKPT_P_CAPTURING] = "capturing", [CKPT_P_RESUMING] = "resuming",
    [CKPT_P_SENDING] = "sending",     [CKPT_P_WAIT_ACK] = "wait-ack",
    [CKPT_P_INTERVAL] = "interval",   [CKPT_P_UNPROTECTED] = "unprotected",
    [CKPT_P_DONE] = "done",           [CKPT_P_DISK_SYNC] = "disk-sync",
};

const char *ckpt_primary_state_name(enum ckpt_primary_state s)
{
    if ((unsigned)s < sizeof(state_names) / sizeof(state_names[0]))
        return state_names[s];
    return "unknown";
}

enum ckpt_primary_state ckpt_primary_state(const struct ckpt_primary *p)
{
    return p->state;
}

/* The legal transitions of checkpoint/primary.h, as the states each state
 * may go to. Besides these, every state may go to Done (cancel, failure,
 * the end of a migrate) and be entered again (Precopy's next round). */
#define TO(s) (1u << (s))
static const unsigned legal_next[] = {
    [CKPT_P_IDLE] = TO(CKPT_P_HELLO),
    [CKPT_P_HELLO] =
        TO(CKPT_P_PRECOPY) | TO(CKPT_P_STOPPING) | TO(CKPT_P_UNPROTECTED),
    [CKPT_P_PRECOPY] = TO(CKPT_P_STOPPING) | TO(CKPT_P_UNPROTECTED),
    /* Resuming: disks, the tee was attached at pairing. */
    [CKPT_P_STOPPING] =
        TO(CKPT_P_CAPTURING) | TO(CKPT_P_RESUMING) | TO(CKPT_P_UNPROTECTED),
    [CKPT_P_CAPTURING] =
        TO(CKPT_P_RESUMING) | TO(CKPT_P_SENDING) | TO(CKPT_P_UNPROTECTED),
    /* Precopy: a soft-dirty round resumes the guest and sends. */
    [CKPT_P_RESUMING] = TO(CKPT_P_SENDING) | TO(CKPT_P_DISK_SYNC) |
                        TO(CKPT_P_PRECOPY) | TO(CKPT_P_UNPROTECTED),
    [CKPT_P_SENDING] = TO(CKPT_P_WAIT_ACK) | TO(CKPT_P_UNPROTECTED),
    [CKPT_P_WAIT_ACK] = TO(CKPT_P_INTERVAL) | TO(CKPT_P_UNPROTECTED),
    [CKPT_P_INTERVAL] = TO(CKPT_P_STOPPING) | TO(CKPT_P_UNPROTECTED),
    [CKPT_P_UNPROTECTED] = TO(CKPT_P_HELLO),
    [CKPT_P_DONE] = 0,
    [CKPT_P_DISK_SYNC] = TO(CKPT_P_STOPPING) | TO(CKPT_P_UNPROTECTED),
};

/* The only place the state changes. An illegal transition is a bug in
 * this file: it is reported and the process aborts (in every build). */
static void set_state(struct ckpt_primary *p, enum ckpt_primary_state s)
{
    if (s != p->state && s != CKPT_P_DONE && !(legal_next[p->state] & TO(s))) {
        colo_err("primary: BUG: illegal state transition %s -> %s",
                 state_names[p->state], state_names[s]);
        abort();
    }
    colo_debug("primary: %s -> %s", state_names[p->state], state_names[s]);
    p->state = s;
    p->st.state = state_names[s];
    evtimer_del(p->timer);
}

static void arm_timer(struct ckpt_primary *p, unsigned ms)
{
    struct timeval tv = colo_ms_to_tv(ms);

    evtimer_add(p->timer, &tv);
}

static bool protecting(const struct ckpt_primary *p)
{
    return p->o.mode != CKPT_MODE_MIGRATE;
}

static bool fault(struct ckpt_primary *p, int point)
{
    /* Test hook: the first time the point is reached from checkpoint n
     * on (a mid-pages point needs a checkpoint of several records). */
    if (p->test_fault_point == point && p->n >= p->test_fault_n)
        return true;
    return colo_fault_ckpt(point, (int64_t)p->n);
}

static void emit(struct ckpt_primary *p, enum ckpt_event_type t, int64_t n,
                 int rc)
{
    struct ckpt_stats st;
    struct ckpt_event ev = {.type = t, .ckpt = n, .rc = rc, .stats = &st};

    ckpt_primary_get_stats(p, &st);
    if (p->cbs.event)
        p->cbs.event(p->arg, &ev);
}

static void drop_link(struct ckpt_primary *p)
{
    struct xprt_link_stats ls;

    if (!p->link)
        return;
    xprt_link_get_stats(p->link, &ls);
    p->bytes_sent_prev_links += ls.bytes_out;
    p->st.bytes_received += ls.bytes_in;
    xprt_link_free(p->link);
    p->link = NULL;
}

/* The secondary is gone or protection ends: guest writes go on to the
 * local image only (the tee's NBD child fails at once, quorum goes on). */
static void disks_detach(struct ckpt_primary *p)
{
    if (p->o.disks)
        ckpt_disk_tee_detach(p->o.disks, ckpt_vm_qemu_client(p->vm));
}

/* Terminal: -> Done, done(rc) as the very last thing. */
static void finish(struct ckpt_primary *p, int rc)
{
    struct ckpt_stats st;

    if (p->done_called)
        return;
    p->done_called = true;
    drop_link(p);
    disks_detach(p);
    set_state(p, CKPT_P_DONE);
    ckpt_primary_get_stats(p, &st);
    if (p->cbs.done)
        p->cbs.done(p->arg, rc, &st);
}

static void start_checkpoint(struct ckpt_primary *p);
static void start_stop(struct ckpt_primary *p);
static void pump(struct ckpt_primary *p);
static void die(struct ckpt_primary *p, bool drain);

/* ------------------------------------------------------------------ */
/* VM operations: one at a time; cancel waits for the one in flight    */

static void cancel_continue(struct ckpt_primary *p);
static void resume_after_loss(struct ckpt_primary *p);

/* Every VM callback starts here. True: the callback must return now. */
static bool vm_returned(struct ckpt_primary *p)
{
    p->vm_busy = false;
    if (p->cancelling) {
        cancel_continue(p);
        return true;
    }
    return false;
}

/* A stop of the guest returned (checkpoint, migrate round, disk attach):
 * true when the caller goes on with the guest stopped; false when a cancel,
 * the stop's error or a lost secondary has taken over (p may be gone). */
static bool stop_returned(struct ckpt_primary *p, int rc)
{
    if (rc >= 0)
        p->guest_stopped = true;
    if (vm_returned(p))
        return false;
    if (rc < 0) {
        finish(p, rc);
        return false;
    }
    if (!p->link) {
        resume_after_loss(p);
        return false;
    }
    return true;
}

static void lost_cont_done(void *arg, int rc)
{
    struct ckpt_primary *p = arg;

    if (vm_returned(p))
        return;
    if (rc < 0) {
        if (!protecting(p))
            colo_err("primary: migrate failed and the guest could not be "
                     "resumed here: %s%s",
                     colo_strerror(rc),
                     p->go_sent ? " (the target was told to run it: it may "
                                  "hold its disk images and run it)"
                                : "");
        finish(p, rc);
        return;
    }
    p->guest_stopped = false;
    if (!protecting(p)) {
        colo_warn("primary: migrate failed: the guest was resumed here");
        finish(p, p->deferred_rc);
        return;
    }
    set_state(p, CKPT_P_UNPROTECTED);
    emit(p, CKPT_EV_UNPROTECTED, p->st.last_committed, p->deferred_rc);
}

static void resume_after_loss(struct ckpt_primary *p)
{
    if (p->guest_stopped) {
        int rc = p->vm->ops->cont(p->vm, lost_cont_done, p);

        if (rc < 0)
            finish(p, rc);
        else
            p->vm_busy = true;
        return;
    }
    if (!protecting(p)) {
        finish(p, p->deferred_rc);
        return;
    }
    set_state(p, CKPT_P_UNPROTECTED);
    emit(p, CKPT_EV_UNPROTECTED, p->st.last_committed, p->deferred_rc);
}

/* The link is gone (rc says why). Protect: run on alone; migrate: fail,
 * resuming the guest here: only the target's ACK (it runs the guest) ends
 * a migrate. After GO the target may have started the guest just before
 * the link broke; then, with shared disk images, the target holds their
 * locks and our cont fails (the guest stays stopped here, runs there). */
static void link_lost(struct ckpt_primary *p, int rc)
{
    colo_warn("primary: secondary lost in state %s: %s", state_names[p->state],
              colo_strerror(rc));
    drop_link(p);
    disks_detach(p);
    p->begin_sent = false;
    p->st.link_up = false;
    p->st.is_protected = false;
    p->deferred_rc = rc;
    if (!protecting(p) && p->go_sent)
        colo_warn("primary: the target was told to run the guest but did "
                  "not confirm it; resuming it here");
    if (p->vm_busy)
        return; /* the VM callback sees link == NULL and comes back */
    resume_after_loss(p);
}

/* Goodbye to the secondary: ERROR(ECANCELLED), drained, then done(). */
static void goodbye_done(struct xprt_link *l, int rc, int fd,
                         struct colo_buf *leftover, void *arg)
{
    struct ckpt_primary *p = arg;

    if (leftover)
        colo_buf_dispose(leftover);
    finish(p, -COLO_ECANCELLED);
}

static void cancel_cont_done(void *arg, int rc)
{
    struct ckpt_primary *p = arg;

    p->vm_busy = false;
    if (rc >= 0)
        p->guest_stopped = false;
    p->cancelling = false;
    cancel_continue(p);
}

static void cancel_continue(struct ckpt_primary *p)
{
    struct colo_buf b;

    if (p->guest_stopped && p->cancelling && (protecting(p) || !p->go_sent)) {
        /* Leave the guest running, then report. */
        if (p->vm->ops->cont(p->vm, cancel_cont_done, p) >= 0) {
            p->vm_busy = true;
            return;
        }
    }
    p->cancelling = false;
    set_state(p, CKPT_P_DONE);
    if (!p->link || xprt_link_state(p->link) != XPRT_LINK_UP) {
        finish(p, -COLO_ECANCELLED);
        return;
    }
    /* Tell the secondary the end is deliberate: it must not take over. */
    colo_buf_init(&b, 0);
    if (xprt_error_write(&b, -COLO_ECANCELLED, "protection ended") >= 0 &&
        xprt_link_send_raw(p->link, b.data, b.len) >= 0 &&
        xprt_link_detach_start(p->link, goodbye_done, p) >= 0) {
        colo_buf_dispose(&b);
        arm_timer(p, 2000); /* bounded: timer_cb finishes in Done */
        return;
    }
    colo_buf_dispose(&b);
    finish(p, -COLO_ECANCELLED);
}

/* ------------------------------------------------------------------ */
/* Sending                                                              */

static int send_pages(struct ckpt_primary *p)
{
    size_t k = p->ps.count - p->send_idx;
    /* head + at most one iovec per page (adjacent pages are merged) */
    struct iovec iov[1 + CKPT_MAX_PAGES_PER_RECORD];
    const void *pages[CKPT_MAX_PAGES_PER_RECORD];
    int n, rc;

    if (k > CKPT_MAX_PAGES_PER_RECORD)
        k = CKPT_MAX_PAGES_PER_RECORD;
    for (size_t i = 0; i < k; i++)
        pages[i] = ckpt_pageset_page(&p->ps, p->send_idx + i);
    n = xprt_ram_pages_iov(p->head, (uint32_t)k, CKPT_PAGE_SHIFT,
                           p->ps.pfns + p->send_idx, pages, iov);
    if (n < 0)
        return n;
    rc = xprt_link_sendv(p->link, XPRT_COLO_RAM_PAGES, iov, n);
    if (rc < 0)
        return rc;
    p->send_idx += k;
    return 0;
}

static int send_disk_write(struct ckpt_primary *p, const struct ckpt_disk_wr *w)
{
    uint8_t h[XPRT_DISK_WRITE_HEAD_SIZE];
    struct iovec iov[2] = {{h, sizeof(h)}, {(void *)w->data, w->length}};
    bool zeroes = w->flags & XPRT_DISK_WRITE_ZEROES;

    xprt_disk_write_head_encode(h, w->disk, w->flags, w->offset, w->length);
    return xprt_link_sendv(p->link, XPRT_COLO_DISK_WRITE, iov, zeroes ? 1 : 2);
}

/* Queue as much as the link takes. Returns 1 when the batch is queued. */
static int pump_some(struct ckpt_primary *p)
{
    uint8_t body[16];
    int rc = 0;

    while (p->step != SEND_DONE) {
        if (!xprt_link_may_write(p->link))
            return 0; /* writable() resumes */
        switch (p->step) {
        case SEND_BEGIN:
            xprt_ckpt_begin_encode(body, p->n,
                                   p->ps.full ? XPRT_CKPT_FLAG_FULL : 0);
            rc = xprt_link_send(p->link, XPRT_COLO_CHECKPOINT_BEGIN, body, 16);
            p->step = SEND_PAGES;
            break;
        case SEND_PAGES:
            if (p->send_idx < p->ps.count) {
                if (p->send_idx && fault(p, COLO_FAULT_MID_PAGES))
                    return -COLO_EFAULT_INJECTED;
                rc = send_pages(p);
                break;
            }
            p->step = p->send_devstate ? SEND_DISK : SEND_DONE;
            break;
        case SEND_DISK:
            if (p->o.disks &&
                p->disk_idx < ckpt_disk_tee_sealed_count(p->o.disks)) {
                struct ckpt_disk_wr w;

                if (fault(p, COLO_FAULT_MID_DISK))
                    return -COLO_EFAULT_INJECTED;
                ckpt_disk_tee_sealed(p->o.disks, p->disk_idx++, &w);
                p->st.disk_writes_last++;
                if (!(w.flags & XPRT_DISK_WRITE_ZEROES))
                    p->st.disk_bytes_last += w.length;
                rc = send_disk_write(p, &w);
                break;
            }
            p->step = SEND_DEVSTATE;
            break;
        case SEND_DEVSTATE: {
            uint8_t h[XPRT_DEVSTATE_HEAD_SIZE];
            struct iovec iov[2] = {
                {h, sizeof(h)},
                {p->devstate, p->devstate_len},
            };

            xprt_devstate_head_encode(h, XPRT_DEVSTATE_QEMU_XEN_SAVE);
            rc = xprt_link_sendv(p->link, XPRT_COLO_DEVICE_STATE, iov, 2);
            p->step = SEND_END;
            break;
        }
        case SEND_END:
            if (fault(p, COLO_FAULT_BEFORE_CKPT_END))
                return -COLO_EFAULT_INJECTED;
            xprt_ckpt_end_encode(body, p->n);
            rc = xprt_link_send(p->link, XPRT_COLO_CHECKPOINT_END, body, 16);
            p->step = SEND_DONE;
            p->end_sent = true;
            break;
        case SEND_DONE:
            break;
        }
        if (rc < 0)
            return rc;
    }
    return 1;
}

static void round_or_stop(struct ckpt_primary *p);

/* Simulated death of the primary (fault points, tests): the link goes
 * away without a goodbye; after_end: only once the bytes are out. */
static void die_detached(struct xprt_link *l, int rc, int fd,
                         struct colo_buf *leftover, void *arg)
{
    struct ckpt_primary *p = arg;

    if (leftover)
        colo_buf_dispose(leftover);
    finish(p, -COLO_EFAULT_INJECTED);
}

static void die(struct ckpt_primary *p, bool drain)
{
    colo_warn("primary: fault injected at checkpoint %llu",
              (unsigned long long)p->n);
    if (drain && p->link &&
        xprt_link_detach_start(p->link, die_detached, p) == 0) {
        set_state(p, CKPT_P_DONE);
        return;
    }
    finish(p, -COLO_EFAULT_INJECTED);
}

static void pump(struct ckpt_primary *p)
{
    int rc = pump_some(p);

    if (rc == -COLO_EFAULT_INJECTED) {
        die(p, false);
        return;
    }
    if (rc < 0) {
        link_lost(p, rc);
        return;
    }
    if (rc == 0) {
        arm_timer(p, p->o.io_timeout_ms);
        return;
    }
    /* The batch is queued. */
    if (p->state == CKPT_P_PRECOPY) {
        round_or_stop(p);
        return;
    }
    if (fault(p, COLO_FAULT_AFTER_CKPT_END)) {
        die(p, true);
        return;
    }
    set_state(p, CKPT_P_WAIT_ACK);
    arm_timer(p, p->o.ack_timeout_ms);
}

static void sync_pump(struct ckpt_primary *p);

static void link_writable(struct xprt_link *l, void *arg)
{
    struct ckpt_primary *p = arg;

    if (p->state == CKPT_P_DISK_SYNC) {
        evtimer_del(p->timer);
        sync_pump(p);
        return;
    }
    if (p->state == CKPT_P_SENDING || p->state == CKPT_P_PRECOPY) {
        evtimer_del(p->timer);
        pump(p);
    }
}

/* ------------------------------------------------------------------ */
/* One checkpoint                                                       */

static void capture_pages(struct ckpt_primary *p, int *ret_rc)
{
    struct ckpt_capture_stats cs = {0};
    unsigned flags = p->full_next ? CKPT_CAPTURE_FULL : 0;
    int rc = p->mem->ops->capture(p->mem, flags, &p->ps, &cs);

    *ret_rc = rc;
    if (rc < 0)
        return;
    p->full_next = false;
    p->send_idx = 0;
    p->st.scan_last_us = cs.scan_ns / 1000;
    p->st.copy_last_us = cs.copy_ns / 1000;
    p->st.dirty_pages_last = cs.dirty_pages;
    p->st.dirty_pages_total += cs.dirty_pages;
}

static void cont_done(void *arg, int rc)
{
    struct ckpt_primary *p = arg;
    uint64_t pause;

    if (vm_returned(p))
        return;
    if (rc < 0) {
        finish(p, rc);
        return;
    }
    p->guest_stopped = false;
    pause = (colo_now_ns() - p->t_stop_ns) / 1000;
    p->st.pause_last_us = pause;
    ckpt_window_add(&p->pauses, pause);
    if (!p->link) {
        resume_after_loss(p);
        return;
    }
    set_state(p, CKPT_P_SENDING);
    pump(p);
}

static void saved(void *arg, int rc, uint8_t *blob, size_t len)
{
    struct ckpt_primary *p = arg;

    if (vm_returned(p)) {
        free(blob);
        return;
    }
    if (rc < 0) {
        finish(p, rc);
        return;
    }
    free(p->devstate);
    p->devstate = blob;
    p->devstate_len = len;
    p->st.devstate_bytes_last = len;
    p->st.devstate_last_us = (colo_now_ns() - p->t_round_ns) / 1000;
    if (p->capture_hook)
        p->capture_hook(p->capture_hook_arg, p->n);
    if (!p->link) {
        resume_after_loss(p);
        return;
    }
    /* Migrate: BEGIN went out with the first precopy round; protect with
     * disks: with the full disk sync. */
    p->step = protecting(p) && !p->begin_sent ? SEND_BEGIN : SEND_PAGES;
    p->begin_sent = false;
    p->send_devstate = true;
    p->disk_idx = 0;
    p->st.disk_writes_last = 0;
    p->st.disk_bytes_last = 0;
    if (!protecting(p)) {
        /* Migrate: the guest stays stopped; send now. */
        set_state(p, CKPT_P_SENDING);
        pump(p);
        return;
    }
    if (p->cbs.paused) {
        rc = p->cbs.paused(p->arg, p->n);
        if (rc < 0) {
            colo_err("primary: checkpoint %llu: output commit failed: %s",
                     (unsigned long long)p->n, colo_strerror(rc));
            link_lost(p, rc); /* resumes the guest, unprotected */
            return;
        }
    }
    set_state(p, CKPT_P_RESUMING);
    rc = p->vm->ops->cont(p->vm, cont_done, p);
    if (rc < 0)
        finish(p, rc);
    else
        p->vm_busy = true;
}

static void stop_done(void *arg, int rc)
{
    struct ckpt_primary *p = arg;

    if (!stop_returned(p, rc))
        return;
    if (fault(p, COLO_FAULT_AFTER_SUSPEND)) {
        die(p, false);
        return;
    }
    /* Every guest write of the epoch has completed on every quorum child
     * (QEMU drained them before stop returned): seal them for n. */
    if (p->o.disks && ckpt_disk_tee_attached(p->o.disks) &&
        ckpt_disk_tee_cut(p->o.disks) < 0) {
        finish(p, -EPROTO);
        return;
    }
    set_state(p, CKPT_P_CAPTURING);
    capture_pages(p, &rc);
    if (rc < 0) {
        finish(p, rc);
        return;
    }
    p->t_round_ns = colo_now_ns(); /* device-state save starts */
    if (!protecting(p) && p->vm->ops->save_devices_release)
        /* The final save of a migrate: the target takes the disks. */
        rc = p->vm->ops->save_devices_release(p->vm, saved, p);
    else
        rc = p->vm->ops->save_devices(p->vm, saved, p);
    if (rc < 0)
        finish(p, rc);
    else
        p->vm_busy = true;
}

static void start_stop(struct ckpt_primary *p)
{
    int rc;

    set_state(p, CKPT_P_STOPPING);
    p->t_stop_ns = colo_now_ns();
    if (p->o.disks)
        ckpt_disk_tee_unthrottle(p->o.disks); /* stop drains the writes */
    rc = p->vm->ops->stop(p->vm, stop_done, p);
    if (rc < 0)
        finish(p, rc);
    else
        p->vm_busy = true;
}

static void start_checkpoint(struct ckpt_primary *p)
{
    p->n++;
    colo_log_set_checkpoint((int64_t)p->n);
    if (fault(p, COLO_FAULT_BEFORE_SUSPEND)) {
        die(p, false);
        return;
    }
    start_stop(p);
}

/* ------------------------------------------------------------------ */
/* Migrate: precopy rounds                                              */

static uint64_t link_bytes_out(struct ckpt_primary *p)
{
    struct xprt_link_stats ls;

    if (!p->link)
        return 0;
    xprt_link_get_stats(p->link, &ls);
    return ls.bytes_out + xprt_link_output_len(p->link);
}

/* The round's pages are captured: send them while the guest runs. */
static void round_send(struct ckpt_primary *p)
{
    p->step = p->st.rounds == 1 ? SEND_BEGIN : SEND_PAGES;
    p->send_devstate = false;
    set_state(p, CKPT_P_PRECOPY);
    pump(p);
}

static void round_cont_done(void *arg, int rc)
{
    struct ckpt_primary *p = arg;

    if (vm_returned(p))
        return;
    if (rc < 0) {
        finish(p, rc);
        return;
    }
    p->guest_stopped = false;
    p->st.pause_last_us = (colo_now_ns() - p->t_stop_ns) / 1000;
    if (!p->link) {
        resume_after_loss(p);
        return;
    }
    round_send(p);
    if (p->state == CKPT_P_PRECOPY)
        emit(p, CKPT_EV_ROUND, -1, 0);
}

/* Soft-dirty rounds: the guest is paused for reading and clearing the
 * bits and copying the pages (ckpt_mem_capture_needs_pause). */
static void round_stop_done(void *arg, int rc)
{
    struct ckpt_primary *p = arg;

    if (!stop_returned(p, rc))
        return;
    set_state(p, CKPT_P_CAPTURING);
    capture_pages(p, &rc);
    if (rc < 0) {
        /* The guest runs on here; the migration fails with rc. */
        p->deferred_rc = rc;
        resume_after_loss(p);
        return;
    }
    set_state(p, CKPT_P_RESUMING);
    rc = p->vm->ops->cont(p->vm, round_cont_done, p);
    if (rc < 0)
        finish(p, rc);
    else
        p->vm_busy = true;
}

static void precopy_round(struct ckpt_primary *p)
{
    int rc;

    p->st.rounds++;
    p->t_round_ns = colo_now_ns();
    p->round_bytes0 = link_bytes_out(p);
    if (!p->full_next && ckpt_mem_capture_needs_pause(p->mem)) {
        set_state(p, CKPT_P_STOPPING);
        p->t_stop_ns = colo_now_ns();
        rc = p->vm->ops->stop(p->vm, round_stop_done, p);
        if (rc < 0)
            finish(p, rc);
        else
            p->vm_busy = true;
        return;
    }
    capture_pages(p, &rc);
    if (rc < 0) {
        finish(p, rc);
        return;
    }
    round_send(p);
}

/* A round is queued: converged enough to stop, or another round? */
static void round_or_stop(struct ckpt_primary *p)
{
    uint64_t dt = colo_now_ns() - p->t_round_ns;
    uint64_t bytes = link_bytes_out(p) - p->round_bytes0;
    uint64_t pages = p->ps.count;
    uint64_t est_ms;

    if (dt > 1000000 && bytes > (1u << 20))
        p->rate_bps = bytes * 1000000000ull / dt;
    if (!p->rate_bps)
        p->rate_bps = 500ull << 20; /* a guess until measured */
    est_ms = pages * CKPT_PAGE_SIZE * 1000 / p->rate_bps;
    colo_info("migrate: round %u sent %llu pages (%.1f MiB/s), next "
              "estimate %llu ms",
              p->st.rounds, (unsigned long long)pages,
              (double)p->rate_bps / (1 << 20), (unsigned long long)est_ms);
    if ((p->st.rounds > 1 && est_ms <= p->o.downtime_ms) ||
        p->st.rounds >= p->o.max_rounds) {
        p->st.rounds++; /* the stop-and-copy round */
        if (fault(p, COLO_FAULT_BEFORE_SUSPEND)) {
            die(p, false);
            return;
        }
        start_stop(p);
        return;
    }
    /* Let the tail drain a little before the next scan: the next round
     * starts when the link's queue is below its low watermark. */
    precopy_round(p);
    if (p->state == CKPT_P_PRECOPY)
        emit(p, CKPT_EV_ROUND, -1, 0);
}

/* ------------------------------------------------------------------ */
/* Records from the secondary                                           */

static void on_ack(struct ckpt_primary *p, uint64_t n, int32_t status)
{
    if (p->state != CKPT_P_WAIT_ACK || n != p->n) {
        colo_err("primary: unexpected ACK(%llu) in state %s (checkpoint "
                 "%llu)",
                 (unsigned long long)n, state_names[p->state],
                 (unsigned long long)p->n);
        link_lost(p, -COLO_ESTREAM_CORRUPT);
        return;
    }
    if (!p->link_steady && p->link) {
        /* The first checkpoint is through: the configured heartbeat from
         * now on (see ckpt_link_cfg_setup). */
        ckpt_link_steady(p->link, &p->o.link);
        p->link_steady = true;
    }
    if (status != 0) {
        colo_err("primary: secondary could not commit %llu: %s",
                 (unsigned long long)n, colo_strerror(status));
        link_lost(p, status < 0 ? status : -COLO_EPEER_REJECTED);
        return;
    }
    p->last_acked = (int64_t)n;
    p->st.last_committed = (int64_t)n;
    if (p->o.disks)
        ckpt_disk_tee_release(p->o.disks);
    p->st.checkpoints++;
    if (!protecting(p)) {
        uint64_t now = colo_now_ns();

        /* The target runs the guest (after GO, or a target that does
         * not hand over and ran it at once). */
        p->st.total_us = (now - p->t_start_ns) / 1000;
        p->st.downtime_us = (now - p->t_stop_ns) / 1000;
        /* The guest stays stopped here: it runs there. */
        finish(p, 0);
        return;
    }
    p->st.is_protected = true;
    if (p->o.max_checkpoints && p->st.checkpoints >= p->o.max_checkpoints) {
        /* Tests: end protection on purpose. */
        set_state(p, CKPT_P_INTERVAL);
        emit(p, CKPT_EV_CHECKPOINT, (int64_t)n, 0);
        return; /* the timer stays off: the owner cancels */
    }
    set_state(p, CKPT_P_INTERVAL);
    arm_timer(p, p->o.interval_ms);
    emit(p, CKPT_EV_CHECKPOINT, (int64_t)n, 0);
}

/* ------------------------------------------------------------------ */
/* Disks: attach the tee at a point in time, then the full sync         */

static void sync_done(struct ckpt_primary *p)
{
    uint64_t us = (colo_now_ns() - p->t_sync_ns) / 1000;

    p->st.disk_sync_us = us;
    colo_info("disk sync: %llu MiB of images in %llu ms (%.1f MiB/s); "
              "checkpoint %llu follows",
              (unsigned long long)(p->st.disk_sync_total >> 20),
              (unsigned long long)(us / 1000),
              us ? (double)p->st.disk_sync_total / (1 << 20) * 1e6 / (double)us
                 : 0.0,
              (unsigned long long)p->n);
    if (fault(p, COLO_FAULT_BEFORE_SUSPEND)) {
        die(p, false);
        return;
    }
    start_stop(p); /* checkpoint n: its BEGIN is out (begin_sent) */
}

static void sync_pump(struct ckpt_primary *p)
{
    while (xprt_link_may_write(p->link)) {
        struct ckpt_disk_wr w;
        int rc = ckpt_disk_tee_sync_next(p->o.disks, p->sync_buf, &w);

        ckpt_disk_tee_sync_progress(p->o.disks, &p->st.disk_sync_done,
                                    &p->st.disk_sync_total);
        if (p->st.disk_sync_done >= p->sync_logged + (256u << 20)) {
            p->sync_logged = p->st.disk_sync_done;
            colo_info("disk sync: %llu of %llu MiB",
                      (unsigned long long)(p->st.disk_sync_done >> 20),
                      (unsigned long long)(p->st.disk_sync_total >> 20));
        }
        if (rc < 0) {
            colo_err("disk sync: reading the image failed: %s",
                     colo_strerror(rc));
            link_lost(p, rc);
            return;
        }
        if (rc == 0) {
            sync_done(p);
            return;
        }
        if (rc == 2) {
            arm_timer(p, 0); /* zeroes only so far: from the loop again */
            return;
        }
        if (fault(p, COLO_FAULT_MID_DISK) && p->st.disk_sync_done > w.length) {
            die(p, false);
            return;
        }
        rc = send_disk_write(p, &w);
        if (rc < 0) {
            link_lost(p, rc);
            return;
        }
    }
    arm_timer(p, p->o.io_timeout_ms);
}

static void disk_cont_done(void *arg, int rc)
{
    struct ckpt_primary *p = arg;
    struct colo_buf b;
    uint8_t body[16];

    if (vm_returned(p))
        return;
    if (rc < 0) {
        finish(p, rc);
        return;
    }
    p->guest_stopped = false;
    if (!p->link) {
        resume_after_loss(p);
        return;
    }
    p->n++;
    colo_log_set_checkpoint((int64_t)p->n);
    xprt_ckpt_begin_encode(body, p->n, XPRT_CKPT_FLAG_FULL);
    rc = xprt_link_send(p->link, XPRT_COLO_CHECKPOINT_BEGIN, body, 16);
    colo_buf_init(&b, 0);
    for (size_t i = 0; rc >= 0 && i < ckpt_disk_tee_count(p->o.disks); i++) {
        struct xprt_disk_info d;

        rc = ckpt_disk_tee_info(p->o.disks, i, &d);
        if (rc >= 0)
            rc = xprt_disk_info_write(&b, &d);
    }
    if (rc >= 0)
        rc = xprt_link_send_raw(p->link, b.data, b.len);
    colo_buf_dispose(&b);
    if (rc < 0) {
        link_lost(p, rc);
        return;
    }
    p->begin_sent = true;
    p->t_sync_ns = colo_now_ns();
    p->sync_logged = 0;
    ckpt_disk_tee_sync_reset(p->o.disks);
    set_state(p, CKPT_P_DISK_SYNC);
    sync_pump(p);
}

static void disk_attached(void *arg, int rc)
{
    struct ckpt_primary *p = arg;

    if (vm_returned(p))
        return;
    if (rc < 0) {
        colo_err("primary: attaching the disk tee failed: %s",
                 colo_strerror(rc));
        link_lost(p, rc); /* resumes the guest, unprotected */
        return;
    }
    if (!p->link) {
        resume_after_loss(p);
        return;
    }
    set_state(p, CKPT_P_RESUMING);
    rc = p->vm->ops->cont(p->vm, disk_cont_done, p);
    if (rc < 0)
        finish(p, rc);
    else
        p->vm_busy = true;
}

static void disk_stopped(void *arg, int rc)
{
    struct ckpt_primary *p = arg;
    struct qmp_client *q = ckpt_vm_qemu_client(p->vm);

    if (!stop_returned(p, rc))
        return;
    rc = q ? ckpt_disk_tee_attach(p->o.disks, q, disk_attached, p) : -ENOTSUP;
    if (rc < 0) {
        link_lost(p, rc);
        return;
    }
    p->vm_busy = true;
}

static void disk_pair_start(struct ckpt_primary *p)
{
    int rc;

    if (p->o.mode == CKPT_MODE_COLO) {
        colo_err("primary: COLO mode with replicated disks is not supported "
                 "(the secondary's running copy needs its own overlay)");
        link_lost(p, -ENOTSUP);
        return;
    }
    if (!p->sync_buf)
        p->sync_buf = malloc(CKPT_DISK_SYNC_CHUNK);
    if (!p->sync_buf) {
        link_lost(p, -ENOMEM);
        return;
    }
    /* Point in time T: attach while the guest is stopped. */
    set_state(p, CKPT_P_STOPPING);
    p->t_stop_ns = colo_now_ns();
    rc = p->vm->ops->stop(p->vm, disk_stopped, p);
    if (rc < 0)
        finish(p, rc);
    else
        p->vm_busy = true;
}

/* Migrate: the target has loaded the final device state and waits. Let
 * go of the guest: GO, then its ACK says it runs there. */
static void on_handover(struct ckpt_primary *p, const struct xprt_item *it)
{
    uint8_t body[16];
    uint64_t n;
    uint32_t step;
    int rc = xprt_handover_decode(it->body, it->length, &n, &step);

    if (rc < 0 || protecting(p) || p->state != CKPT_P_WAIT_ACK || n != p->n ||
        step != XPRT_HANDOVER_READY || p->go_sent) {
        colo_err("primary: unexpected HANDOVER in state %s",
                 state_names[p->state]);
        link_lost(p, rc < 0 ? rc : -COLO_ESTREAM_CORRUPT);
        return;
    }
    if (fault(p, COLO_FAULT_MIGRATE_CUT)) {
        link_lost(p, -COLO_EFAULT_INJECTED);
        return;
    }
    xprt_handover_encode(body, n, XPRT_HANDOVER_GO);
    rc = xprt_link_send(p->link, XPRT_COLO_HANDOVER, body, sizeof(body));
    if (rc < 0) {
        link_lost(p, rc);
        return;
    }
    p->go_sent = true;
    colo_info("migrate: the target has loaded the guest; it runs there "
              "once it confirms");
    /* The target's cont: its own deadline is the VM operation's. */
    evtimer_del(p->timer);
    arm_timer(p, p->o.io_timeout_ms);
}

static void on_peer_hello(struct ckpt_primary *p, const struct xprt_item *it)
{
    struct xprt_colo_hello h;
    int rc = xprt_colo_hello_decode(it->body, it->length, &h);

    if (rc < 0 || h.role != XPRT_ROLE_SECONDARY ||
        h.page_size != CKPT_PAGE_SIZE || h.ram_size != p->o.ram_size) {
        colo_err("primary: bad HELLO from the secondary");
        link_lost(p, rc < 0 ? rc : -COLO_EPEER_REJECTED);
        return;
    }
    p->peer_ready = true;
    p->st.link_up = true;
    p->last_acked = -1;
    p->full_next = true;
    p->mem->ops->reset_shadow(p->mem);
    if (protecting(p) && p->o.disks) {
        disk_pair_start(p);
    } else if (protecting(p)) {
        start_checkpoint(p);
    } else {
        p->t_start_ns = colo_now_ns();
        p->n = 1;
        colo_log_set_checkpoint(1);
        precopy_round(p);
    }
    if (p->state != CKPT_P_DONE)
        emit(p, CKPT_EV_PAIRED, -1, 0);
}

static void link_record(struct xprt_link *l, const struct xprt_item *it,
                        void *arg)
{
    struct ckpt_primary *p = arg;
    uint64_t n;
    int32_t status;
    char text[256];
    int rc;

    switch (it->type) {
    case XPRT_COLO_HELLO:
        if (p->state != CKPT_P_HELLO || p->peer_ready)
            break;
        on_peer_hello(p, it);
        return;
    case XPRT_COLO_ACK:
        rc = xprt_ack_decode(it->body, it->length, &n, &status);
        if (rc < 0) {
            link_lost(p, rc);
            return;
        }
        if (fault(p, COLO_FAULT_AFTER_ACK)) {
            /* The primary dies having seen the ack of n. */
            die(p, false);
            return;
        }
        on_ack(p, n, status);
        return;
    case XPRT_COLO_HANDOVER:
        on_handover(p, it);
        return;
    case XPRT_COLO_ERROR:
        rc = xprt_error_decode(it->body, it->length, &status, text,
                               sizeof(text));
        colo_err("primary: the secondary reports an error: %s (%s)",
                 rc < 0 ? "?" : text,
                 colo_strerror(status < 0 ? status : -COLO_EPEER_REJECTED));
        link_lost(p, -COLO_EPEER_REJECTED);
        return;
    default:
        break;
    }
    colo_err("primary: unexpected record %s in state %s",
             xprt_rec_type_name(XPRT_LAYER_COLO, it->type),
             state_names[p->state]);
    link_lost(p, -COLO_ESTREAM_CORRUPT);
}

static void link_error(struct xprt_link *l, int rc, void *arg)
{
    link_lost(arg, rc);
}

static void send_hello(struct ckpt_primary *p)
{
    struct xprt_colo_hello h = {0};
    struct colo_buf b;
    const char *cfg = p->vm_config ? p->vm_config : "{}";
    int rc;

    colo_buf_init(&b, 0);
    h.version = XPRT_COLO_VERSION;
    h.role = XPRT_ROLE_PRIMARY;
    h.page_size = CKPT_PAGE_SIZE;
    h.flags = p->o.mode == CKPT_MODE_COLO      ? XPRT_HELLO_FLAG_COLO
              : p->o.mode == CKPT_MODE_MIGRATE ? XPRT_HELLO_FLAG_MIGRATE
                                               : 0;
    h.ram_size = p->o.ram_size;
    snprintf(h.vm_name, sizeof(h.vm_name), "%s", p->vm_name);
    rc = xprt_colo_hello_write(&b, &h);
    if (rc >= 0)
        rc = xprt_colo_config_write(&b, cfg, strlen(cfg));
    if (rc >= 0)
        rc = xprt_link_send_raw(p->link, b.data, b.len);
    colo_buf_dispose(&b);
    if (rc < 0) {
        link_lost(p, rc);
        return;
    }
    arm_timer(p, p->o.hello_timeout_ms);
}

static void link_up(struct xprt_link *l, void *arg)
{
    struct ckpt_primary *p = arg;

    send_hello(p);
}

static const struct xprt_link_cbs link_cbs = {
    .up = link_up,
    .record = link_record,
    .writable = link_writable,
    .error = link_error,
};

/* ------------------------------------------------------------------ */
/* Timers                                                               */

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_primary *p = arg;

    switch (p->state) {
    case CKPT_P_INTERVAL:
        if (p->forced)
            p->st.forced_checkpoints++;
        p->forced = false;
        start_checkpoint(p);
        return;
    case CKPT_P_DISK_SYNC:
        if (xprt_link_may_write(p->link)) {
            sync_pump(p); /* a zero-only stretch: go on */
            return;
        }
        colo_err("primary: timeout in state %s", state_names[p->state]);
        link_lost(p, -ETIMEDOUT);
        return;
    case CKPT_P_DONE:
        /* The goodbye did not drain in time. */
        finish(p, -COLO_ECANCELLED);
        return;
    case CKPT_P_HELLO:
    case CKPT_P_SENDING:
    case CKPT_P_PRECOPY:
    case CKPT_P_WAIT_ACK:
        colo_err("primary: timeout in state %s", state_names[p->state]);
        link_lost(p, -ETIMEDOUT);
        return;
    default:
        return;
    }
}

static void deferred_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_primary *p = arg;

    if (p->cancelling && !p->vm_busy)
        cancel_continue(p);
}

/* ------------------------------------------------------------------ */
/* Public functions                                                     */

int ckpt_primary_new(struct event_base *base,
                     const struct ckpt_primary_opts *opts,
                     struct ckpt_memory *mem, struct ckpt_vm *vm,
                     const struct ckpt_primary_cbs *cbs, void *arg,
                     struct ckpt_primary **ret)
{
    struct ckpt_primary *p;

    *ret = NULL;
    if (!base || !opts || !mem || !vm || !opts->ram_size ||
        opts->ram_size != mem->ops->page_count(mem) * CKPT_PAGE_SIZE)
        return -EINVAL;
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->evb = base;
    p->o = *opts;
    p->vm_name = strdup(opts->vm_name ? opts->vm_name : "vm");
    p->vm_config = opts->vm_config ? strdup(opts->vm_config) : NULL;
    p->o.vm_name = p->vm_name;
    p->o.vm_config = p->vm_config;
    p->auth_key = opts->link.auth_key ? strdup(opts->link.auth_key) : NULL;
    p->o.link.auth_key = p->auth_key;
    if (!p->o.interval_ms)
        p->o.interval_ms = 100;
    if (!p->o.ack_timeout_ms)
        p->o.ack_timeout_ms = 5000;
    if (!p->o.downtime_ms)
        p->o.downtime_ms = 300;
    if (!p->o.max_rounds)
        p->o.max_rounds = 30;
    if (!p->o.hello_timeout_ms)
        p->o.hello_timeout_ms = 30000;
    if (!p->o.io_timeout_ms)
        p->o.io_timeout_ms = 30000;
    p->mem = mem;
    p->vm = vm;
    if (cbs)
        p->cbs = *cbs;
    p->arg = arg;
    p->last_acked = -1;
    ckpt_pageset_init(&p->ps);
    p->st.role = CKPT_ROLE_PRIMARY;
    p->st.mode = opts->mode;
    p->st.last_committed = -1;
    p->st.state = state_names[CKPT_P_IDLE];
    p->timer = evtimer_new(base, timer_cb, p);
    p->deferred = event_new(base, -1, 0, deferred_cb, p);
    if (!p->vm_name || (opts->vm_config && !p->vm_config) || !p->timer ||
        !p->deferred) {
        ckpt_primary_free(p);
        return -ENOMEM;
    }
    *ret = p;
    return 0;
}

static int start_common(struct ckpt_primary *p)
{
    if (p->state != CKPT_P_IDLE && p->state != CKPT_P_UNPROTECTED)
        return -EBUSY;
    if (!protecting(p) && p->state != CKPT_P_IDLE)
        return -EBUSY;
    return 0;
}

int ckpt_primary_start(struct ckpt_primary *p, int fd)
{
    struct xprt_link_cfg cfg;
    int rc = start_common(p);

    if (rc < 0) {
        colo_close(&fd);
        return rc;
    }
    ckpt_link_cfg_setup(&p->o.link, "to-secondary", &cfg);
    ckpt_tcp_nodelay(fd);
    rc = xprt_link_new_from_fd(p->evb, fd, true, &cfg, &link_cbs, p, &p->link);
    if (rc < 0)
        return rc;
    p->peer_ready = false;
    p->end_sent = false;
    p->go_sent = false;
    set_state(p, CKPT_P_HELLO);
    arm_timer(p, p->o.hello_timeout_ms);
    return 0;
}

int ckpt_primary_start_link(struct ckpt_primary *p, struct xprt_link *link)
{
    int rc = start_common(p);

    if (rc < 0) {
        xprt_link_free(link);
        return rc;
    }
    if (xprt_link_state(link) != XPRT_LINK_UP) {
        xprt_link_free(link);
        return -ENOTCONN;
    }
    p->link = link;
    xprt_link_set_cbs(link, &link_cbs, p);
    p->peer_ready = false;
    p->end_sent = false;
    p->go_sent = false;
    set_state(p, CKPT_P_HELLO);
    send_hello(p);
    return p->state == CKPT_P_HELLO ? 0 : -ENOTCONN;
}

int ckpt_primary_checkpoint_now(struct ckpt_primary *p)
{
    if (p->state != CKPT_P_INTERVAL)
        return 0;
    evtimer_del(p->timer);
    p->forced = true;
    /* From the loop, not from inside this call. */
    arm_timer(p, 0);
    return 0;
}

void ckpt_primary_cancel(struct ckpt_primary *p)
{
    if (p->state == CKPT_P_DONE || p->cancelling)
        return;
    p->cancelling = true;
    if (p->vm_busy)
        return; /* the VM callback continues the cancel */
    /* From the loop, never from inside this call. */
    event_active(p->deferred, 0, 0);
}

void ckpt_primary_free(struct ckpt_primary *p)
{
    if (!p)
        return;
    if (p->vm_busy)
        p->vm->ops->cancel(p->vm);
    if (p->timer)
        event_free(p->timer);
    if (p->deferred)
        event_free(p->deferred);
    xprt_link_free(p->link);
    ckpt_pageset_dispose(&p->ps);
    if (p->o.disks) {
        ckpt_disk_tee_abandon(p->o.disks);
        ckpt_disk_tee_detach(p->o.disks, ckpt_vm_qemu_client(p->vm));
    }
    free(p->sync_buf);
    free(p->devstate);
    free(p->vm_name);
    free(p->vm_config);
    free(p->auth_key);
    free(p);
}

void ckpt_primary_get_stats(const struct ckpt_primary *p,
                            struct ckpt_stats *ret)
{
    *ret = p->st;
    ret->dirty_method = ckpt_mem_dirty_method(p->mem);
    ret->pause_p50_us = ckpt_window_pct(&p->pauses, 50);
    ret->pause_p99_us = ckpt_window_pct(&p->pauses, 99);
    ret->bytes_sent = p->bytes_sent_prev_links;
    ret->link_up = p->link && xprt_link_state(p->link) == XPRT_LINK_UP;
    if (p->link) {
        struct xprt_link_stats ls;

        xprt_link_get_stats(p->link, &ls);
        ret->bytes_sent += ls.bytes_out;
        ret->bytes_received += ls.bytes_in;
    }
}

const uint8_t *ckpt_primary_last_devstate(const struct ckpt_primary *p,
                                          size_t *ret_len)
{
    *ret_len = p->devstate_len;
    return p->devstate;
}

void ckpt_primary_set_capture_hook(struct ckpt_primary *p,
                                   ckpt_primary_capture_hook_fn *fn, void *arg)
{
    p->capture_hook = fn;
    p->capture_hook_arg = arg;
}

void ckpt_primary_set_fault(struct ckpt_primary *p, int point, uint64_t n)
{
    p->test_fault_point = point;
    p->test_fault_n = n;
}
