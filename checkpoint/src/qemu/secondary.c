/*
 * The secondary engine. States and transitions are documented in
 * checkpoint/secondary.h; the protocol in docs/protocol.md.
 *
 * Execution order: start -> link up -> HELLO + VM_CONFIG -> launch() ->
 * launch_done -> our HELLO -> { BEGIN(n) RAM_PAGES* DEVICE_STATE END(n) ->
 * commit -> ACK(n) }* ; primary gone -> may_takeover -> load + cont.
 */
#include "checkpoint/secondary.h"

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

/* Cap on one device-state blob from the peer. */
#define CKPT_DEVSTATE_MAX (64u << 20)

struct ckpt_secondary {
    struct event_base *evb;
    bool link_steady; /* the setup heartbeat timeout is over */
    struct ckpt_secondary_opts o;
    char *want_name;
    char *auth_key;
    struct ckpt_secondary_cbs cbs;
    void *arg;

    enum ckpt_secondary_state state;
    struct xprt_link *link;
    struct xprt_link *closing_link; /* draining a last ERROR, then freed */
    struct event *timer;
    struct event *deferred; /* deferred transitions (see deferred_cb) */
    int deferred_rc;
    bool takeover_pending; /* takeover_answer(true) to act on */
    bool done_called;
    bool vm_busy;
    /* Migrate's handover (docs/protocol.md 5.4): the final device state
     * is loaded paused, READY sent; the guest runs only after GO. */
    bool handover;    /* the VM offers a paused load */
    bool go_received; /* GO arrived: run the guest whatever happens */

    /* From the primary. */
    bool have_hello;
    struct xprt_colo_hello hello;
    char *vm_config;
    enum ckpt_mode mode;

    /* Ours. */
    struct ckpt_vm *vm;      /* the QEMU on the RAM file (COLO: running) */
    struct ckpt_vm *standby; /* COLO: the next one, started -incoming */
    bool standby_launching;
    bool commit_waits_standby; /* COLO: END(n) arrived, no standby yet */
    int lost_rc; /* COLO: link lost during a commit (0: not lost) */
    char *ram_path;
    struct ckpt_memory *mem;

    /* The checkpoint being received. */
    bool in_ckpt;
    uint64_t cur_n;
    uint32_t cur_flags;
    uint8_t *dev_staged;
    size_t dev_staged_len;
    uint64_t pages_cur;
    uint64_t pfns[CKPT_MAX_PAGES_PER_RECORD];

    /* The last committed checkpoint. */
    uint64_t next_n; /* expected next BEGIN */
    uint8_t *dev_committed;
    size_t dev_committed_len;

    struct ckpt_stats st;
    uint64_t t_last_rx_ns;
};

static const char *const state_names[] = {
    [CKPT_S_IDLE] = "idle",
    [CKPT_S_HELLO] = "hello",
    [CKPT_S_LAUNCHING] = "launching",
    [CKPT_S_RECEIVING] = "receiving",
    [CKPT_S_COMMITTING] = "committing",
    [CKPT_S_LOST] = "primary-lost",
    [CKPT_S_RESUMING] = "resuming",
    [CKPT_S_HANDOVER] = "handover",
    [CKPT_S_RUNNING] = "running",
    [CKPT_S_DONE] = "done",
};

const char *ckpt_secondary_state_name(enum ckpt_secondary_state st)
{
    if ((unsigned)st < sizeof(state_names) / sizeof(state_names[0]))
        return state_names[st];
    return "unknown";
}

void ckpt_secondary_set_disks(struct ckpt_secondary *s,
                              struct ckpt_disk_stage *d)
{
    s->o.disks = d;
}

enum ckpt_secondary_state ckpt_secondary_state(const struct ckpt_secondary *s)
{
    return s->state;
}

/* The legal transitions of checkpoint/secondary.h, as the states each
 * state may go to. Besides these, every state may go to Done (cancel,
 * failure, a Xen hand-over) and be entered again (Lost on an explicit
 * failover). */
#define TO(st) (1u << (st))
static const unsigned legal_next[] = {
    [CKPT_S_IDLE] = TO(CKPT_S_HELLO),
    [CKPT_S_HELLO] = TO(CKPT_S_LAUNCHING),
    [CKPT_S_LAUNCHING] = TO(CKPT_S_RECEIVING),
    [CKPT_S_RECEIVING] = TO(CKPT_S_COMMITTING) | TO(CKPT_S_LOST),
    [CKPT_S_COMMITTING] = TO(CKPT_S_RECEIVING) | TO(CKPT_S_RESUMING),
    [CKPT_S_LOST] = TO(CKPT_S_RESUMING),
    [CKPT_S_RESUMING] = TO(CKPT_S_RUNNING) | TO(CKPT_S_HANDOVER),
    [CKPT_S_HANDOVER] = TO(CKPT_S_RESUMING),
    [CKPT_S_RUNNING] = 0,
    [CKPT_S_DONE] = 0,
};

/* The only place the state changes. An illegal transition is a bug in
 * this file: it is reported and the process aborts (in every build). */
static void set_state(struct ckpt_secondary *s, enum ckpt_secondary_state st)
{
    if (st != s->state && st != CKPT_S_DONE &&
        !(legal_next[s->state] & TO(st))) {
        colo_err("secondary: BUG: illegal state transition %s -> %s",
                 state_names[s->state], state_names[st]);
        abort();
    }
    colo_debug("secondary: %s -> %s", state_names[s->state], state_names[st]);
    s->state = st;
    s->st.state = state_names[st];
    evtimer_del(s->timer);
}

static void arm_timer(struct ckpt_secondary *s, unsigned ms)
{
    struct timeval tv = colo_ms_to_tv(ms);

    evtimer_add(s->timer, &tv);
}

