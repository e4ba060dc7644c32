/*
 * struct ckpt_vm over QEMU's QMP (qmp/): stop, cont, device-state save
 * (qmp_saver: one memfd + fdset for the VM's life) and the one-shot
 * device-state load. See checkpoint/vm.h for the contract.
 *
 * One operation at a time. Each has a guard timer here (the QMP commands
 * have their own deadlines too; whichever fires first reports). A late
 * QMP callback after the guard fired is ignored: op_seq tells them apart.
 */
#include "checkpoint/vm.h"

#include "common/error.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "qmp/devstate.h"
#include "qmp/launch.h"
#include "qmp/qmp.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum vmq_op {
    VMQ_NONE = 0,
    VMQ_STOP,
    VMQ_CONT,
    VMQ_SAVE,
    VMQ_LOAD,
};

struct vmq {
    struct ckpt_vm base;
    struct event_base *evb;
    struct qmp_client *c; /* owned unless q owns it */
    struct qmp_qemu *q;   /* owned, may be NULL */
    pid_t pid;            /* owned process when q == NULL, else -1 */
    struct qmp_saver *saver;
    unsigned timeout_ms;
    struct event *guard;

    enum vmq_op op;
    uint64_t op_seq; /* bumped per op; a callback checks its own */
    ckpt_vm_done_fn *done_cb;
    ckpt_vm_saved_fn *saved_cb;
    void *arg;
    struct vmq_tok *toks;
    /* A load issued before the QMP connection was up (the device-state
     * loader needs a negotiated client): started from connect_cb. */
    const uint8_t *pend_blob;
    size_t pend_len;
    bool pend_load;
    unsigned load_flags; /* QMP_LOAD_* of the load in flight */
};

static struct vmq *to_vmq(struct ckpt_vm *vm)
{
    return (struct vmq *)vm;
}

void ckpt_vm_free(struct ckpt_vm *vm)
{
    if (vm)
        vm->ops->free(vm);
}

/* Finish the current operation: the user callback is the last thing. */
static void op_finish(struct vmq *v, int rc, uint8_t *blob, size_t len)
{
    enum vmq_op op = v->op;
    ckpt_vm_done_fn *dcb = v->done_cb;
    ckpt_vm_saved_fn *scb = v->saved_cb;
    void *arg = v->arg;

    evtimer_del(v->guard);
    v->pend_load = false;
    v->op = VMQ_NONE;
    v->op_seq++;
    v->done_cb = NULL;
    v->saved_cb = NULL;
    if (op == VMQ_SAVE)
        scb(arg, rc, rc < 0 ? NULL : blob, rc < 0 ? 0 : len);
    else if (op != VMQ_NONE)
        dcb(arg, rc);
    if (rc < 0 && op == VMQ_SAVE)
        free(blob);
}

static void guard_cb(evutil_socket_t fd, short what, void *arg)
{
    struct vmq *v = arg;

    colo_err("QEMU operation %d: no answer within %u ms", (int)v->op,
             v->timeout_ms);
    op_finish(v, -ETIMEDOUT, NULL, 0);
}

static int op_begin(struct vmq *v, enum vmq_op op)
{
    struct timeval tv = colo_ms_to_tv(v->timeout_ms);

    if (v->op != VMQ_NONE)
        return -EBUSY;
    if (!v->c)
        return -ENOTCONN;
    v->op = op;
    v->op_seq++;
    evtimer_add(v->guard, &tv);
    return 0;
}

static void op_abort(struct vmq *v)
{
    v->pend_load = false;
    evtimer_del(v->guard);
    v->op = VMQ_NONE;
    v->op_seq++;
}

/* The seq travels in the pointer-sized arg of the QMP callbacks. Tokens
 * stay on v->toks until their callback runs (or the VM is freed: a freed
 * client or saver drops its callbacks silently). */
struct vmq_tok {
    struct vmq *v;
    uint64_t seq;
    struct vmq_tok *next;
};

static struct vmq_tok *tok_new(struct vmq *v)
{
    struct vmq_tok *t = malloc(sizeof(*t));

    if (t) {
        t->v = v;
        t->seq = v->op_seq;
        t->next = v->toks;
        v->toks = t;
    }
    return t;
}

/* Unlink and free t; returns whether it belonged to the current op. */
static bool tok_done(struct vmq_tok *t)
{
    struct vmq *v = t->v;
    struct vmq_tok **pp = &v->toks;
    bool current = t->seq == v->op_seq;

    while (*pp && *pp != t)
        pp = &(*pp)->next;
    if (*pp)
        *pp = t->next;
    free(t);
    return current;
}

static void reply_cb(struct qmp_client *c, int rc, json_t *ret,
                     const char *desc, void *arg)
{
    struct vmq_tok *t = arg;
    struct vmq *v = t->v;
    bool current = tok_done(t);

    if (!current)
        return;
    if (rc < 0)
        colo_err("QEMU %s failed: %s%s%s", v->op == VMQ_STOP ? "stop" : "cont",
                 colo_strerror(rc), desc ? ": " : "", desc ? desc : "");
    op_finish(v, rc, NULL, 0);
}

