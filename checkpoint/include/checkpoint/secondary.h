/*
 * The secondary engine: receives a VM (migrate) or its checkpoints
 * (protect), commits each checkpoint only when it has arrived whole, acks
 * it, and takes over when the primary is gone. One per VM.
 *
 * The QEMU it runs comes from the orchestrator: after HELLO + VM_CONFIG the
 * engine calls cbs->launch() with the configuration; the orchestrator
 * builds the argv from it and starts QEMU with
 *   -S -incoming defer -global migration.send-configuration=off
 *   -machine suppress-vmdesc=on -nodefaults -vga none
 *   -object memory-backend-file,id=ram,size=RAM,mem-path=FILE,share=on
 *   -machine memory-backend=ram  (+ the QMP socket, pre-opened)
 * and answers with ckpt_secondary_launch_done(vm, ram_path). That QEMU is
 * the "standby": it stays paused while committed pages go straight into
 * its RAM file; at takeover (or the end of a migrate) the engine loads the
 * last committed device state through the one-shot loader and resumes it.
 * COLO mode: the standby is resumed at every checkpoint, so after each
 * commit the engine asks for a fresh standby on the same RAM file (launch
 * with req->standby = true, req->ram_path set; answer with launch_done as
 * usual, any time before the next END or within launch_timeout_ms after
 * it) and frees the old QEMU's ckpt_vm at the next checkpoint: give the
 * engine a vm that owns its process (ckpt_vm_qemu_new with the pid, or
 * ckpt_vm_qemu_new_from_qemu) so that free kills it. At END(n): stop the
 * running QEMU, revert the pages its guest wrote, apply n, free it, load n
 * into the standby and resume it, ACK(n). A COLO takeover keeps the guest
 * that runs since the last commit (no load).
 * The vm given to launch_done may still be connecting to QMP: operations
 * queue until it is up.
 *
 * States (enum ckpt_secondary_state), what each holds, and its timer:
 *   Idle        created; nothing.
 *   Hello       link up, waiting for HELLO + VM_CONFIG (hello_timeout)
 *   Launching   cbs->launch() pending (launch_timeout_ms)   + config
 *   Receiving   paired; staging checkpoint n (link heartbeats: the link's
 *               timeout)                                    + mem, vm
 *   Committing  END(n) arrived: applying n; COLO: resuming the swapped-in
 *               QEMU (vm op deadline)
 *   Lost        the primary is gone: may_takeover() pending, or waiting
 *               for ckpt_secondary_failover(); the staged half-checkpoint
 *               has been dropped
 *   Resuming    loading the last committed device state, then cont
 *               (vm op deadline)
 *   Handover    migrate: the final device state is loaded, the guest
 *               paused (disk images not opened for writing), READY sent;
 *               waiting for the source's GO (launch_timeout_ms). GO ->
 *               Resuming (cont, then ACK); EOF, ERROR, timeout -> Done:
 *               the guest never ran here, the source resumes it
 *   Running     the guest runs here (migrate finished / took over); done(0)
 *               was called; the VM stays owned by the engine unless taken
 *               with ckpt_secondary_take_vm()
 *   Done        failed or cancelled
 *
 * Transitions (public functions):
 *   ckpt_secondary_new:     -> Idle
 *   ckpt_secondary_start:   Idle -> Hello (fd consumed, even on error)
 *   ckpt_secondary_launch_done: Launching -> Receiving (rc < 0 or a bad
 *                           vm: -> Done, done(rc), ERROR sent to the peer)
 *   ckpt_secondary_takeover_answer: Lost -> Resuming (allowed, and a
 *                           committed checkpoint exists) | Lost (refused:
 *                           wait for ckpt_secondary_failover)
 *   ckpt_secondary_failover: Receiving|Committing|Lost -> Resuming (the
 *                           link is dropped first; -ENOENT when nothing
 *                           was ever committed; -EBUSY in other states)
 *   ckpt_secondary_cancel:  any -> Done, done(-COLO_ECANCELLED) (deferred)
 *   ckpt_secondary_free:    any -> gone, no callback; frees the VM it owns
 *                           (kills the standby QEMU).
 * Internal: Hello -> Launching -> Receiving -> Committing -> Receiving ...;
 *   migrate: Committing(final) -> Resuming (paused load) -> Handover ->
 *   (GO) Resuming (cont) -> Running, done(0); a VM without a paused
 *   load: Committing(final) -> Resuming -> Running, done(0);
 *   Receiving -> Lost on EOF / missed heartbeats / ERROR / bad record (no
 *   committed checkpoint yet, or migrate before its final commit: -> Done,
 *   done(rc) instead: there is nothing to resume);
 *   primary sent ERROR(ECANCELLED) = it ended protection on purpose:
 *   -> Done, done(-COLO_ECANCELLED), no takeover.
 *   Lost -> Resuming when may_takeover allows; Resuming -> Running, done(0)
 *   or Done, done(rc) when the load fails (QEMU died: an ordinary error).
 *   A bad record (codec, cap, order) is answered with ERROR(code), drained,
 *   then handled as the primary being lost.
 *
 * Callbacks: launch() and may_takeover() start a request the orchestrator
 * answers later (or at once) with the matching *_done/_answer function;
 * event() any number of times; done() exactly once. The engine may be
 * freed inside event() and done() (not inside launch()/may_takeover()).
 */
#ifndef COLO_CHECKPOINT_SECONDARY_H
#define COLO_CHECKPOINT_SECONDARY_H