/* After the first commit: the configured heartbeat (ckpt_link_cfg_setup). */
static void steady(struct ckpt_secondary *s)
{
    if (!s->link_steady && s->link) {
        ckpt_link_steady(s->link, &s->o.link);
        s->link_steady = true;
    }
}

static void emit(struct ckpt_secondary *s, enum ckpt_event_type t, int64_t n,
                 int rc)
{
    struct ckpt_stats st;
    struct ckpt_event ev = {.type = t, .ckpt = n, .rc = rc, .stats = &st};

    ckpt_secondary_get_stats(s, &st);
    if (s->cbs.event)
        s->cbs.event(s->arg, &ev);
}

static void closing_done(struct xprt_link *l, int rc, int fd,
                         struct colo_buf *leftover, void *arg)
{
    struct ckpt_secondary *s = arg;

    if (leftover)
        colo_buf_dispose(leftover);
    xprt_link_free(l);
    s->closing_link = NULL;
}

/* Drop the link; queued output (an ERROR for the peer) is drained first
 * when the link is still up. */
static void drop_link(struct ckpt_secondary *s)
{
    struct xprt_link_stats ls;

    if (!s->link)
        return;
    xprt_link_get_stats(s->link, &ls);
    s->st.bytes_received += ls.bytes_in;
    s->st.bytes_sent += ls.bytes_out;
    if (!s->closing_link && xprt_link_state(s->link) == XPRT_LINK_UP &&
        xprt_link_output_len(s->link) > 0 &&
        xprt_link_detach_start(s->link, closing_done, s) == 0)
        s->closing_link = s->link;
    else
        xprt_link_free(s->link);
    s->link = NULL;
    s->st.link_up = false;
}

static void drop_staged(struct ckpt_secondary *s)
{
    if (s->mem)
        s->mem->ops->discard(s->mem);
    free(s->dev_staged);
    s->dev_staged = NULL;
    s->dev_staged_len = 0;
    s->in_ckpt = false;
    s->pages_cur = 0;
    if (s->o.disks)
        ckpt_disk_stage_drop(s->o.disks);
}

static void finish(struct ckpt_secondary *s, enum ckpt_secondary_state st,
                   int rc)
{
    struct ckpt_stats stats;

    if (s->done_called)
        return;
    s->done_called = true;
    drop_link(s);
    if (st != CKPT_S_RUNNING)
        drop_staged(s);
    set_state(s, st);
    ckpt_secondary_get_stats(s, &stats);
    if (s->cbs.done)
        s->cbs.done(s->arg, rc, &stats);
}

static int colo_commit_start(struct ckpt_secondary *s);
static void colo_commit_continue(struct ckpt_secondary *s);
static void primary_lost(struct ckpt_secondary *s, int rc);

static void send_error(struct ckpt_secondary *s, int code, const char *text)
{
    struct colo_buf b;

    if (!s->link || xprt_link_state(s->link) != XPRT_LINK_UP)
        return;
    colo_buf_init(&b, 0);
    if (xprt_error_write(&b, code, text) >= 0)
        xprt_link_send_raw(s->link, b.data, b.len);
    colo_buf_dispose(&b);
}

/* ------------------------------------------------------------------ */
/* Takeover                                                             */

static void resumed(void *arg, int rc)
{
    struct ckpt_secondary *s = arg;

    s->vm_busy = false;
    if (rc < 0) {
        colo_err("secondary: resuming the guest from checkpoint %lld "
                 "failed: %s",
                 (long long)s->st.last_committed, colo_strerror(rc));
        /* Migrate: the source resumes it (ERROR, or EOF). */
        send_error(s, rc, "the target could not run the guest");
        finish(s, CKPT_S_DONE, rc);
        return;
    }
    if (s->mode == CKPT_MODE_MIGRATE && s->link) {
        /* Migrate: the destination runs; tell the source (ACK). */
        uint8_t body[16];

        xprt_ack_encode(body, (uint64_t)s->st.last_committed, 0);
        xprt_link_send(s->link, XPRT_COLO_ACK, body, 16);
        /* Keep the link until the source closes it (it reads the ACK). */
        s->done_called = true;
        set_state(s, CKPT_S_RUNNING);
        {
            struct ckpt_stats stats;

            ckpt_secondary_get_stats(s, &stats);
            if (s->cbs.done)
                s->cbs.done(s->arg, 0, &stats);
        }
        return;
    }
    finish(s, CKPT_S_RUNNING, 0);
}

/* Migrate: the final device state is loaded, the guest paused: READY,
 * then wait for GO (or the source's end: then the guest never runs
 * here). */
static void handover_loaded(void *arg, int rc)
{
    struct ckpt_secondary *s = arg;
    uint8_t body[16];

    s->vm_busy = false;
    if (rc >= 0 && !s->link)
        rc = s->lost_rc ? s->lost_rc : -ENOTCONN;
    if (rc >= 0 && colo_fault(COLO_FAULT_MIGRATE_LOADED))
        rc = -COLO_EFAULT_INJECTED;
    if (rc >= 0) {
        xprt_handover_encode(body, (uint64_t)s->st.last_committed,
                             XPRT_HANDOVER_READY);
        rc = xprt_link_send(s->link, XPRT_COLO_HANDOVER, body, sizeof(body));
    }
    if (rc < 0) {
        colo_err("secondary: the guest does not run here: %s",
                 colo_strerror(rc));
        send_error(s, rc, "the target could not load the guest");
        finish(s, CKPT_S_DONE, rc);
        return;
    }
    set_state(s, CKPT_S_HANDOVER);
    arm_timer(s, s->o.launch_timeout_ms);
}