static int send_simple(struct vmq *v, enum vmq_op op, ckpt_vm_done_fn *cb,
                       void *arg)
{
    struct vmq_tok *t;
    int rc = op_begin(v, op);

    if (rc < 0)
        return rc;
    t = tok_new(v);
    if (!t) {
        op_abort(v);
        return -ENOMEM;
    }
    rc = qmp_send_ex(v->c, op == VMQ_STOP ? "stop" : "cont", NULL, -1,
                     v->timeout_ms, reply_cb, t, NULL, NULL);
    if (rc < 0) {
        tok_done(t);
        op_abort(v);
        return rc;
    }
    v->done_cb = cb;
    v->arg = arg;
    return 0;
}

static int vmq_stop(struct ckpt_vm *vm, ckpt_vm_done_fn *cb, void *arg)
{
    return send_simple(to_vmq(vm), VMQ_STOP, cb, arg);
}

static int vmq_cont(struct ckpt_vm *vm, ckpt_vm_done_fn *cb, void *arg)
{
    return send_simple(to_vmq(vm), VMQ_CONT, cb, arg);
}

static void saved_cb(struct qmp_client *c, int rc, uint8_t *blob, size_t len,
                     bool was_running, void *arg)
{
    struct vmq_tok *t = arg;
    struct vmq *v = t->v;
    bool current = tok_done(t);

    if (!current) {
        free(blob);
        return;
    }
    if (rc < 0)
        colo_err("QEMU device-state save failed: %s", colo_strerror(rc));
    op_finish(v, rc, blob, len);
}

static int vmq_save_flags(struct ckpt_vm *vm, unsigned flags,
                          ckpt_vm_saved_fn *cb, void *arg)
{
    struct vmq *v = to_vmq(vm);
    struct vmq_tok *t;
    int rc = op_begin(v, VMQ_SAVE);

    if (rc < 0)
        return rc;
    if (!v->saver) {
        rc = qmp_saver_new(v->c, &v->saver);
        if (rc < 0)
            goto fail;
    }
    t = tok_new(v);
    if (!t) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = qmp_saver_save(v->saver, QMP_SAVE_NO_STOP | flags, saved_cb, t);
    if (rc < 0) {
        tok_done(t);
        goto fail;
    }
    v->saved_cb = cb;
    v->arg = arg;
    return 0;
fail:
    op_abort(v);
    return rc;
}

static int vmq_save(struct ckpt_vm *vm, ckpt_vm_saved_fn *cb, void *arg)
{
    return vmq_save_flags(vm, 0, cb, arg);
}

static int vmq_save_release(struct ckpt_vm *vm, ckpt_vm_saved_fn *cb, void *arg)
{
    return vmq_save_flags(vm, QMP_SAVE_RELEASE_DISKS, cb, arg);
}

static void loaded_cb(struct qmp_client *c, int rc, enum qmp_loader loader,
                      void *arg)
{
    struct vmq_tok *t = arg;
    struct vmq *v = t->v;
    bool current = tok_done(t);

    if (!current)
        return;
    if (rc < 0)
        colo_err("QEMU device-state load (%s) failed: %s",
                 qmp_loader_name(loader), colo_strerror(rc));
    op_finish(v, rc, NULL, 0);
}

static int load_now(struct vmq *v, const uint8_t *blob, size_t len)
{
    struct vmq_tok *t = tok_new(v);
    int rc;

    if (!t)
        return -ENOMEM;
    rc = qmp_devstate_load(v->c, blob, len, v->load_flags, loaded_cb, t);
    if (rc < 0)
        tok_done(t);
    return rc;
}

static int vmq_load_flags(struct ckpt_vm *vm, const uint8_t *blob, size_t len,
                          unsigned flags, ckpt_vm_done_fn *cb, void *arg)
{
    struct vmq *v = to_vmq(vm);
    struct vmq_tok *t;
    int rc = op_begin(v, VMQ_LOAD);

    if (rc < 0)
        return rc;
    v->load_flags = flags;
    if (qmp_client_state(v->c) != QMP_CONNECTED) {
        v->pend_load = true;
        v->pend_blob = blob;
        v->pend_len = len;
        v->done_cb = cb;
        v->arg = arg;
        return 0;
    }
    t = tok_new(v);
    if (!t) {
        op_abort(v);
        return -ENOMEM;
    }
    rc = qmp_devstate_load(v->c, blob, len, flags, loaded_cb, t);
    if (rc < 0) {
        tok_done(t);
        op_abort(v);
        return rc;
    }
    v->done_cb = cb;
    v->arg = arg;
    return 0;
}