#include "checkpoint/ckpt.h"
#include "checkpoint/memory.h"
#include "checkpoint/vm.h"

struct event_base;
struct ckpt_secondary;

enum ckpt_secondary_state {
    CKPT_S_IDLE = 0,
    CKPT_S_HELLO,
    CKPT_S_LAUNCHING,
    CKPT_S_RECEIVING,
    CKPT_S_COMMITTING,
    CKPT_S_LOST,
    CKPT_S_RESUMING,
    CKPT_S_HANDOVER,
    CKPT_S_RUNNING,
    CKPT_S_DONE,
};

struct ckpt_launch_req {
    const char *vm_name;   /* from HELLO */
    const char *vm_config; /* JSON from VM_CONFIG; NULL if none sent */
    uint64_t ram_size;     /* bytes, <= CKPT_MAX_RAM_BYTES */
    enum ckpt_mode mode;
    bool standby;         /* COLO: a further QEMU on the same RAM file */
    const char *ram_path; /* standby: the RAM file to use; else NULL (the
                             launcher picks a fresh file) */
};

struct xprt_link;

struct ckpt_secondary_cbs {
    /* Launch a QEMU for req (see top); answer with
     * ckpt_secondary_launch_done(). Return < 0 to fail at once (then do
     * not call launch_done). req is valid only during the call. */
    int (*launch)(void *arg, struct ckpt_secondary *s,
                  const struct ckpt_launch_req *req);
    /* The primary is gone (reason rc): may this side take over? Answer
     * with ckpt_secondary_takeover_answer(). NULL: never automatically
     * (wait for ckpt_secondary_failover()). */
    int (*may_takeover)(void *arg, struct ckpt_secondary *s, int rc);
    void (*event)(void *arg, const struct ckpt_event *ev);
    /* rc 0: the guest runs here now. */
    void (*done)(void *arg, int rc, const struct ckpt_stats *stats);
    /*
     * Optional. The primary offers a Xen domain (HELLO flag
     * XPRT_HELLO_FLAG_XEN, transport/colo_rec.h): after its HELLO and VM_CONFIG
     * the engine hands the link over and ends (state DONE; done() is not
     * called). The callee owns link (consumed: it sets its own callbacks at
     * once) and may free s inside. name/config are valid only during the call.
     * NULL: such a primary is refused.
     */
    void (*xen_incoming)(void *arg, struct ckpt_secondary *s,
                         struct xprt_link *link, uint32_t hello_flags,
                         const char *name, const char *config);
};

struct ckpt_secondary_opts {
    const char *vm_name; /* expected VM name; NULL: accept any */
    struct ckpt_link_opts link;
    unsigned hello_timeout_ms;  /* 0: 10000 */
    unsigned launch_timeout_ms; /* 0: 30000 */
    bool send_digest;           /* put a digest of the committed image in
                                   every ACK (costs a pass over RAM) */
    /* This host's images of the VM's replicated disks (checkpoint/disk.h);
     * borrowed, must outlive the engine; NULL: a primary that sends
     * DISK_INFO is refused. DISK_WRITEs of checkpoint n are applied at
     * END(n), before memory and before ACK(n). */
    struct ckpt_disk_stage *disks;
};

int ckpt_secondary_new(struct event_base *base,
                       const struct ckpt_secondary_opts *opts,
                       const struct ckpt_secondary_cbs *cbs, void *arg,
                       struct ckpt_secondary **ret);
/* fd: a connected (accepted) TCP socket from the primary; consumed. */
int ckpt_secondary_start(struct ckpt_secondary *s, int fd);
/* The same over a link already UP (e.g. from xprt_listener's accept_cb);
 * consumed; the engine sets its callbacks. */
struct xprt_link;
int ckpt_secondary_start_link(struct ckpt_secondary *s, struct xprt_link *l);
/* Answer to launch(): vm consumed (also on rc < 0, may be NULL then);
 * ram_path copied: the memory-backend-file QEMU uses. */
void ckpt_secondary_launch_done(struct ckpt_secondary *s, int rc,
                                struct ckpt_vm *vm, const char *ram_path);
void ckpt_secondary_takeover_answer(struct ckpt_secondary *s, bool allowed);
int ckpt_secondary_failover(struct ckpt_secondary *s);
void ckpt_secondary_cancel(struct ckpt_secondary *s);
void ckpt_secondary_free(struct ckpt_secondary *s); /* accepts NULL */

/* The disks to replicate into (see opts.disks), from launch(): once the
 * VM's configuration is known. Borrowed; must outlive the engine. */
void ckpt_secondary_set_disks(struct ckpt_secondary *s,
                              struct ckpt_disk_stage *d);

/* After done(0): take the running VM; the engine no longer kills it. */
struct ckpt_vm *ckpt_secondary_take_vm(struct ckpt_secondary *s);

enum ckpt_secondary_state ckpt_secondary_state(const struct ckpt_secondary *s);
const char *ckpt_secondary_state_name(enum ckpt_secondary_state st);
void ckpt_secondary_get_stats(const struct ckpt_secondary *s,
                              struct ckpt_stats *ret);

/* Test hooks: the committed device-state blob and the memory backend
 * (ckpt_mem_qemu_ram() of it is the committed RAM in Remus mode). */
const uint8_t *ckpt_secondary_committed_devstate(const struct ckpt_secondary *s,
                                                 size_t *ret_len);
struct ckpt_memory *ckpt_secondary_memory(const struct ckpt_secondary *s);

#endif