static int on_go(struct ckpt_secondary *s, const struct xprt_item *it)
{
    uint64_t n;
    uint32_t step;
    int rc = xprt_handover_decode(it->body, it->length, &n, &step);

    if (rc < 0)
        return rc;
    if (step != XPRT_HANDOVER_GO || n != (uint64_t)s->st.last_committed)
        return -COLO_ESTREAM_CORRUPT;
    s->go_received = true;
    set_state(s, CKPT_S_RESUMING);
    if (colo_fault(COLO_FAULT_MIGRATE_CONT)) {
        colo_err("secondary: fault point %d: cont refused",
                 COLO_FAULT_MIGRATE_CONT);
        send_error(s, -COLO_EFAULT_INJECTED, "cont refused");
        finish(s, CKPT_S_DONE, -COLO_EFAULT_INJECTED);
        return 1;
    }
    rc = s->vm->ops->cont(s->vm, resumed, s);
    if (rc < 0)
        return rc;
    s->vm_busy = true;
    return 0;
}

static void start_resume(struct ckpt_secondary *s)
{
    int rc;

    if (s->mode != CKPT_MODE_MIGRATE)
        drop_link(s);
    drop_staged(s);
    if (colo_fault(COLO_FAULT_FAILOVER)) {
        finish(s, CKPT_S_DONE, -COLO_EFAULT_INJECTED);
        return;
    }
    if (s->mode == CKPT_MODE_COLO) {
        /* The secondary's guest runs already (since the last commit):
         * it simply goes on; the standby is not needed any more. */
        ckpt_vm_free(s->standby);
        s->standby = NULL;
        colo_info("secondary: COLO takeover: the guest running since "
                  "checkpoint %lld goes on",
                  (long long)s->st.last_committed);
        set_state(s, CKPT_S_RESUMING);
        emit(s, CKPT_EV_TAKEOVER, s->st.last_committed, 0);
        if (s->state == CKPT_S_RESUMING)
            finish(s, CKPT_S_RUNNING, 0);
        return;
    }
    set_state(s, CKPT_S_RESUMING);
    colo_info("secondary: resuming the guest from checkpoint %lld",
              (long long)s->st.last_committed);
    if (colo_fault(COLO_FAULT_DEVICE_LOAD)) {
        finish(s, CKPT_S_DONE, -COLO_EFAULT_INJECTED);
        return;
    }
    if (s->mode == CKPT_MODE_MIGRATE && s->vm->ops->load_devices) {
        s->handover = true;
        rc = s->vm->ops->load_devices(s->vm, s->dev_committed,
                                      s->dev_committed_len, handover_loaded, s);
    } else {
        rc = s->vm->ops->load_devices_and_cont(
            s->vm, s->dev_committed, s->dev_committed_len, resumed, s);
    }
    if (rc < 0) {
        send_error(s, rc, "the target could not load the guest");
        finish(s, CKPT_S_DONE, rc);
        return;
    }
    s->vm_busy = true;
    if (s->mode != CKPT_MODE_MIGRATE)
        emit(s, CKPT_EV_TAKEOVER, s->st.last_committed, 0);
}

/* The primary is gone (EOF, heartbeats, ERROR, bad record). */
static void primary_lost(struct ckpt_secondary *s, int rc)
{
    colo_warn("secondary: primary lost in state %s: %s", state_names[s->state],
              colo_strerror(rc));
    drop_link(s);
    if (s->state == CKPT_S_COMMITTING) {
        /* END(n) arrived whole: finish committing n first. */
        s->lost_rc = rc;
        return;
    }
    if (s->in_ckpt)
        colo_info("secondary: dropping half-received checkpoint %llu",
                  (unsigned long long)s->cur_n);
    drop_staged(s);
    if (s->state == CKPT_S_RESUMING && s->handover && !s->go_received) {
        /* Migrate: the load is in flight; the guest will not run here. */
        s->lost_rc = rc;
        return;
    }
    if (s->state == CKPT_S_RUNNING || s->state == CKPT_S_RESUMING ||
        s->state == CKPT_S_DONE)
        return;
    if (s->st.last_committed < 0 || s->mode == CKPT_MODE_MIGRATE) {
        /* Nothing to resume. */
        finish(s, CKPT_S_DONE, rc);
        return;
    }
    set_state(s, CKPT_S_LOST);
    if (s->cbs.may_takeover) {
        int arc = s->cbs.may_takeover(s->arg, s, rc);

        if (arc < 0)
            colo_warn("secondary: may_takeover failed (%s); waiting for "
                      "an explicit failover",
                      colo_strerror(arc));
    } else {
        colo_warn("secondary: no tie-breaker; waiting for an explicit "
                  "failover");
    }
    if (s->state == CKPT_S_LOST)
        emit(s, CKPT_EV_PRIMARY_LOST, s->st.last_committed, rc);
}

/* ------------------------------------------------------------------ */
/* COLO mode: the secondary's guest runs between checkpoints            */
/*
 * At END(n): stop the running QEMU, put back the pages its guest wrote
 * (revert, from the committed shadow), apply n, kill that QEMU, load n's
 * device state into the standby QEMU (started earlier on the same RAM file
 * with -incoming defer: QEMU 7.2 loads device state once per process) and
 * resume it; ACK(n); ask for the next standby. The first checkpoint has no
 * running QEMU yet: the launched one is loaded and resumed directly.
 */

static void colo_fail(struct ckpt_secondary *s, int rc)
{
    colo_err("secondary: COLO commit failed: %s", colo_strerror(rc));
    send_error(s, rc, "secondary COLO commit failed");
    finish(s, CKPT_S_DONE, rc);
}

static int commit_memory(struct ckpt_secondary *s)
{
    int rc = s->mem->ops->commit(s->mem, s->cur_n,
                                 s->cur_flags & XPRT_CKPT_FLAG_FULL);

    if (rc < 0)
        return rc;
    free(s->dev_committed);
    s->dev_committed = s->dev_staged;
    s->dev_committed_len = s->dev_staged_len;
    s->dev_staged = NULL;
    s->dev_staged_len = 0;
    s->in_ckpt = false;
    s->st.last_committed = (int64_t)s->cur_n;
    s->st.checkpoints++;
    s->st.dirty_pages_last = s->pages_cur;
    s->st.dirty_pages_total += s->pages_cur;
    s->st.devstate_bytes_last = s->dev_committed_len;
    s->next_n = s->cur_n + 1;
    return 0;
}

