/*
 * The primary engine: runs next to the guest, sends checkpoints to the
 * secondary. One per VM. Migrate and protect (Remus / COLO) are the same
 * machine with a different policy; the protocol is in docs/protocol.md.
 *
 * States (enum ckpt_primary_state), what each holds, and its timer:
 *   Idle        created, or protected-and-lost: no link.   mem, vm
 *   Hello       link up, HELLO + VM_CONFIG sent, waiting the peer's HELLO
 *               (timer: hello_timeout_ms)                   + link
 *   Precopy     migrate: round k captured while the guest runs, records
 *               queued, waiting for the link to drain (timer: io_timeout)
 *   Stopping    "stop" sent (timer: vm op deadline)
 *   DiskSync    protect with disks, first checkpoint to a new secondary:
 *               the tee was attached while the guest was stopped; BEGIN(n,
 *               FULL), DISK_INFO and the images' non-zero extents are sent
 *               while the guest runs (timer: io_timeout)
 *   Capturing   guest paused: pages captured, device-state save pending
 *               (timer: vm op deadline)                     + pageset
 *   Resuming    "cont" sent (timer: vm op deadline); protect only
 *   Sending     records of n queued, waiting for the link to drain while
 *               the guest runs (timer: io_timeout_ms)       + devstate n
 *   WaitAck     CHECKPOINT_END(n) sent, waiting ACK(n) (timer: ack_timeout)
 *               migrate: HANDOVER(READY) from the target -> GO sent, then
 *               waiting for its ACK (timer: io_timeout)
 *   Interval    n acked; waiting for the interval timer (or a request)
 *   Unprotected protect: the secondary is gone, guest runs alone; no link
 *               (a new ckpt_primary_start() re-pairs, full sync first)
 *   Done        migrate finished: the guest stays STOPPED here (the caller
 *               quits QEMU); or cancelled / failed
 *
 * Transitions (public functions):
 *   ckpt_primary_new:    -> Idle
 *   ckpt_primary_start:  Idle|Unprotected -> Hello (on error: unchanged,
 *                        the fd is closed anyway: it is consumed)
 *   ckpt_primary_checkpoint_now: Interval -> Stopping (else no-op, 0)
 *   ckpt_primary_cancel: any -> Done; done(-COLO_ECANCELLED) from the loop.
 *                        A stopped guest is resumed first (best effort).
 *   ckpt_primary_free:   any -> gone; no callback after it. Does not free
 *                        mem or vm (borrowed).
 * Internal: Hello -> Precopy (migrate) | Stopping (protect);
 *   with disks: Hello -> Stopping (tee attached) -> Resuming -> DiskSync
 *   -> Stopping (checkpoint n, whose BEGIN went out with the sync);
 *   Precopy -> Precopy (next round) | Stopping (converged / max rounds);
 *   with soft-dirty tracking a round after the first pauses the guest
 *   while its pages are captured: Precopy -> Stopping -> Capturing ->
 *   Resuming -> Precopy;
 *   Stopping -> Capturing -> Resuming (protect) | Sending (migrate);
 *   Resuming -> Sending -> WaitAck -> Interval (protect) | Done (migrate);
 *   Interval -> Stopping (interval timer).
 *   Link lost (EOF, heartbeats, ERROR record, bad record, timeout):
 *     protect: -> Unprotected (guest resumed if it was stopped), event
 *              CKPT_EV_UNPROTECTED; never done().
 *     migrate: -> Done, done(rc); the guest is resumed here (only the
 *              target's ACK says it runs there; see docs/protocol.md 5.4
 *              for the window after GO). The final device-state save
 *              released the disk images (vm save_devices_release); the
 *              resume takes them back.
 *   VM operation failed (QEMU died / refused): -> Done, done(rc).
 * These are all: primary.c changes the state only in set_state(), which
 * checks each change against a table of them (legal_next) and aborts on
 * any other.
 *
 * Callbacks: event() any number of times; done() exactly once, as the last
 * thing the engine does for that run; the engine may be freed inside both.
 * done rc: 0 migrate completed (stats final); -COLO_ECANCELLED; other < 0.
 */
#ifndef COLO_CHECKPOINT_PRIMARY_H
#define COLO_CHECKPOINT_PRIMARY_H

#include "checkpoint/ckpt.h"
#include "checkpoint/memory.h"
#include "checkpoint/vm.h"

struct event_base;
struct ckpt_primary;

enum ckpt_primary_state {
    CKPT_P_IDLE = 0,
    CKPT_P_HELLO,
    CKPT_P_PRECOPY,
    CKPT_P_STOPPING,
    CKPT_P_CAPTURING,
    CKPT_P_RESUMING,
    CKPT_P_SENDING,
    CKPT_P_WAIT_ACK,
    CKPT_P_INTERVAL,
    CKPT_P_UNPROTECTED,
    CKPT_P_DONE,
    CKPT_P_DISK_SYNC,
};

