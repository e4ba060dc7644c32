/*
 * What the engines need from a running VM, behind one vtable: stop and
 * resume the guest, save its device state into a blob, and load a blob
 * (then resume). The one implementation drives QEMU's QMP client; Xen
 * domains are suspended and saved by xen_job.h, not through this vtable.
 *
 * Every operation is asynchronous and has a deadline (timeout_ms, given at
 * creation). Contract of each op:
 *   - returns < 0 when the request could not even be started; then the
 *     callback is NOT called;
 *   - otherwise the callback is called exactly once, from the loop (never
 *     from inside the op), with rc >= 0 on success or a negative code:
 *     a COLO_EQMP_* class when QEMU refused, -COLO_EQMP_DISCONNECTED or
 *     -COLO_EQEMU_DIED when QEMU went away, -ETIMEDOUT on the deadline;
 *   - one operation at a time per VM (the engines never overlap them);
 *   - ckpt_vm_free() with an operation pending cancels it silently (no
 *     callback).
 */
#ifndef COLO_CHECKPOINT_VM_H
#define COLO_CHECKPOINT_VM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct ckpt_vm;

typedef void ckpt_vm_done_fn(void *arg, int rc);
/* blob is consumed by the callee (free() it) and is NULL when rc < 0. */
typedef void ckpt_vm_saved_fn(void *arg, int rc, uint8_t *blob, size_t len);

struct ckpt_vm_ops {
    const char *name;
    /* Pause the guest's vCPUs (QEMU "stop"). */
    int (*stop)(struct ckpt_vm *vm, ckpt_vm_done_fn *cb, void *arg);
    /* Resume the guest's vCPUs (QEMU "cont"). */
    int (*cont)(struct ckpt_vm *vm, ckpt_vm_done_fn *cb, void *arg);
    /* Save the device state (guest paused) into a blob. */
    int (*save_devices)(struct ckpt_vm *vm, ckpt_vm_saved_fn *cb, void *arg);
    /* Load a device-state blob into a VM waiting for it (QEMU 7.2: started
     * with -S -incoming defer; works once per process), then resume the
     * guest. The blob is borrowed until the callback. */
    int (*load_devices_and_cont)(struct ckpt_vm *vm, const uint8_t *blob,
                                 size_t len, ckpt_vm_done_fn *cb, void *arg);
    /* Optional (NULL: not offered); a migrate's handover uses them.
     * save_devices_release: save_devices, and let go of the VM's disk
     * images (QEMU 7.2: xen-save-devices-state live:true on the stopped
     * VM inactivates its block devices, dropping their image locks); a
     * later cont takes them back. load_devices: load_devices_and_cont
     * without the cont: the guest stays paused and its disk images are
     * not opened for writing (QEMU: the late-block-activate migration
     * capability) until cont. */
    int (*save_devices_release)(struct ckpt_vm *vm, ckpt_vm_saved_fn *cb,
                                void *arg);
    int (*load_devices)(struct ckpt_vm *vm, const uint8_t *blob, size_t len,
                        ckpt_vm_done_fn *cb, void *arg);
    /* Forget the pending operation: its callback will not be called. The
     * operation itself may still take effect in the VM. */
    void (*cancel)(struct ckpt_vm *vm);
    /* Kill the VM's process (if it owns one) and release everything. */
    void (*free)(struct ckpt_vm *vm);
};

struct ckpt_vm {
    const struct ckpt_vm_ops *ops;
};

/* Accepts NULL. */
void ckpt_vm_free(struct ckpt_vm *vm);

/*
 * The QEMU implementation. It connects to QEMU's QMP socket at qmp_path
 * (QEMU already listening: started with a pre-opened QMP socket), waits for
 * the greeting and negotiates capabilities from the loop; operations issued
 * before that are queued. pid > 0: the VM owns that QEMU process and
 * SIGKILLs and reaps it in free(); pid <= 0: the caller owns the process.
 * timeout_ms: deadline of each operation (0: 10 s).
 */
int ckpt_vm_qemu_new(struct event_base *base, const char *qmp_path, pid_t pid,
                     unsigned timeout_ms, struct ckpt_vm **ret);

/*
 * The same over a QEMU launched with qmp_qemu_launch() (qmp/launch.h) and
 * already up: q is consumed (also on error); free() kills and reaps it.
 * Give the launch a client_opts.default_cmd_timeout_ms if you want QMP
 * deadlines below the guard timer.
 */
struct qmp_qemu;
int ckpt_vm_qemu_new_from_qemu(struct event_base *base, struct qmp_qemu *q,
                               unsigned timeout_ms, struct ckpt_vm **ret);

/* The QEMU process id, or -1 (not owned, or not a QEMU VM). */
pid_t ckpt_vm_qemu_pid(struct ckpt_vm *vm);

/* The VM's QMP client, for commands outside the ops above (device_add,
 * balloon, ...), or NULL for a VM that is not a QEMU VM. Owned by vm;
 * valid until ckpt_vm_free(). Do not set its event or close callback
 * (use qmp_client_add_hook for events). */
struct qmp_client;
struct qmp_client *ckpt_vm_qemu_client(struct ckpt_vm *vm);

#endif