static void request_standby(struct ckpt_secondary *s)
{
    struct ckpt_launch_req req = {0};
    int rc;

    req.vm_name = s->hello.vm_name;
    req.vm_config = s->vm_config;
    req.ram_size = s->hello.ram_size;
    req.mode = s->mode;
    req.standby = true;
    req.ram_path = s->ram_path;
    s->standby_launching = true;
    rc = s->cbs.launch(s->arg, s, &req);
    if (rc < 0) {
        s->standby_launching = false;
        colo_fail(s, rc);
    }
}

static void colo_resumed(void *arg, int rc)
{
    struct ckpt_secondary *s = arg;
    uint64_t n = (uint64_t)s->st.last_committed;
    uint8_t body[16];

    s->vm_busy = false;
    if (rc < 0) {
        colo_fail(s, rc);
        return;
    }
    if (s->lost_rc) {
        /* The primary went away while we committed: n is committed and
         * the guest runs; decide about takeover now. */
        int lrc = s->lost_rc;

        s->lost_rc = 0;
        set_state(s, CKPT_S_RECEIVING);
        primary_lost(s, lrc);
        return;
    }
    if (colo_fault_ckpt(COLO_FAULT_BEFORE_ACK, (int64_t)n)) {
        colo_fail(s, -COLO_EFAULT_INJECTED);
        return;
    }
    xprt_ack_encode(body, n, 0);
    rc = xprt_link_send(s->link, XPRT_COLO_ACK, body, 16);
    if (rc < 0) {
        set_state(s, CKPT_S_RECEIVING);
        primary_lost(s, rc);
        return;
    }
    if (colo_fault_ckpt(COLO_FAULT_AFTER_ACK, (int64_t)n)) {
        colo_fail(s, -COLO_EFAULT_INJECTED);
        return;
    }
    set_state(s, CKPT_S_RECEIVING);
    if (!s->standby && !s->standby_launching)
        request_standby(s);
    if (s->state == CKPT_S_RECEIVING)
        steady(s);
    emit(s, CKPT_EV_CHECKPOINT, (int64_t)n, 0);
}

static void colo_load_into(struct ckpt_secondary *s)
{
    int rc = s->vm->ops->load_devices_and_cont(
        s->vm, s->dev_committed, s->dev_committed_len, colo_resumed, s);

    if (rc < 0) {
        colo_fail(s, rc);
        return;
    }
    s->vm_busy = true;
}

static void colo_stopped(void *arg, int rc)
{
    struct ckpt_secondary *s = arg;

    s->vm_busy = false;
    if (rc < 0) {
        colo_fail(s, rc);
        return;
    }
    rc = s->mem->ops->revert(s->mem);
    if (rc >= 0)
        rc = commit_memory(s);
    if (rc < 0) {
        colo_fail(s, rc);
        return;
    }
    /* The old QEMU goes; the standby takes its place. */
    ckpt_vm_free(s->vm);
    s->vm = s->standby;
    s->standby = NULL;
    colo_load_into(s);
}

static void colo_commit_continue(struct ckpt_secondary *s)
{
    int rc;

    s->commit_waits_standby = false;
    rc = s->vm->ops->stop(s->vm, colo_stopped, s);
    if (rc < 0) {
        colo_fail(s, rc);
        return;
    }
    s->vm_busy = true;
}

static int colo_commit_start(struct ckpt_secondary *s)
{
    int rc;

    if (s->st.last_committed < 0) {
        /* First checkpoint: the launched QEMU waits for its state. */
        rc = commit_memory(s);
        if (rc < 0)
            return rc;
        colo_load_into(s);
        return 0;
    }
    if (!s->standby) {
        s->commit_waits_standby = true; /* launch_done continues */
        arm_timer(s, s->o.launch_timeout_ms);
        return 0;
    }
    colo_commit_continue(s);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Checkpoint records                                                   */

static int on_begin(struct ckpt_secondary *s, const struct xprt_item *it)
{
    uint64_t n;
    uint32_t flags;
    int rc = xprt_ckpt_begin_decode(it->body, it->length, &n, &flags);

    if (rc < 0)
        return rc;
    /* The first checkpoint to a fresh secondary may have any number: a
     * re-paired primary goes on counting. */
    if (s->st.last_committed < 0 && !s->in_ckpt)
        s->next_n = n;
    if (s->in_ckpt || n != s->next_n) {
        colo_err("secondary: CHECKPOINT_BEGIN(%llu), expected %llu%s",
                 (unsigned long long)n, (unsigned long long)s->next_n,
                 s->in_ckpt ? " after END" : "");
        return -COLO_ESTREAM_CORRUPT;
    }
    if (s->st.last_committed < 0 && !(flags & XPRT_CKPT_FLAG_FULL))
        return -COLO_ESTREAM_CORRUPT; /* the first must be a full sync */
    if (s->mem->ops->begin) {
        rc = s->mem->ops->begin(s->mem, n, flags & XPRT_CKPT_FLAG_FULL);
        if (rc < 0)
            return rc;
    }
    s->in_ckpt = true;
    s->cur_n = n;
    s->cur_flags = flags;
    s->pages_cur = 0;
    colo_log_set_checkpoint((int64_t)n);
    return 0;
}

static int on_pages(struct ckpt_secondary *s, const struct xprt_item *it)
{
    struct xprt_ram_pages_view v;
    int rc;

    if (!s->in_ckpt)
        return -COLO_ESTREAM_CORRUPT;
    rc = xprt_ram_pages_decode(it->body, it->length, CKPT_MAX_PAGES_PER_RECORD,
                               CKPT_PAGE_SHIFT, &v);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < v.count; i++)
        s->pfns[i] = xprt_ram_pages_pfn(&v, i);
    if (colo_fault_ckpt(COLO_FAULT_MID_PAGES, (int64_t)s->cur_n) &&
        s->pages_cur)
        return -COLO_EFAULT_INJECTED;
    rc = s->mem->ops->stage(s->mem, s->cur_n, s->pfns, v.data, v.count);
    if (rc < 0)
        return rc;
    s->pages_cur += v.count;
    return 0;
}