static int vmq_load(struct ckpt_vm *vm, const uint8_t *blob, size_t len,
                    ckpt_vm_done_fn *cb, void *arg)
{
    return vmq_load_flags(vm, blob, len, 0, cb, arg);
}

static int vmq_load_paused(struct ckpt_vm *vm, const uint8_t *blob, size_t len,
                           ckpt_vm_done_fn *cb, void *arg)
{
    return vmq_load_flags(vm, blob, len, QMP_LOAD_PAUSED, cb, arg);
}

static void vmq_cancel(struct ckpt_vm *vm)
{
    op_abort(to_vmq(vm));
}

static void vmq_free(struct ckpt_vm *vm)
{
    struct vmq *v = to_vmq(vm);

    /* Callbacks of pending QMP commands must not reach a freed vmq: the
     * client (owned here) is freed, which drops them all silently. */
    qmp_saver_free(v->saver);
    if (v->q) {
        qmp_qemu_free(v->q); /* kills and reaps QEMU, frees the client */
    } else {
        qmp_client_free(v->c);
        if (v->pid > 0) {
            kill(v->pid, SIGKILL);
            while (waitpid(v->pid, NULL, 0) < 0 && errno == EINTR)
                ;
        }
    }
    while (v->toks) {
        struct vmq_tok *t = v->toks;

        v->toks = t->next;
        free(t);
    }
    if (v->guard)
        event_free(v->guard);
    free(v);
}

static const struct ckpt_vm_ops vmq_ops = {
    .name = "qemu",
    .stop = vmq_stop,
    .cont = vmq_cont,
    .save_devices = vmq_save,
    .load_devices_and_cont = vmq_load,
    .save_devices_release = vmq_save_release,
    .load_devices = vmq_load_paused,
    .cancel = vmq_cancel,
    .free = vmq_free,
};

static void connect_cb(struct qmp_client *c, int rc, void *arg)
{
    struct vmq *v = arg;

    if (rc < 0)
        colo_err("QMP connect: %s", colo_strerror(rc));
    /* Queued commands fail with the same error by themselves. */
    if (v->pend_load && v->op == VMQ_LOAD) {
        v->pend_load = false;
        if (rc >= 0)
            rc = load_now(v, v->pend_blob, v->pend_len);
        if (rc < 0)
            op_finish(v, rc, NULL, 0);
    }
}

static int vmq_alloc(struct event_base *evb, unsigned timeout_ms,
                     struct vmq **ret)
{
    struct vmq *v = calloc(1, sizeof(*v));

    if (!v)
        return -ENOMEM;
    v->base.ops = &vmq_ops;
    v->evb = evb;
    v->pid = -1;
    v->timeout_ms = timeout_ms ? timeout_ms : 10000;
    v->guard = evtimer_new(evb, guard_cb, v);
    if (!v->guard) {
        free(v);
        return -ENOMEM;
    }
    *ret = v;
    return 0;
}

int ckpt_vm_qemu_new(struct event_base *base, const char *qmp_path, pid_t pid,
                     unsigned timeout_ms, struct ckpt_vm **ret)
{
    struct qmp_client_opts co = {0};
    struct vmq *v;
    int rc;

    *ret = NULL;
    rc = vmq_alloc(base, timeout_ms, &v);
    if (rc < 0)
        return rc;
    co.default_cmd_timeout_ms = v->timeout_ms;
    /* A QEMU slow to answer (a loaded host, nested TCG) gets the same
     * deadline for its greeting as for any command. */
    co.greeting_timeout_ms = v->timeout_ms;
    co.name = "ckpt";
    v->c = qmp_client_new(base, &co);
    if (!v->c) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = qmp_client_connect_path(v->c, qmp_path, connect_cb, v);
    if (rc < 0)
        goto fail;
    v->pid = pid;
    *ret = &v->base;
    return 0;
fail:
    vmq_free(&v->base); /* pid not yet owned: not killed */
    return rc;
}

int ckpt_vm_qemu_new_from_qemu(struct event_base *base, struct qmp_qemu *q,
                               unsigned timeout_ms, struct ckpt_vm **ret)
{
    struct vmq *v;
    int rc;

    *ret = NULL;
    rc = vmq_alloc(base, timeout_ms, &v);
    if (rc < 0) {
        qmp_qemu_free(q);
        return rc;
    }
    v->q = q;
    v->c = qmp_qemu_client(q);
    *ret = &v->base;
    return 0;
}

pid_t ckpt_vm_qemu_pid(struct ckpt_vm *vm)
{
    struct vmq *v;

    if (!vm || vm->ops != &vmq_ops)
        return -1;
    v = to_vmq(vm);
    return v->q ? qmp_qemu_pid(v->q) : v->pid;
}

struct qmp_client *ckpt_vm_qemu_client(struct ckpt_vm *vm)
{
    if (!vm || vm->ops != &vmq_ops)
        return NULL;
    return to_vmq(vm)->c;
}