struct ckpt_primary_opts {
    enum ckpt_mode mode;
    const char *vm_name;   /* for logs and HELLO; copied */
    const char *vm_config; /* JSON sent in VM_CONFIG; copied; may be NULL */
    uint64_t ram_size;     /* guest RAM bytes (announced in HELLO) */
    struct ckpt_link_opts link;

    /* protect */
    unsigned interval_ms;     /* between an ack and the next ckpt (0: 100) */
    unsigned ack_timeout_ms;  /* WaitAck deadline (0: 5000) */
    uint64_t max_checkpoints; /* > 0: after this many acks stay in Interval
                                 without a timer (still protected; the
                                 owner cancels or checkpoint_now()s) */
    bool verify_digest;       /* reserved: ACK has no digest field yet */

    /* migrate: convergence policy. Stop when the pages of the last round
     * would take at most downtime_ms at the measured link rate, or after
     * max_rounds rounds. */
    unsigned downtime_ms; /* 0: 300 */
    unsigned max_rounds;  /* 0: 30 */

    unsigned hello_timeout_ms; /* 0: 10000 */
    unsigned io_timeout_ms;    /* link drain deadline (0: 30000) */

    /* protect: the VM's replicated disks (checkpoint/disk.h); borrowed,
     * must outlive the engine; NULL: none. The engine attaches it when it
     * pairs and detaches it when the secondary is lost or it ends. Remus
     * only (COLO mode with disks is refused: -ENOTSUP). */
    struct ckpt_disk_tee *disks;
};

struct ckpt_primary_cbs {
    void (*event)(void *arg, const struct ckpt_event *ev);
    void (*done)(void *arg, int rc, const struct ckpt_stats *stats);
    /* Optional, protect only: the guest is paused for checkpoint n and its
     * state captured; the engine resumes it ("cont") right after this
     * returns, so QMP commands queued here on the VM's client run while
     * the guest is still paused (output commit: ckpt_outbuf_epoch). A
     * negative return is a failed checkpoint: the engine ends protection
     * as if the secondary were lost (CKPT_EV_UNPROTECTED). */
    int (*paused)(void *arg, uint64_t n);
};

/* mem and vm are borrowed and must outlive the engine. */
int ckpt_primary_new(struct event_base *base,
                     const struct ckpt_primary_opts *opts,
                     struct ckpt_memory *mem, struct ckpt_vm *vm,
                     const struct ckpt_primary_cbs *cbs, void *arg,
                     struct ckpt_primary **ret);

/* Pair with a secondary over fd (a connected TCP socket; consumed). A
 * second start after Unprotected re-pairs with a fresh secondary: the
 * first checkpoint to it is a full sync. */
int ckpt_primary_start(struct ckpt_primary *p, int fd);
/* The same over a link that is already UP (transport/link.h: from
 * xprt_link_connect's up callback or a listener); consumed. The engine
 * takes over its callbacks (xprt_link_set_cbs). */
struct xprt_link;
int ckpt_primary_start_link(struct ckpt_primary *p, struct xprt_link *link);
int ckpt_primary_checkpoint_now(struct ckpt_primary *p);
void ckpt_primary_cancel(struct ckpt_primary *p);
void ckpt_primary_free(struct ckpt_primary *p); /* accepts NULL */

enum ckpt_primary_state ckpt_primary_state(const struct ckpt_primary *p);
const char *ckpt_primary_state_name(enum ckpt_primary_state s);
void ckpt_primary_get_stats(const struct ckpt_primary *p,
                            struct ckpt_stats *ret);

/* Test hook: the device-state blob of the last captured checkpoint (the
 * one in flight or last acked). Valid until the next capture. */
const uint8_t *ckpt_primary_last_devstate(const struct ckpt_primary *p,
                                          size_t *ret_len);

/* Test hook: called synchronously right after the pages (and device
 * state) of checkpoint n were captured, guest still paused. */
typedef void ckpt_primary_capture_hook_fn(void *arg, uint64_t n);
void ckpt_primary_set_capture_hook(struct ckpt_primary *p,
                                   ckpt_primary_capture_hook_fn *fn, void *arg);

/* Test hook: behave as if the primary died at fault point `point`
 * (common/fault.h COLO_FAULT_*) the first time it is reached at or
 * after checkpoint n: the link is dropped
 * without a goodbye (after draining it for COLO_FAULT_AFTER_CKPT_END) and
 * done(-COLO_EFAULT_INJECTED) follows; the guest is left as it is. The
 * COLO_FAULT environment variable triggers the same points at every
 * checkpoint. */
void ckpt_primary_set_fault(struct ckpt_primary *p, int point, uint64_t n);

#endif