static int on_devstate(struct ckpt_secondary *s, const struct xprt_item *it)
{
    uint32_t fmt;
    const uint8_t *blob;
    size_t len;
    int rc;

    if (!s->in_ckpt || s->dev_staged)
        return -COLO_ESTREAM_CORRUPT;
    rc = xprt_devstate_decode(it->body, it->length, &fmt, &blob, &len);
    if (rc < 0)
        return rc;
    if (fmt != XPRT_DEVSTATE_QEMU_XEN_SAVE)
        return -COLO_ESTREAM_UNSUPPORTED;
    if (len > CKPT_DEVSTATE_MAX)
        return -COLO_ESTREAM_TOO_BIG;
    s->dev_staged = malloc(len ? len : 1);
    if (!s->dev_staged)
        return -ENOMEM;
    memcpy(s->dev_staged, blob, len);
    s->dev_staged_len = len;
    return 0;
}

static int on_disk_info(struct ckpt_secondary *s, const struct xprt_item *it)
{
    struct xprt_disk_info d;
    char why[256] = "";
    int rc = xprt_disk_info_decode(it->body, it->length, &d);

    if (rc < 0)
        return rc;
    if (!s->in_ckpt || !(s->cur_flags & XPRT_CKPT_FLAG_FULL))
        return -COLO_ESTREAM_CORRUPT;
    if (!s->o.disks || s->mode != CKPT_MODE_REMUS) {
        snprintf(why, sizeof(why), "%s",
                 !s->o.disks ? "this secondary has no disks configured"
                             : "replicated disks need Remus mode");
        rc = -COLO_EPEER_REJECTED;
    } else {
        rc = ckpt_disk_stage_info(s->o.disks, &d, why, sizeof(why));
    }
    if (rc < 0) {
        colo_err("secondary: disk %u (%s) refused: %s", d.disk, d.id, why);
        send_error(s, rc, why);
        return -COLO_EPEER_REJECTED; /* ERROR sent: not again */
    }
    return 0;
}

static int on_disk_write(struct ckpt_secondary *s, const struct xprt_item *it)
{
    struct xprt_disk_write_view w;
    int rc = xprt_disk_write_decode(it->body, it->length, &w);

    if (rc < 0)
        return rc;
    if (!s->in_ckpt || !s->o.disks)
        return -COLO_ESTREAM_CORRUPT;
    if (colo_fault_ckpt(COLO_FAULT_MID_DISK, (int64_t)s->cur_n))
        return -COLO_EFAULT_INJECTED;
    /* Nothing committed yet: no image to protect, write it straight. */
    rc = ckpt_disk_stage_write(s->o.disks, &w, s->st.last_committed < 0);
    if (rc == -COLO_ESTREAM_CORRUPT)
        colo_err("secondary: DISK_WRITE to disk %u (%u octets at %llu) "
                 "outside its image or before its DISK_INFO",
                 w.disk, w.length, (unsigned long long)w.offset);
    return rc;
}

static int on_end(struct ckpt_secondary *s, const struct xprt_item *it)
{
    uint64_t n;
    uint8_t body[16];
    int rc = xprt_ckpt_end_decode(it->body, it->length, &n);

    if (rc < 0)
        return rc;
    if (!s->in_ckpt || n != s->cur_n || !s->dev_staged)
        return -COLO_ESTREAM_CORRUPT;
    /* The whole checkpoint is here: commit disks, memory, then device
     * state. */
    set_state(s, CKPT_S_COMMITTING);
    if (s->o.disks) {
        rc = ckpt_disk_stage_commit(s->o.disks);
        if (rc < 0) {
            colo_err("secondary: applying the disk writes of %llu failed: %s",
                     (unsigned long long)n, colo_strerror(rc));
            return rc;
        }
    }
    if (s->mode == CKPT_MODE_COLO)
        return colo_commit_start(s);
    rc = s->mem->ops->commit(s->mem, n, s->cur_flags & XPRT_CKPT_FLAG_FULL);
    if (rc < 0) {
        colo_err("secondary: commit of %llu failed: %s", (unsigned long long)n,
                 colo_strerror(rc));
        return rc;
    }
    free(s->dev_committed);
    s->dev_committed = s->dev_staged;
    s->dev_committed_len = s->dev_staged_len;
    s->dev_staged = NULL;
    s->dev_staged_len = 0;
    s->in_ckpt = false;
    s->st.last_committed = (int64_t)n;
    s->st.checkpoints++;
    s->st.dirty_pages_last = s->pages_cur;
    s->st.dirty_pages_total += s->pages_cur;
    s->st.devstate_bytes_last = s->dev_committed_len;
    s->next_n = n + 1;
    if (s->mode == CKPT_MODE_MIGRATE) {
        /* The final checkpoint: resume here, ACK once running. */
        start_resume(s);
        return 0;
    }
    if (colo_fault_ckpt(COLO_FAULT_BEFORE_ACK, (int64_t)n))
        return -COLO_EFAULT_INJECTED;
    xprt_ack_encode(body, n, 0);
    rc = xprt_link_send(s->link, XPRT_COLO_ACK, body, 16);
    if (rc < 0)
        return rc;
    if (colo_fault_ckpt(COLO_FAULT_AFTER_ACK, (int64_t)n))
        return -COLO_EFAULT_INJECTED;
    set_state(s, CKPT_S_RECEIVING);
    steady(s);
    emit(s, CKPT_EV_CHECKPOINT, (int64_t)n, 0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Pairing                                                              */

static int on_hello(struct ckpt_secondary *s, const struct xprt_item *it)
{
    int rc = xprt_colo_hello_decode(it->body, it->length, &s->hello);

    if (rc < 0)
        return rc;
    if (s->hello.role != XPRT_ROLE_PRIMARY ||
        s->hello.page_size != CKPT_PAGE_SIZE || !s->hello.ram_size ||
        s->hello.ram_size % CKPT_PAGE_SIZE ||
        s->hello.ram_size > CKPT_MAX_RAM_BYTES) {
        colo_err("secondary: HELLO refused (role %u, page size %u, RAM %llu)",
                 s->hello.role, s->hello.page_size,
                 (unsigned long long)s->hello.ram_size);
        return -COLO_EPEER_REJECTED;
    }
    if (s->want_name && strcmp(s->want_name, s->hello.vm_name) != 0) {
        colo_err("secondary: HELLO for VM '%s', expected '%s'",
                 s->hello.vm_name, s->want_name);
        return -COLO_EPEER_REJECTED;
    }
    if (s->hello.flags & XPRT_HELLO_FLAG_COLO)
        s->mode = CKPT_MODE_COLO;
    else if (s->hello.flags & XPRT_HELLO_FLAG_MIGRATE)
        s->mode = CKPT_MODE_MIGRATE;
    else
        s->mode = CKPT_MODE_REMUS;
    s->have_hello = true;
    return 0;
}

static int on_config(struct ckpt_secondary *s, const struct xprt_item *it)
{
    const char *json;
    size_t len;
    struct ckpt_launch_req req = {0};
    int rc = xprt_colo_config_decode(it->body, it->length, &json, &len);

    if (rc < 0)
        return rc;
    if (!s->have_hello || s->vm_config)
        return -COLO_ESTREAM_CORRUPT;
    s->vm_config = strndup(json, len);
    if (!s->vm_config)
        return -ENOMEM;
    if (s->hello.flags & XPRT_HELLO_FLAG_XEN) {
        struct xprt_link *l = s->link;

        if (!s->cbs.xen_incoming) {
            colo_err("secondary: the primary offers a Xen domain; this host "
                     "takes QEMU VMs only");
            return -COLO_EPEER_REJECTED;
        }
        /* Hand over: from here on the Xen receiver owns the link. */
        s->link = NULL;
        set_state(s, CKPT_S_DONE);
        s->done_called = true;
        s->cbs.xen_incoming(s->arg, s, l, s->hello.flags, s->hello.vm_name,
                            s->vm_config);
        return 1; /* s may be gone */
    }
    req.vm_name = s->hello.vm_name;
    req.vm_config = s->vm_config;
    req.ram_size = s->hello.ram_size;
    req.mode = s->mode;
    set_state(s, CKPT_S_LAUNCHING);
    arm_timer(s, s->o.launch_timeout_ms);
    rc = s->cbs.launch(s->arg, s, &req);
    if (rc < 0) {
        colo_err("secondary: launching the VM failed: %s", colo_strerror(rc));
        return rc;
    }
    return 0;
}

static void link_record(struct xprt_link *l, const struct xprt_item *it,
                        void *arg)
{
    struct ckpt_secondary *s = arg;
    int32_t code = 0;
    char text[256] = "";
    int rc;

    s->t_last_rx_ns = colo_now_ns();
    switch (s->state) {
    case CKPT_S_HELLO:
        if (it->type == XPRT_COLO_HELLO && !s->have_hello)
            rc = on_hello(s, it);
        else if (it->type == XPRT_COLO_VM_CONFIG) {
            rc = on_config(s, it);
            if (rc == 1)
                return; /* handed over to xen_incoming: s may be gone */
        } else
            rc = -COLO_ESTREAM_CORRUPT;
        break;
    case CKPT_S_RECEIVING:
        switch (it->type) {
        case XPRT_COLO_CHECKPOINT_BEGIN:
            rc = on_begin(s, it);
            break;
        case XPRT_COLO_RAM_PAGES:
            rc = on_pages(s, it);
            break;
        case XPRT_COLO_DEVICE_STATE:
            rc = on_devstate(s, it);
            break;
        case XPRT_COLO_DISK_INFO:
            rc = on_disk_info(s, it);
            break;
        case XPRT_COLO_DISK_WRITE:
            rc = on_disk_write(s, it);
            break;
        case XPRT_COLO_CHECKPOINT_END:
            rc = on_end(s, it);
            break;
        case XPRT_COLO_ERROR:
            rc = xprt_error_decode(it->body, it->length, &code, text,
                                   sizeof(text));
            if (rc >= 0 && code == -COLO_ECANCELLED) {
                colo_info("secondary: the primary ended protection");
                finish(s, CKPT_S_DONE, -COLO_ECANCELLED);
                return;
            }
            colo_err("secondary: the primary reports: %s", text);
            rc = -COLO_EPEER_REJECTED;
            break;
        default:
            rc = -COLO_ESTREAM_CORRUPT;
            break;
        }
        break;
    case CKPT_S_HANDOVER:
        if (it->type == XPRT_COLO_HANDOVER) {
            rc = on_go(s, it);
            if (rc == 1)
                return; /* finished */
        } else if (it->type == XPRT_COLO_ERROR) {
            rc = xprt_error_decode(it->body, it->length, &code, text,
                                   sizeof(text));
            colo_err("secondary: the source ends the migrate: %s", text);
            finish(s, CKPT_S_DONE, code < 0 ? code : -COLO_EPEER_REJECTED);
            return;
        } else {
            rc = -COLO_ESTREAM_CORRUPT;
        }
        break;
    default:
        rc = -COLO_ESTREAM_CORRUPT;
        break;
    }
    if (rc >= 0)
        return;
    if (rc == -COLO_ESTREAM_CORRUPT)
        colo_err("secondary: unexpected record %s in state %s",
                 xprt_rec_type_name(XPRT_LAYER_COLO, it->type),
                 state_names[s->state]);
    if (rc != -COLO_EPEER_REJECTED && rc != -COLO_EFAULT_INJECTED)
        send_error(s, rc, colo_strerror(rc));
    if (s->state == CKPT_S_HELLO || s->state == CKPT_S_LAUNCHING) {
        finish(s, CKPT_S_DONE, rc);
        return;
    }
    primary_lost(s, rc);
}

static void link_error(struct xprt_link *l, int rc, void *arg)
{
    struct ckpt_secondary *s = arg;

    if (s->state == CKPT_S_RUNNING) {
        drop_link(s); /* migrate: the source closed after our ACK */
        return;
    }
    if (s->state == CKPT_S_HELLO || s->state == CKPT_S_LAUNCHING) {
        finish(s, CKPT_S_DONE, rc);
        return;
    }
    primary_lost(s, rc);
}

static void link_up(struct xprt_link *l, void *arg)
{
    struct ckpt_secondary *s = arg;

    s->st.link_up = true;
}

static const struct xprt_link_cbs link_cbs = {
    .up = link_up,
    .record = link_record,
    .error = link_error,
};

/* ------------------------------------------------------------------ */
/* Timers and deferred work                                             */

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_secondary *s = arg;

    colo_err("secondary: timeout in state %s", state_names[s->state]);
    send_error(s, -ETIMEDOUT, "secondary timed out");
    finish(s, CKPT_S_DONE, -ETIMEDOUT);
}

static void deferred_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_secondary *s = arg;

    if (s->commit_waits_standby && s->standby &&
        s->state == CKPT_S_COMMITTING) {
        evtimer_del(s->timer);
        colo_commit_continue(s);
        return;
    }
    if (s->takeover_pending) {
        s->takeover_pending = false;
        if (s->state == CKPT_S_LOST)
            start_resume(s);
        return;
    }
    if (s->state == CKPT_S_LAUNCHING && s->deferred_rc == 0) {
        /* launch_done succeeded: pair. */
        struct xprt_colo_hello h = {0};
        struct colo_buf b;
        int rc;

        h.version = XPRT_COLO_VERSION;
        h.role = XPRT_ROLE_SECONDARY;
        h.page_size = CKPT_PAGE_SIZE;
        h.flags = s->hello.flags;
        h.ram_size = s->hello.ram_size;
        snprintf(h.vm_name, sizeof(h.vm_name), "%s", s->hello.vm_name);
        colo_buf_init(&b, 0);
        rc = xprt_colo_hello_write(&b, &h);
        if (rc >= 0)
            rc = xprt_link_send_raw(s->link, b.data, b.len);
        colo_buf_dispose(&b);
        if (rc < 0) {
            finish(s, CKPT_S_DONE, rc);
            return;
        }
        s->next_n = 1;
        set_state(s, CKPT_S_RECEIVING);
        emit(s, CKPT_EV_PAIRED, -1, 0);
        return;
    }
    finish(s, CKPT_S_DONE, s->deferred_rc);
}

/* ------------------------------------------------------------------ */
/* Public functions                                                     */

int ckpt_secondary_new(struct event_base *base,
                       const struct ckpt_secondary_opts *opts,
                       const struct ckpt_secondary_cbs *cbs, void *arg,
                       struct ckpt_secondary **ret)
{
    struct ckpt_secondary *s;

    *ret = NULL;
    if (!base || !opts || !cbs || !cbs->launch)
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->evb = base;
    s->o = *opts;
    if (opts->vm_name)
        s->want_name = strdup(opts->vm_name);
    if (opts->link.auth_key)
        s->auth_key = strdup(opts->link.auth_key);
    s->o.vm_name = s->want_name;
    s->o.link.auth_key = s->auth_key;
    if (!s->o.hello_timeout_ms)
        s->o.hello_timeout_ms = 10000;
    if (!s->o.launch_timeout_ms)
        s->o.launch_timeout_ms = 30000;
    s->cbs = *cbs;
    s->arg = arg;
    s->st.role = CKPT_ROLE_SECONDARY;
    s->st.mode = CKPT_MODE_REMUS;
    s->st.last_committed = -1;
    s->st.state = state_names[CKPT_S_IDLE];
    s->timer = evtimer_new(base, timer_cb, s);
    s->deferred = event_new(base, -1, 0, deferred_cb, s);
    if ((opts->vm_name && !s->want_name) ||
        (opts->link.auth_key && !s->auth_key) || !s->timer || !s->deferred) {
        ckpt_secondary_free(s);
        return -ENOMEM;
    }
    *ret = s;
    return 0;
}

int ckpt_secondary_start(struct ckpt_secondary *s, int fd)
{
    struct xprt_link_cfg cfg;
    int rc;

    if (s->state != CKPT_S_IDLE) {
        colo_close(&fd);
        return -EBUSY;
    }
    ckpt_link_cfg_setup(&s->o.link, "to-primary", &cfg);
    ckpt_tcp_nodelay(fd);
    rc = xprt_link_new_from_fd(s->evb, fd, false, &cfg, &link_cbs, s, &s->link);
    if (rc < 0)
        return rc;
    set_state(s, CKPT_S_HELLO);
    arm_timer(s, s->o.hello_timeout_ms);
    return 0;
}

int ckpt_secondary_start_link(struct ckpt_secondary *s, struct xprt_link *l)
{
    if (s->state != CKPT_S_IDLE || xprt_link_state(l) != XPRT_LINK_UP) {
        xprt_link_free(l);
        return s->state != CKPT_S_IDLE ? -EBUSY : -ENOTCONN;
    }
    s->link = l;
    s->st.link_up = true;
    xprt_link_set_cbs(l, &link_cbs, s);
    set_state(s, CKPT_S_HELLO);
    arm_timer(s, s->o.hello_timeout_ms);
    return 0;
}

void ckpt_secondary_launch_done(struct ckpt_secondary *s, int rc,
                                struct ckpt_vm *vm, const char *ram_path)
{
    if (s->standby_launching) {
        s->standby_launching = false;
        if (rc < 0 || !vm || s->standby || s->done_called) {
            ckpt_vm_free(vm);
            if (!s->done_called && s->state != CKPT_S_LOST &&
                s->state != CKPT_S_RUNNING) {
                s->deferred_rc = rc < 0 ? rc : -EINVAL;
                colo_err("secondary: standby launch failed: %s",
                         colo_strerror(s->deferred_rc));
                send_error(s, s->deferred_rc, "standby launch failed");
                event_active(s->deferred, 0, 0);
            }
            return;
        }
        s->standby = vm;
        if (s->commit_waits_standby) {
            /* From the loop, not from inside this call. */
            s->deferred_rc = 0;
            event_active(s->deferred, 0, 0);
        }
        return;
    }
    if (s->state != CKPT_S_LAUNCHING || s->vm) {
        ckpt_vm_free(vm);
        return;
    }
    evtimer_del(s->timer);
    if (rc >= 0 && (!vm || !ram_path))
        rc = -EINVAL;
    if (rc >= 0) {
        s->vm = vm;
        vm = NULL;
        s->ram_path = strdup(ram_path);
        rc = s->ram_path ? 0 : -ENOMEM;
    }
    if (rc >= 0) {
        unsigned flags = CKPT_MEM_SECONDARY;

        if (s->mode == CKPT_MODE_COLO)
            flags |= CKPT_MEM_COLO;
        rc = ckpt_mem_qemu_open(s->ram_path, s->hello.ram_size, flags, &s->mem);
    }
    ckpt_vm_free(vm);
    if (rc < 0) {
        colo_err("secondary: launch failed: %s", colo_strerror(rc));
        send_error(s, rc, "secondary could not launch the VM");
    }
    s->deferred_rc = rc;
    event_active(s->deferred, 0, 0);
}

void ckpt_secondary_takeover_answer(struct ckpt_secondary *s, bool allowed)
{
    if (s->state != CKPT_S_LOST)
        return;
    if (!allowed) {
        colo_warn("secondary: takeover refused by the tie-breaker; waiting "
                  "for an explicit failover");
        return;
    }
    s->takeover_pending = true;
    event_active(s->deferred, 0, 0);
}

int ckpt_secondary_failover(struct ckpt_secondary *s)
{
    switch (s->state) {
    case CKPT_S_RECEIVING:
    case CKPT_S_LOST:
        break;
    default:
        return -EBUSY;
    }
    if (s->st.last_committed < 0)
        return -ENOENT;
    drop_link(s);
    if (s->mode == CKPT_MODE_MIGRATE)
        return -EBUSY;
    set_state(s, CKPT_S_LOST);
    s->takeover_pending = true;
    event_active(s->deferred, 0, 0);
    return 0;
}

void ckpt_secondary_cancel(struct ckpt_secondary *s)
{
    if (s->done_called)
        return;
    if (s->vm_busy) {
        s->vm->ops->cancel(s->vm);
        s->vm_busy = false;
    }
    send_error(s, -COLO_ECANCELLED, "secondary cancelled");
    s->takeover_pending = false;
    s->deferred_rc = -COLO_ECANCELLED;
    set_state(s, CKPT_S_DONE);
    event_active(s->deferred, 0, 0);
}

void ckpt_secondary_free(struct ckpt_secondary *s)
{
    if (!s)
        return;
    if (s->vm_busy && s->vm)
        s->vm->ops->cancel(s->vm);
    if (s->timer)
        event_free(s->timer);
    if (s->deferred)
        event_free(s->deferred);
    xprt_link_free(s->link);
    xprt_link_free(s->closing_link);
    ckpt_memory_free(s->mem);
    ckpt_vm_free(s->vm);
    ckpt_vm_free(s->standby);
    free(s->dev_staged);
    free(s->dev_committed);
    free(s->vm_config);
    free(s->ram_path);
    free(s->want_name);
    free(s->auth_key);
    free(s);
}

struct ckpt_vm *ckpt_secondary_take_vm(struct ckpt_secondary *s)
{
    struct ckpt_vm *vm;

    if (s->state != CKPT_S_RUNNING)
        return NULL;
    vm = s->vm;
    s->vm = NULL;
    return vm;
}

void ckpt_secondary_get_stats(const struct ckpt_secondary *s,
                              struct ckpt_stats *ret)
{
    *ret = s->st;
    ret->mode = s->mode;
    ret->link_up = s->link && xprt_link_state(s->link) == XPRT_LINK_UP;
    if (s->link) {
        struct xprt_link_stats ls;

        xprt_link_get_stats(s->link, &ls);
        ret->bytes_sent += ls.bytes_out;
        ret->bytes_received += ls.bytes_in;
    }
    ret->link_idle_ms =
        s->t_last_rx_ns ? (colo_now_ns() - s->t_last_rx_ns) / 1000000 : 0;
}

const uint8_t *ckpt_secondary_committed_devstate(const struct ckpt_secondary *s,
                                                 size_t *ret_len)
{
    *ret_len = s->dev_committed_len;
    return s->dev_committed;
}

struct ckpt_memory *ckpt_secondary_memory(const struct ckpt_secondary *s)
{
    return s->mem;
}
