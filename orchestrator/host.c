/*
 * The VM host (see host.h): one colo process per VM per host.
 *
 * Layout: common plumbing, then ==== PRIMARY ROLE ==== (start, jobs), then
 * ==== SECONDARY ROLE ==== (receive/standby, takeover), then the control
 * socket dispatcher and the two entry points.
 */
#include "host.h"
#include "xen_migrate.h"

#include "config.h"
#include "ctl.h"
#include "dbus.h"
#include "netutil.h"
#include "qsave.h"
#include "orch.h"

#include "checkpoint/disk.h"
#include "checkpoint/primary.h"
#include "checkpoint/secondary.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "qmp/launch.h"
#include "checkpoint/outbuf.h"
#include "qmp/qmp.h"
#include "transport/link.h"

#include <errno.h>
#include <inttypes.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum host_state {
    HOST_LISTENING = 0,
    HOST_SECONDARY,
    HOST_RUNNING,
    HOST_JOB,
    HOST_EXITING,
};

static const char *const host_state_names[] = {
    "listening", "secondary", "running", "job", "exiting",
};

struct orch_host {
    struct event_base *base;
    struct orch_host_opts o;
    enum host_state state;
    int exit_code;

    char *state_dir;
    char *key; /* NUL-terminated shared key, NULL: plain */

    /* The VM. */
    struct orch_vm_config *cfg;
    char *cfg_json; /* canonical JSON, what travels in VM_CONFIG */
    char *name;
    char *vm_dir, *ram_path, *serial_path, *ctl_path;
    uint64_t ram_size;
    struct ckpt_vm *vm;
    struct ckpt_memory *mem;   /* primary role: the RAM file mapping */
    struct ckpt_disk_tee *tee; /* primary role: replicated disks' tee */
    struct orch_pidwatch *qemu_watch;
    struct orch_ctl_server *ctl;
    struct orch_dbus *dbus; /* the VM's private bus and helpers */

    /* Primary role: a migrate or protect job. */
    struct ckpt_primary *prim;
    struct ckpt_outbuf *outbuf; /* Remus output commit (NICs only) */
    enum ckpt_mode job_mode;
    struct orch_ctl_req *job_req;
    bool job_follow;
    bool job_acked; /* protect: first checkpoint acked */
    /* A client that draws a progress bar asked for "progress" events
     * every progress_ms while a migrate runs or a protect's first (full)
     * checkpoint is on its way; 0: none. */
    unsigned progress_ms;
    struct event *progress_timer;
    struct orch_connect *conn;
    char *peer;
    char *job_host;   /* while the helpers are checked */
    json_t *job_args; /* the last protect request, to re-pair */
    /* colo handover: the protect engine is being cancelled; then a
     * migrate to handover_to answers handover_req. */
    struct orch_ctl_req *handover_req;
    char *handover_to;

    /* A reconfiguration (mem-set, device-add, device-remove): one at a
     * time. While protected it runs between two pairings: cancel the
     * engine, change the VM and the configuration, re-pair (the new
     * secondary is launched from the new configuration). */
    struct {
        struct orch_ctl_req *req; /* NULL: none running */
        char op[16];
        json_t *args;
        struct orch_vm_config *next; /* the configuration once it worked */
        bool reprotect;
        bool wait_cancel;    /* the engine is being cancelled for it */
        int hook;            /* DEVICE_DELETED listener, 0: none */
        struct event *timer; /* device_del deadline */
    } rc_;
    uint16_t job_port;

    /* Secondary role. */
    struct evconnlistener *listener;
    struct ckpt_secondary *sec;
    struct ckpt_secondary *sec_retired; /* done(0): holds the link only */
    /* The secondary's disk stages, one per pairing (an engine borrows its
     * own; all freed with the host). */
    struct ckpt_disk_stage *stages[16];
    size_t n_stages;
    struct orch_xen_recv *xrecv; /* a Xen domain coming in */
    struct orch_child *fence;
    struct orch_connect *witness;
    int64_t took_over_from;

    /* colo save (primary role) and colo restore (start-up). */
    struct orch_ctl_req *save_req;
    char *save_path;
    bool save_continue;
    int rc_save_rc;
    struct orch_qsave_image img;
    bool restoring;
    struct ckpt_vm *restore_vm;

    /* Why colo left the guest paused, when it knows (status says it with
     * QEMU's own run state); NULL: it did not. */
    char *pause_note;

    struct event *sig_int, *sig_term;
    struct event *exit_timer;
    unsigned exit_polls;
};

/* Leave the loop once the final answers on the control socket have been
 * flushed (bounded: 50 x 10 ms). */
static void exit_check(evutil_socket_t fd, short what, void *arg)
{
    struct orch_host *h = arg;
    struct timeval tv = {0, 10000};

    if (orch_ctl_server_busy(h->ctl) == 0 || ++h->exit_polls > 50) {
        event_base_loopexit(h->base, NULL);
        return;
    }
    event_add(h->exit_timer, &tv);
}

static void host_exit(struct orch_host *h, int code)
{
    if (h->state == HOST_EXITING)
        return;
    h->state = HOST_EXITING;
    h->exit_code = code;
    h->exit_timer = evtimer_new(h->base, exit_check, h);
    if (!h->exit_timer) {
        event_base_loopexit(h->base, NULL);
        return;
    }
    exit_check(-1, 0, h);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct orch_host *h = arg;

    colo_info("signal %d: stopping", (int)sig);
    host_exit(h, ORCH_EXIT_OK);
}

static int read_key(const struct orch_host_opts *o, char **ret_key)
{
    uint8_t *key = NULL;
    size_t len = 0;
    char why[512];
    int rc;

    *ret_key = NULL;
    if (!o->key_file) {
        if (o->insecure || o->tls_creds)
            return 0;
        colo_err("no --key-file given: links are authenticated by "
                 "default (use --insecure to run without authentication)");
        return -COLO_ECONFIG;
    }
    rc = xprt_key_read_file(o->key_file, &key, &len, why, sizeof(why));
    if (rc < 0) {
        colo_err("key file %s", why);
        return rc;
    }
    if (memchr(key, '\0', len)) {
        colo_err("key file %s: must be text (no NUL bytes)", o->key_file);
        free(key);
        return -COLO_ECONFIG;
    }
    *ret_key = strndup((char *)key, len);
    explicit_bzero(key, len);
    free(key);
    return *ret_key ? 0 : -ENOMEM;
}

static void set_int(json_t *o, const char *k, int64_t v)
{
    json_object_set_new(o, k, json_integer((json_int_t)v));
}

static json_t *stats_json(const struct ckpt_stats *s)
{
    json_t *j = json_object();

    json_object_set_new(j, "role", json_string(ckpt_role_name(s->role)));
    json_object_set_new(j, "mode", json_string(ckpt_mode_name(s->mode)));
    json_object_set_new(j, "engine_state",
                        json_string(s->state ? s->state : ""));
    json_object_set_new(j, "protected", json_boolean(s->is_protected));
    json_object_set_new(j, "link_up", json_boolean(s->link_up));
    set_int(j, "last_committed", s->last_committed);
    set_int(j, "checkpoints", (int64_t)s->checkpoints);
    set_int(j, "forced_checkpoints", (int64_t)s->forced_checkpoints);
    set_int(j, "link_idle_ms", (int64_t)s->link_idle_ms);
    set_int(j, "pause_last_us", (int64_t)s->pause_last_us);
    set_int(j, "pause_p50_us", (int64_t)s->pause_p50_us);
    set_int(j, "pause_p99_us", (int64_t)s->pause_p99_us);
    set_int(j, "devstate_last_us", (int64_t)s->devstate_last_us);
    set_int(j, "scan_last_us", (int64_t)s->scan_last_us);
    set_int(j, "copy_last_us", (int64_t)s->copy_last_us);
    if (s->dirty_method)
        json_object_set_new(j, "dirty_method", json_string(s->dirty_method));
    set_int(j, "dirty_pages_last", (int64_t)s->dirty_pages_last);
    set_int(j, "dirty_pages_total", (int64_t)s->dirty_pages_total);
    set_int(j, "devstate_bytes_last", (int64_t)s->devstate_bytes_last);
    set_int(j, "bytes_sent", (int64_t)s->bytes_sent);
    set_int(j, "bytes_received", (int64_t)s->bytes_received);
    set_int(j, "rounds", s->rounds);
    set_int(j, "total_us", (int64_t)s->total_us);
    set_int(j, "downtime_us", (int64_t)s->downtime_us);
    return j;
}

/* The VM's files: <state>/<name>/{ram,serial.log}, <state>/<name>.sock */
static int host_set_vm(struct orch_host *h, struct orch_vm_config *cfg)
{
    int rc;

    h->cfg = cfg;
    h->name = strdup(orch_config_name(cfg));
    h->ram_size = orch_config_max_mb(cfg) << 20;
    rc = orch_config_generate(cfg, 0, &h->cfg_json, NULL);
    if (rc < 0)
        return rc;
    if (!h->name || asprintf(&h->vm_dir, "%s/%s", h->state_dir, h->name) < 0)
        return -ENOMEM;
    if (mkdir(h->vm_dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    if (asprintf(&h->ram_path, "%s/ram", h->vm_dir) < 0 ||
        asprintf(&h->serial_path, "%s/serial.log", h->vm_dir) < 0)
        return -ENOMEM;
    colo_log_set_vm(h->name);
    return orch_ctl_path(h->state_dir, h->name, &h->ctl_path);
}

static void ctl_handler(struct orch_ctl_req *req, const char *cmd, json_t *args,
                        void *arg);

static int host_open_ctl(struct orch_host *h)
{
    int rc;

    if (h->ctl)
        return 0;
    rc = orch_ctl_server_start(h->base, h->ctl_path, ctl_handler, h, &h->ctl);
    if (rc == -EADDRINUSE)
        colo_err("a colo process already runs VM '%s' here (%s)", h->name,
                 h->ctl_path);
    else if (rc < 0)
        colo_err("control socket %s: %s", h->ctl_path, colo_strerror(rc));
    return rc;
}

static void qemu_gone(void *arg)
{
    struct orch_host *h = arg;

    colo_err("QEMU (pid %d) exited; the VM is gone",
             (int)ckpt_vm_qemu_pid(h->vm));
    host_exit(h, ORCH_EXIT_QEMU);
}

/* Find dirty pages through QEMU's soft-dirty bits where the kernel has
 * them, else by the compare scan (checkpoint/memory.h).
 * COLO_DIRTY_LOG=compare keeps the scan; =verify checks the bits against
 * the scan at every capture (tests). */
static void host_track_dirty(struct orch_host *h, pid_t pid)
{
    const char *e = getenv("COLO_DIRTY_LOG");
    unsigned flags = 0;
    char why[256];
    int rc;

    if (e && strcmp(e, "compare") == 0)
        flags = CKPT_TRACK_COMPARE;
    else if (e && strcmp(e, "verify") == 0)
        flags = CKPT_TRACK_VERIFY;
    rc = ckpt_mem_qemu_track(h->mem, pid, flags, why, sizeof(why));
    if (rc > 0)
        colo_info("dirty pages: %s (QEMU pid %d)",
                  ckpt_mem_dirty_method(h->mem), (int)pid);
    else
        colo_info("dirty pages: compare scan (soft-dirty: %s)",
                  rc < 0 ? colo_strerror(rc) : why);
}

/* The guest runs here from now on: map its RAM for future jobs and
 * watch its QEMU. vm consumed. */
static int host_become_primary(struct orch_host *h, struct ckpt_vm *vm)
{
    pid_t pid;
    int rc;

    h->vm = vm;
    pid = ckpt_vm_qemu_pid(vm);
    if (pid > 0) {
        rc = orch_pidwatch_start(h->base, pid, qemu_gone, h, &h->qemu_watch);
        if (rc < 0)
            return rc;
    }
    rc =
        ckpt_mem_qemu_open(h->ram_path, h->ram_size, CKPT_MEM_PRIMARY, &h->mem);
    if (rc < 0) {
        colo_err("cannot map guest RAM %s: %s", h->ram_path, colo_strerror(rc));
        return rc;
    }
    if (pid > 0)
        host_track_dirty(h, pid);
    h->state = HOST_RUNNING;
    return 0;
}

/* Launch QEMU for h->cfg. */
struct launch_ctx {
    struct orch_host *h;
    bool secondary;
    char *ram_path;
};

static void launch_up(struct qmp_qemu *q, int rc, const char *status,
                      void *arg);

static int host_launch(struct orch_host *h, bool incoming, const char *ram_path)
{
    const char *accel = h->o.accel;
    struct orch_qemu_launch_params p = {
        .ram_path = ram_path,
        .serial_path = h->serial_path,
        .incoming_defer = incoming,
        .kvm = ORCH_KVM_DETECT,
    };
    struct qmp_launch_opts lo = {.name = h->name, .start_timeout_ms = 30000};
    struct launch_ctx *lc;
    struct qmp_qemu *q;
    char **argv = NULL;
    int rc;

    if (accel && strcmp(accel, "tcg") == 0)
        p.kvm = ORCH_KVM_NO;
    else if (accel && strcmp(accel, "kvm") == 0)
        p.kvm = ORCH_KVM_YES;
    if (!h->dbus) {
        struct orch_dbus_error de;

        /* The VM's helper processes on a private bus (docs/dbus.md):
         * bounded, and only at VM start. */
        rc = orch_dbus_start(
            h->vm_dir, json_object_get(orch_config_json(h->cfg), "helpers"),
            10000, &h->dbus, &de);
        if (rc < 0) {
            colo_err("helpers: %s", de.text);
            return rc;
        }
    }
    p.extra_args = orch_dbus_qemu_args(h->dbus);
    rc = orch_config_qemu_argv(h->cfg, &p, &argv);
    if (rc < 0) {
        colo_err("cannot build the QEMU command line: %s", colo_strerror(rc));
        return rc;
    }
    lc = calloc(1, sizeof(*lc));
    if (!lc || !(lc->ram_path = strdup(ram_path))) {
        free(lc);
        orch_config_argv_free(argv);
        return -ENOMEM;
    }
    lc->h = h;
    lc->secondary = incoming;
    rc = qmp_qemu_launch(h->base, argv, &lo, launch_up, lc, &q);
    orch_config_argv_free(argv);
    if (rc < 0) {
        colo_err("cannot start QEMU: %s", colo_strerror(rc));
        free(lc->ram_path);
        free(lc);
    }
    return rc;
}

static void secondary_launched(struct orch_host *h, int rc, struct ckpt_vm *vm,
                               const char *ram_path);

static void launch_up(struct qmp_qemu *q, int rc, const char *status, void *arg)
{
    struct launch_ctx *lc = arg;
    struct orch_host *h = lc->h;
    struct ckpt_vm *vm = NULL;

    if (rc < 0) {
        colo_err("QEMU failed to start: %s%s%s", colo_strerror(rc),
                 qmp_qemu_exited(q) ? ": " : "",
                 qmp_qemu_exited(q) ? qmp_qemu_describe_exit(q) : "");
        qmp_qemu_free(q);
    } else {
        colo_debug("QEMU pid %d up, status %s", (int)qmp_qemu_pid(q), status);
        rc = ckpt_vm_qemu_new_from_qemu(h->base, q, 10000, &vm);
    }
    if (lc->secondary) {
        secondary_launched(h, rc, vm, lc->ram_path);
    } else if (rc < 0) {
        host_exit(h, ORCH_EXIT_QEMU);
    } else if ((rc = host_become_primary(h, vm)) < 0) {
        host_exit(h, orch_exit_code(rc));
    } else {
        printf("colo: VM '%s' running (QEMU pid %d); control socket %s\n",
               h->name, (int)ckpt_vm_qemu_pid(h->vm), h->ctl_path);
        fflush(stdout);
    }
    free(lc->ram_path);
    free(lc);
}

/* ==================== PRIMARY ROLE ==================== */

/* "progress" events for a client's progress bar: the engine's statistics
 * (bytes_sent grows while a round is on the wire) and the RAM size, the
 * whole of a migrate's first round and of a protect's first checkpoint. */
static void progress_tick(evutil_socket_t fd, short what, void *arg)
{
    struct orch_host *h = arg;
    struct ckpt_stats st;
    json_t *j;

    (void)fd;
    (void)what;
    if (!h->job_req || !h->prim ||
        (h->job_mode != CKPT_MODE_MIGRATE && h->job_acked)) {
        evtimer_del(h->progress_timer);
        return;
    }
    ckpt_primary_get_stats(h->prim, &st);
    j = stats_json(&st);
    json_object_set_new(j, "event", json_string("progress"));
    set_int(j, "ram_bytes", (int64_t)h->ram_size);
    orch_ctl_req_event(h->job_req, j);
    json_decref(j);
}

static void progress_start(struct orch_host *h, unsigned ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    if (!ms)
        return;
    if (!h->progress_timer)
        h->progress_timer =
            event_new(h->base, -1, EV_PERSIST, progress_tick, h);
    if (h->progress_timer)
        evtimer_add(h->progress_timer, &tv);
}

static void job_finish(struct orch_host *h, int rc, const char *msg,
                       json_t *result)
{
    if (h->progress_timer)
        evtimer_del(h->progress_timer);
    if (h->job_req) {
        orch_ctl_req_finish(h->job_req, rc, msg, result);
        h->job_req = NULL;
    } else {
        json_decref(result);
    }
}

/* The disk tee of a protect job (checkpoint/disk.h); after the engine is
 * freed (it borrows the tee). */
static void disks_end(struct orch_host *h)
{
    if (!h->tee)
        return;
    ckpt_disk_tee_detach(h->tee, ckpt_vm_qemu_client(h->vm));
    ckpt_disk_tee_free(h->tee);
    h->tee = NULL;
}

static void disks_want_checkpoint(void *arg)
{
    struct orch_host *h = arg;

    if (h->prim)
        ckpt_primary_checkpoint_now(h->prim);
}

/* Every disk with "replicate": true joins the checkpoints. */
static int disks_start(struct orch_host *h, enum ckpt_mode mode)
{
    struct ckpt_disk_cfg d[XPRT_DISK_MAX];
    size_t n = 0;

    disks_end(h);
    for (size_t i = 0; i < orch_config_disk_count(h->cfg); i++) {
        const char *id, *path;
        bool rep;

        if (orch_config_disk_get(h->cfg, i, &id, &path, &rep) == 0 && rep &&
            n < XPRT_DISK_MAX) {
            d[n].id = id;
            d[n].path = path;
            n++;
        }
    }
    if (!n)
        return 0;
    if (mode != CKPT_MODE_REMUS) {
        colo_err("replicated disks need --mode remus (COLO mode has no "
                 "overlay for the secondary's running copy yet)");
        return -ENOTSUP;
    }
    return ckpt_disk_tee_new(h->base, d, n, h->state_dir, disks_want_checkpoint,
                             h, &h->tee);
}

/* End output commit: every held epoch leaves, in order. */
static void outbuf_end(struct orch_host *h)
{
    if (!h->outbuf)
        return;
    ckpt_outbuf_release_all(h->outbuf);
    ckpt_outbuf_free(h->outbuf);
    h->outbuf = NULL;
}

static void outbuf_want_checkpoint(void *arg)
{
    struct orch_host *h = arg;

    if (h->prim)
        ckpt_primary_checkpoint_now(h->prim);
}

static void outbuf_failed(void *arg, int rc)
{
    struct orch_host *h = arg;

    colo_err("output commit failed (%s): the guest's output can no longer "
             "be held; ending protection and releasing what is held",
             colo_strerror(rc));
    outbuf_end(h);
    if (h->prim)
        ckpt_primary_cancel(h->prim);
}

static int prim_paused(void *arg, uint64_t n)
{
    struct orch_host *h = arg;

    return h->outbuf ? ckpt_outbuf_epoch(h->outbuf, n) : 0;
}

/* Remus with NICs: hold each epoch's output until its checkpoint is
 * acked (checkpoint/outbuf.h). */
static int outbuf_start(struct orch_host *h)
{
    size_t n = orch_config_nic_count(h->cfg);
    const char *ids[ORCH_CONFIG_MAX_NICS];
    struct ckpt_outbuf_opts oo = {
        .dir = h->vm_dir,
        .netdevs = ids,
        .n_netdevs = n,
        .want_checkpoint = outbuf_want_checkpoint,
        .failed = outbuf_failed,
        .arg = h,
    };
    struct qmp_client *c = ckpt_vm_qemu_client(h->vm);

    outbuf_end(h);
    if (n == 0)
        return 0;
    if (!c)
        return -EOPNOTSUPP;
    for (size_t i = 0; i < n; i++)
        ids[i] = orch_config_nic_id(h->cfg, i);
    return ckpt_outbuf_new(h->base, c, &oo, &h->outbuf);
}

static json_t *outbuf_json(struct orch_host *h)
{
    struct ckpt_outbuf_stats os;

    if (!h->outbuf)
        return NULL;
    ckpt_outbuf_get_stats(h->outbuf, &os);
    return json_pack("{s:I,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "held_packets",
                     (json_int_t)os.held, "held_epochs", (int)os.epochs_held,
                     "released_packets", (json_int_t)os.released,
                     "dropped_packets", (json_int_t)os.dropped,
                     "early_checkpoints", (json_int_t)os.early, "errors",
                     (json_int_t)os.errors, "release_delay_p50_us",
                     (json_int_t)os.delay_p50_us, "release_delay_p99_us",
                     (json_int_t)os.delay_p99_us, "release_delay_max_us",
                     (json_int_t)os.delay_max_us);
}

static void prim_event(void *arg, const struct ckpt_event *ev)
{
    struct orch_host *h = arg;
    json_t *j = stats_json(ev->stats);

    json_object_set_new(j, "event", json_string(ckpt_event_name(ev->type)));
    json_object_set_new(j, "ckpt", json_integer(ev->ckpt));
    if (ev->rc < 0) {
        json_object_set_new(j, "error", json_string(colo_strerror(ev->rc)));
        json_object_set_new(j, "code", json_string(colo_errname(ev->rc)));
    }
    if (h->job_req)
        orch_ctl_req_event(h->job_req, j);
    switch (ev->type) {
    case CKPT_EV_CHECKPOINT:
        colo_log_set_checkpoint(ev->ckpt);
        if (h->outbuf)
            ckpt_outbuf_commit(h->outbuf, (uint64_t)ev->ckpt);
        if (!h->job_acked) {
            h->job_acked = true;
            colo_info("VM protected: checkpoint %lld acked by %s",
                      (long long)ev->ckpt, h->peer);
            if (!h->job_follow)
                job_finish(h, 0, NULL, json_incref(j));
        }
        break;
    case CKPT_EV_UNPROTECTED:
        colo_warn("VM is UNPROTECTED: the secondary %s is gone (%s); the "
                  "guest runs on here",
                  h->peer, colo_strerror(ev->rc));
        /* Nothing is held any more: what the guest sent goes out. */
        outbuf_end(h);
        job_finish(h, ev->rc, "the secondary is gone: VM unprotected", NULL);
        break;
    case CKPT_EV_ROUND:
        break;
    default:
        break;
    }
    json_decref(j);
}

static void reconf_apply(struct orch_host *h);
static void start_job(struct orch_host *h, struct orch_ctl_req *req, json_t *a);

/* colo handover, second half: protection has ended (the guest runs on
 * here); move it to the peer with a migrate, whose result answers the
 * request. The peer's standby went back to listening when the pairing
 * ended on purpose, and takes the migrate. */
static void handover_migrate(struct orch_host *h)
{
    struct orch_ctl_req *req = h->handover_req;
    json_t *a =
        json_pack("{s:s, s:s}", "target", h->handover_to, "mode", "migrate");

    h->handover_req = NULL;
    colo_info("handover: protection ended; migrating to %s", h->handover_to);
    if (!a) {
        orch_ctl_req_finish(req, -ENOMEM, NULL, NULL);
        return;
    }
    start_job(h, req, a);
    json_decref(a);
}

static void prim_done(void *arg, int rc, const struct ckpt_stats *st)
{
    struct orch_host *h = arg;
    json_t *res = stats_json(st);
    enum ckpt_mode mode = h->job_mode;

    outbuf_end(h);
    ckpt_primary_free(h->prim);
    h->prim = NULL;
    disks_end(h);
    if (h->state == HOST_JOB)
        h->state = HOST_RUNNING;
    if (h->rc_.wait_cancel) {
        /* Protection was ended for a reconfiguration: go on with it. */
        h->rc_.wait_cancel = false;
        job_finish(h, -COLO_ECANCELLED,
                   "protection is re-paired after a reconfiguration", NULL);
        json_decref(res);
        reconf_apply(h);
        return;
    }
    if (h->handover_req) {
        job_finish(h, -COLO_ECANCELLED, "the VM is being handed over", NULL);
        json_decref(res);
        handover_migrate(h);
        return;
    }
    if (mode == CKPT_MODE_MIGRATE && rc == 0) {
        colo_info("migrated to %s: total %.1f ms, downtime %.1f ms, "
                  "%u rounds, %llu bytes",
                  h->peer, st->total_us / 1000.0, st->downtime_us / 1000.0,
                  st->rounds, (unsigned long long)st->bytes_sent);
        json_object_set_new(res, "peer", json_string(h->peer));
        job_finish(h, 0, NULL, res);
        /* The guest runs on the destination: this copy is done. */
        host_exit(h, ORCH_EXIT_OK);
        return;
    }
    if (rc < 0 && rc != -COLO_ECANCELLED) {
        colo_err("%s to %s failed: %s", ckpt_mode_name(mode), h->peer,
                 colo_strerror(rc));
        free(h->pause_note);
        if (asprintf(&h->pause_note,
                     "%s to %s failed (%s) and colo could not resume it",
                     ckpt_mode_name(mode), h->peer, colo_strerror(rc)) < 0)
            h->pause_note = NULL;
    }
    job_finish(h, rc, NULL, rc < 0 ? NULL : res);
    if (rc < 0)
        json_decref(res);
}

struct job_args {
    enum ckpt_mode mode;
    char *host;
    uint16_t port;
    unsigned interval_ms, downtime_ms, max_rounds;
    uint64_t max_checkpoints;
};

static void job_connected(void *arg, int fd_or_rc)
{
    struct orch_host *h = arg;
    int rc = fd_or_rc;

    h->conn = NULL;
    if (rc >= 0)
        rc = ckpt_primary_start(h->prim, fd_or_rc);
    if (rc < 0) {
        colo_err("cannot reach %s: %s", h->peer, colo_strerror(rc));
        outbuf_end(h);
        ckpt_primary_free(h->prim);
        h->prim = NULL;
        disks_end(h);
        h->state = HOST_RUNNING;
        job_finish(h, rc, NULL, NULL);
    }
}

static void job_helpers_checked(struct orch_dbus *d, int rc,
                                const struct orch_dbus_error *err, void *arg)
{
    struct orch_host *h = arg;
    char *host = h->job_host;
    const char *msg = NULL;

    (void)d;
    h->job_host = NULL;
    if (rc == 0) {
        rc = orch_connect_start(h->base, host, h->job_port, 10000,
                                job_connected, h, &h->conn);
    } else {
        msg = err->text;
        colo_err("helpers: %s", msg);
    }
    free(host);
    if (rc < 0) {
        outbuf_end(h);
        ckpt_primary_free(h->prim);
        h->prim = NULL;
        disks_end(h);
        h->state = HOST_RUNNING;
        job_finish(h, rc, msg, NULL);
    }
}

/* Answer a job request; a job restarted by colo itself has none. */
static void job_reply(struct orch_host *h, struct orch_ctl_req *req, int rc,
                      const char *msg, json_t *result)
{
    (void)h;
    if (req) {
        orch_ctl_req_finish(req, rc, msg, result);
        return;
    }
    json_decref(result);
    if (rc < 0)
        colo_err("re-protect: %s", msg ? msg : colo_strerror(rc));
}

static void start_job(struct orch_host *h, struct orch_ctl_req *req, json_t *a)
{
    struct ckpt_primary_opts po = {0};
    struct ckpt_primary_cbs cbs = {.event = prim_event, .done = prim_done};
    const char *target = json_string_value(json_object_get(a, "target"));
    const char *mode = json_string_value(json_object_get(a, "mode"));
    char *host = NULL;
    uint16_t port;
    int rc;

    if (h->state == HOST_JOB && h->prim &&
        ckpt_primary_state(h->prim) == CKPT_P_UNPROTECTED) {
        /* Re-pair after the secondary was lost: a fresh engine, whose
         * first checkpoint is a full sync. */
        outbuf_end(h);
        ckpt_primary_free(h->prim);
        h->prim = NULL;
        disks_end(h);
        h->state = HOST_RUNNING;
    }
    if (h->state == HOST_JOB) {
        job_reply(h, req, -EBUSY, "a migrate or protect job is already running",
                  NULL);
        return;
    }
    if (h->state != HOST_RUNNING) {
        job_reply(h, req, -EBUSY, "the VM is not running here", NULL);
        return;
    }
    rc = ckpt_mode_parse(mode ? mode : "migrate", &po.mode);
    if (rc < 0 || !target ||
        orch_parse_hostport(target, ORCH_DEFAULT_PORT, &host, &port) < 0) {
        job_reply(h, req, -EINVAL, "bad target or mode", NULL);
        return;
    }
    if (po.mode == CKPT_MODE_COLO && orch_config_nic_count(h->cfg) > 0) {
        /* Its secondary runs the guest too: with the same NICs its
         * output would reach the world uncompared. */
        free(host);
        job_reply(h, req, -EOPNOTSUPP,
                  "COLO mode does not compare network output yet "
                  "(docs/output.md): protect a VM with NICs in Remus mode",
                  NULL);
        return;
    }
    if (po.mode == CKPT_MODE_COLO) {
        char why[512];

        rc = orch_config_colo_disks_check(h->cfg, why, sizeof(why));
        if (rc < 0) {
            colo_err("protect: %s", why);
            free(host);
            job_reply(h, req, rc, why, NULL);
            return;
        }
    }
    free(h->peer);
    free(h->pause_note);
    h->pause_note = NULL;
    if (asprintf(&h->peer, "%s:%u", host, port) < 0)
        h->peer = NULL;
    po.vm_name = h->name;
    po.vm_config = h->cfg_json;
    po.ram_size = h->ram_size;
    po.link.auth_key = h->key;
    po.link.tls_creds = h->o.tls_creds;
    po.link.heartbeat_ms = h->o.heartbeat_ms;
    po.link.timeout_ms = h->o.timeout_ms;
    po.interval_ms =
        (unsigned)json_integer_value(json_object_get(a, "interval_ms"));
    po.downtime_ms =
        (unsigned)json_integer_value(json_object_get(a, "downtime_ms"));
    po.max_rounds =
        (unsigned)json_integer_value(json_object_get(a, "max_rounds"));
    po.max_checkpoints =
        (uint64_t)json_integer_value(json_object_get(a, "max_checkpoints"));
    if (po.mode != CKPT_MODE_MIGRATE) {
        rc = disks_start(h, po.mode);
        if (rc < 0) {
            colo_err("disks: %s", colo_strerror(rc));
            goto fail;
        }
        po.disks = h->tee;
    }
    if (po.mode == CKPT_MODE_REMUS) {
        rc = outbuf_start(h);
        if (rc < 0) {
            colo_err("output commit: %s", colo_strerror(rc));
            goto fail;
        }
        if (h->outbuf)
            cbs.paused = prim_paused;
    }
    rc = ckpt_primary_new(h->base, &po, h->mem, h->vm, &cbs, h, &h->prim);
    if (rc < 0) {
        outbuf_end(h);
        goto fail;
    }
    h->job_mode = po.mode;
    if (po.mode != CKPT_MODE_MIGRATE) {
        /* Kept to re-pair after a reconfiguration (reconf_*). */
        json_decref(h->job_args);
        h->job_args = json_deep_copy(a);
        json_object_set_new(h->job_args, "follow", json_false());
    }
    h->job_req = req;
    h->job_follow = json_is_true(json_object_get(a, "follow"));
    h->job_acked = false;
    if (req) {
        json_int_t pms = json_integer_value(json_object_get(a, "progress_ms"));

        /* 50 ms .. 10 s; anything else: no progress events. */
        h->progress_ms = pms >= 50 && pms <= 10000 ? (unsigned)pms : 0;
        progress_start(h, h->progress_ms);
    }
    h->state = HOST_JOB;
    colo_info("%s to %s",
              po.mode == CKPT_MODE_MIGRATE ? "migrating" : "protecting",
              h->peer);
    if (orch_dbus_active(h->dbus)) {
        /* Every helper must answer Save in time and within QEMU's limit
         * before the first checkpoint, or the checkpoint would silently
         * lack its state (docs/dbus.md). */
        h->job_host = host;
        h->job_port = port;
        rc = orch_dbus_check_start(h->dbus, h->base, ORCH_DBUS_CHECK_SAVE, 2000,
                                   job_helpers_checked, h);
        if (rc == 0)
            return;
        h->job_host = NULL;
    } else {
        rc = orch_connect_start(h->base, host, port, 10000, job_connected, h,
                                &h->conn);
    }
    if (rc < 0) {
        outbuf_end(h);
        ckpt_primary_free(h->prim);
        h->prim = NULL;
        disks_end(h);
        h->job_req = NULL;
        h->state = HOST_RUNNING;
        goto fail;
    }
    free(host);
    return;
fail:
    if (!h->prim)
        disks_end(h);
    free(host);
    job_reply(h, req, rc, NULL, NULL);
}

/* ==================== SECONDARY ROLE ==================== */

/* The replicated disks: this host's own images (--disk ID=PATH, else the
 * primary's path on this host) into cfg (QEMU opens them) and a stage the
 * engine applies checkpoints to (checkpoint/disk.h). */
static int sec_disks(struct orch_host *h, struct ckpt_secondary *s,
                     struct orch_vm_config *cfg)
{
    struct ckpt_disk_cfg d[XPRT_DISK_MAX];
    struct ckpt_disk_stage *st;
    size_t n = 0;
    int rc;

    for (size_t i = 0; i < h->o.n_disk_map; i++) {
        const char *m = h->o.disk_map[i], *eq = strchr(m, '=');
        char id[XPRT_DISK_ID_MAX + 1];

        snprintf(id, sizeof(id), "%.*s", (int)(eq - m), m);
        rc = orch_config_disk_set_path(cfg, id, eq + 1);
        if (rc == -ENOENT)
            colo_warn("--disk %s: the VM has no disk '%s'", m, id);
        else if (rc < 0)
            return rc;
    }
    for (size_t i = 0; i < orch_config_disk_count(cfg); i++) {
        const char *id, *path;
        bool rep;

        if (orch_config_disk_get(cfg, i, &id, &path, &rep) == 0 && rep &&
            n < XPRT_DISK_MAX) {
            d[n].id = id;
            d[n].path = path;
            n++;
        }
    }
    if (!n)
        return 0;
    if (h->n_stages == sizeof(h->stages) / sizeof(h->stages[0])) {
        colo_err("too many pairings with replicated disks in one process");
        return -ENOSPC;
    }
    rc = ckpt_disk_stage_new(d, n, &st);
    if (rc < 0)
        return rc;
    h->stages[h->n_stages++] = st;
    ckpt_secondary_set_disks(s, st);
    return 0;
}

static int sec_launch(void *arg, struct ckpt_secondary *s,
                      const struct ckpt_launch_req *req)
{
    struct orch_host *h = arg;
    struct orch_vm_config *cfg = NULL;
    struct orch_config_error err;
    int rc;

    if (!req->standby) {
        if (!req->vm_config) {
            colo_err("the primary sent no VM configuration");
            return -COLO_ECONFIG;
        }
        rc = orch_config_parse_string(req->vm_config, strlen(req->vm_config),
                                      "peer", &cfg, &err);
        if (rc < 0) {
            colo_err("configuration from the primary: %s", err.text);
            return rc;
        }
        if ((orch_config_max_mb(cfg) << 20) != req->ram_size) {
            colo_err("configuration says %llu MiB, HELLO says %llu bytes",
                     (unsigned long long)orch_config_max_mb(cfg),
                     (unsigned long long)req->ram_size);
            orch_config_free(cfg);
            return -COLO_ECONFIG;
        }
        if (h->cfg) {
            /* A new primary after a lost one: start afresh. */
            orch_config_free(h->cfg);
            h->cfg = NULL;
            free(h->cfg_json);
            free(h->name);
            free(h->vm_dir);
            free(h->ram_path);
            free(h->serial_path);
            free(h->ctl_path);
            h->cfg_json = h->name = h->vm_dir = h->ram_path = NULL;
            h->serial_path = h->ctl_path = NULL;
            orch_ctl_server_free(h->ctl);
            h->ctl = NULL;
            orch_dbus_free(h->dbus);
            h->dbus = NULL;
        }
        rc = sec_disks(h, s, cfg);
        if (rc < 0) {
            orch_config_free(cfg);
            return rc;
        }
        rc = host_set_vm(h, cfg);
        if (rc < 0)
            return rc;
        rc = host_open_ctl(h);
        if (rc < 0)
            return rc;
        unlink(h->ram_path); /* a fresh image for a fresh pairing */
    }
    (void)s;
    colo_info("launching %sQEMU for '%s' (%s, %llu MiB)",
              req->standby ? "a standby " : "", h->name,
              ckpt_mode_name(req->mode),
              (unsigned long long)(req->ram_size >> 20));
    return host_launch(h, true, req->ram_path ? req->ram_path : h->ram_path);
}

static void restore_loaded(void *arg, int rc);

static void secondary_launched(struct orch_host *h, int rc, struct ckpt_vm *vm,
                               const char *ram_path)
{
    if (h->restoring) {
        /* colo restore: the saved device state into the waiting QEMU. */
        if (rc == 0) {
            h->restore_vm = vm;
            rc = vm->ops->load_devices_and_cont(vm, h->img.dev, h->img.dev_len,
                                                restore_loaded, h);
        }
        if (rc < 0) {
            colo_err("restore: %s", colo_strerror(rc));
            host_exit(h, orch_exit_code(rc));
        }
        return;
    }
    if (!h->sec) {
        ckpt_vm_free(vm);
        return;
    }
    ckpt_secondary_launch_done(h->sec, rc, rc < 0 ? NULL : vm, ram_path);
}

static void takeover_answer(struct orch_host *h, bool ok, const char *why)
{
    if (ok)
        colo_warn("primary lost; %s: taking over", why);
    else
        colo_warn("primary lost; %s: NOT taking over automatically; run "
                  "'colo failover %s' once the primary is known dead",
                  why, h->name);
    if (h->sec)
        ckpt_secondary_takeover_answer(h->sec, ok);
}

static void fence_done(void *arg, int st)
{
    struct orch_host *h = arg;
    char why[128];

    h->fence = NULL;
    if (st < 0)
        snprintf(why, sizeof(why), "fence command: %s", colo_strerror(st));
    else
        snprintf(why, sizeof(why), "fence command exited %d",
                 WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    takeover_answer(h, st == 0, why);
}

static void witness_done(void *arg, int fd_or_rc)
{
    struct orch_host *h = arg;
    int fd = fd_or_rc;

    h->witness = NULL;
    if (fd >= 0)
        colo_close(&fd);
    takeover_answer(h, fd_or_rc >= 0,
                    fd_or_rc >= 0 ? "witness reachable"
                                  : "witness unreachable");
}

static long long s_last_committed(struct orch_host *h)
{
    struct ckpt_stats st;

    if (!h->sec)
        return -1;
    ckpt_secondary_get_stats(h->sec, &st);
    return (long long)st.last_committed;
}

static int sec_may_takeover(void *arg, struct ckpt_secondary *s, int why)
{
    struct orch_host *h = arg;
    char *host = NULL;
    uint16_t port;
    int rc;

    (void)s;
    colo_warn("primary lost: %s", colo_strerror(why));
    if (h->o.takeover_cluster) {
        /* The cluster manager decides (it fences the old primary, then
         * promotes this copy with 'colo failover'): no answer from here;
         * the engine waits in Lost. */
        colo_warn("primary lost; waiting for the cluster to promote this "
                  "copy (last committed checkpoint %lld)",
                  (long long)s_last_committed(h));
        return 0;
    }
    if (h->o.fence_cmd)
        return orch_child_start(h->base, h->o.fence_cmd,
                                h->o.fence_timeout_ms ? h->o.fence_timeout_ms
                                                      : 10000,
                                fence_done, h, &h->fence);
    if (h->o.witness) {
        rc = orch_parse_hostport(h->o.witness, 0, &host, &port);
        if (rc == 0)
            rc = orch_connect_start(h->base, host, port, 2000, witness_done, h,
                                    &h->witness);
        free(host);
        return rc;
    }
    /* No tie-breaker: refuse from the loop (answers are never synchronous
     * with the question). */
    return orch_child_start(h->base, "exit 1", 1000, fence_done, h, &h->fence);
}

static void sec_event(void *arg, const struct ckpt_event *ev)
{
    struct orch_host *h = arg;

    switch (ev->type) {
    case CKPT_EV_PAIRED:
        colo_info("paired with the primary (%s)",
                  ckpt_mode_name(ev->stats->mode));
        break;
    case CKPT_EV_CHECKPOINT:
        colo_log_set_checkpoint(ev->ckpt);
        if (ev->ckpt % 50 == 0)
            colo_info("checkpoint %lld committed", (long long)ev->ckpt);
        else
            colo_debug("checkpoint %lld committed", (long long)ev->ckpt);
        break;
    case CKPT_EV_TAKEOVER:
        h->took_over_from = ev->ckpt;
        colo_warn("taking over: resuming the guest from committed "
                  "checkpoint %lld",
                  (long long)ev->ckpt);
        break;
    default:
        break;
    }
}

static void sec_done(void *arg, int rc, const struct ckpt_stats *st)
{
    struct orch_host *h = arg;
    struct ckpt_vm *vm = NULL;

    (void)st;
    if (rc == 0) {
        vm = ckpt_secondary_take_vm(h->sec);
        /* The engine keeps the link until the source has read the final
         * ACK (migrate); it is freed with the host. */
        h->sec_retired = h->sec;
    } else {
        ckpt_secondary_free(h->sec);
    }
    h->sec = NULL;
    orch_child_cancel(h->fence);
    h->fence = NULL;
    orch_connect_cancel(h->witness);
    h->witness = NULL;
    if (rc == 0) {
        if (h->listener) {
            evconnlistener_free(h->listener);
            h->listener = NULL;
        }
        rc = host_become_primary(h, vm);
        if (rc < 0) {
            host_exit(h, orch_exit_code(rc));
            return;
        }
        printf("colo: VM '%s' now runs here (QEMU pid %d)%s\n", h->name,
               (int)ckpt_vm_qemu_pid(h->vm),
               h->took_over_from >= 0 ? " after failover" : "");
        fflush(stdout);
        return;
    }
    colo_err("%s failed: %s", h->o.standby ? "standby" : "receive",
             colo_strerror(rc));
    if (!h->o.standby) {
        host_exit(h, orch_exit_code(rc));
        return;
    }
    colo_info("waiting for a primary again");
    h->state = HOST_LISTENING;
    evconnlistener_enable(h->listener);
}

static void xen_received(void *arg, int rc, const char *why, uint32_t domid)
{
    struct orch_host *h = arg;

    if (rc < 0 && h->o.standby) {
        /* As for a QEMU VM: the standby waits for a primary again. */
        if (rc == -COLO_ECANCELLED)
            colo_info("Xen domain: %s", why);
        else
            colo_err("Xen standby: %s", why);
        orch_xen_recv_free(h->xrecv); /* allowed inside done */
        h->xrecv = NULL;
        colo_info("waiting for a primary again");
        h->state = HOST_LISTENING;
        if (h->listener)
            evconnlistener_enable(h->listener);
        return;
    }
    if (rc < 0) {
        colo_err("receiving the Xen domain failed: %s", why);
        host_exit(h, orch_exit_code(rc));
        return;
    }
    if (why && why[0])
        printf("colo: %s\n", why);
    else
        printf("colo: Xen domain %" PRIu32 " now runs here%s\n", domid,
               h->o.standby ? " after failover" : "");
    fflush(stdout);
    host_exit(h, ORCH_EXIT_OK);
}

/* The primary offers a Xen domain: xen_migrate.c takes it from here. The
 * secondary engine has ended; it is freed with the host. */
static void sec_xen_incoming(void *arg, struct ckpt_secondary *s,
                             struct xprt_link *link, uint32_t flags,
                             const char *name, const char *config)
{
    struct orch_host *h = arg;
    struct orch_xen_recv_opts xo = {.standby = h->o.standby,
                                    .fence_cmd = h->o.fence_cmd,
                                    .fence_timeout_ms = h->o.fence_timeout_ms,
                                    .witness = h->o.witness};
    int rc;

    ckpt_secondary_free(h->sec_retired); /* an earlier pairing's */
    h->sec_retired = s;
    h->sec = NULL;
    if (h->listener)
        evconnlistener_disable(h->listener);
    rc = orch_xen_recv_start(h->base, link, &xo, flags, name, config,
                             xen_received, h, &h->xrecv);
    if (rc < 0) {
        colo_err("receiving a Xen domain: %s", colo_strerror(rc));
        host_exit(h, orch_exit_code(rc));
    }
}

static void sec_accept(struct evconnlistener *l, evutil_socket_t fd,
                       struct sockaddr *sa, int socklen, void *arg)
{
    struct orch_host *h = arg;
    struct ckpt_secondary_opts so = {0};
    struct ckpt_secondary_cbs cbs = {
        .launch = sec_launch,
        .may_takeover = sec_may_takeover,
        .event = sec_event,
        .done = sec_done,
    };
    int rc;

    (void)sa;
    (void)socklen;
    if (h->sec) {
        close(fd); /* one primary at a time */
        return;
    }
    colo_fd_set_cloexec(fd, 1);
    cbs.xen_incoming = sec_xen_incoming;
    so.link.auth_key = h->key;
    so.link.tls_creds = h->o.tls_creds;
    so.link.heartbeat_ms = h->o.heartbeat_ms;
    so.link.timeout_ms = h->o.timeout_ms;
    h->took_over_from = -1;
    rc = ckpt_secondary_new(h->base, &so, &cbs, h, &h->sec);
    if (rc == 0) {
        rc = ckpt_secondary_start(h->sec, fd);
    } else {
        close(fd);
    }
    if (rc < 0) {
        colo_err("cannot start the secondary: %s", colo_strerror(rc));
        ckpt_secondary_free(h->sec);
        h->sec = NULL;
        return;
    }
    evconnlistener_disable(l);
    h->state = HOST_SECONDARY;
}

/* ==================== SAVE AND RESTORE (QEMU) ==================== */

static void save_finish(struct orch_host *h, int rc, const char *msg)
{
    struct orch_ctl_req *req = h->save_req;

    h->save_req = NULL;
    free(h->save_path);
    h->save_path = NULL;
    if (req)
        orch_ctl_req_finish(req, rc, msg, NULL);
    if (rc == 0 && !h->save_continue) {
        colo_info("saved; the VM is stopped here");
        host_exit(h, ORCH_EXIT_OK);
    }
}

static void save_resumed(void *arg, int rc)
{
    struct orch_host *h = arg;
    int save_rc = h->rc_save_rc;

    if (rc < 0)
        colo_err("save: the guest could not be resumed: %s", colo_strerror(rc));
    save_finish(h, save_rc < 0 ? save_rc : rc,
                save_rc < 0 ? "save failed; the guest runs on" : NULL);
}

static void save_resume(struct orch_host *h, int save_rc)
{
    h->rc_save_rc = save_rc;
    if (h->vm->ops->cont(h->vm, save_resumed, h) < 0)
        save_finish(h, save_rc < 0 ? save_rc : -COLO_EQEMU_DIED,
                    "the guest could not be resumed");
}

static void save_saved(void *arg, int rc, uint8_t *blob, size_t len)
{
    struct orch_host *h = arg;

    if (rc == 0) {
        rc = orch_qsave_write(h->save_path, h->name, h->cfg_json,
                              ckpt_mem_qemu_ram(h->mem),
                              ckpt_mem_qemu_size(h->mem), blob, len);
        if (rc < 0)
            colo_err("save to %s: %s (nothing written)", h->save_path,
                     colo_strerror(rc));
        else
            colo_info("saved to %s (%zu bytes of device state)", h->save_path,
                      len);
    } else {
        colo_err("save: device state: %s", colo_strerror(rc));
    }
    free(blob);
    if (rc < 0 || h->save_continue)
        save_resume(h, rc);
    else
        save_finish(h, 0, NULL);
}

static void save_stopped(void *arg, int rc)
{
    struct orch_host *h = arg;

    if (rc == 0)
        rc = h->vm->ops->save_devices(h->vm, save_saved, h);
    if (rc < 0)
        save_resume(h, rc);
}

static void ctl_save(struct orch_host *h, struct orch_ctl_req *req, json_t *a)
{
    const char *file = json_string_value(json_object_get(a, "file"));
    int rc;

    if (!file || file[0] != '/') {
        orch_ctl_req_finish(req, -EINVAL, "save needs an absolute file path",
                            NULL);
        return;
    }
    if (h->state != HOST_RUNNING || !h->vm || !h->mem || h->rc_.req ||
        h->save_req) {
        orch_ctl_req_finish(req, -EBUSY,
                            "the VM is busy (a job, a save or a "
                            "reconfiguration runs) or not running here",
                            NULL);
        return;
    }
    h->save_path = strdup(file);
    h->save_continue = json_is_true(json_object_get(a, "continue"));
    h->save_req = req;
    colo_info("saving to %s", file);
    /* The guest is paused for the whole save: a consistent image. */
    rc = h->save_path ? h->vm->ops->stop(h->vm, save_stopped, h) : -ENOMEM;
    if (rc < 0)
        save_finish(h, rc, NULL);
}

static void restore_loaded(void *arg, int rc)
{
    struct orch_host *h = arg;
    struct ckpt_vm *vm = h->restore_vm;

    h->restore_vm = NULL;
    h->restoring = false;
    if (rc < 0) {
        colo_err("restore: loading the device state failed: %s",
                 colo_strerror(rc));
        ckpt_vm_free(vm);
        host_exit(h, orch_exit_code(rc));
        return;
    }
    rc = host_become_primary(h, vm);
    if (rc < 0) {
        host_exit(h, orch_exit_code(rc));
        return;
    }
    orch_qsave_image_dispose(&h->img);
    printf("colo: VM '%s' restored and running (QEMU pid %d); control "
           "socket %s\n",
           h->name, (int)ckpt_vm_qemu_pid(h->vm), h->ctl_path);
    fflush(stdout);
}

/* The reader has the configuration and is about to write pages: set the
 * VM up and hand it a fresh RAM file. */
static int restore_open_ram(void *arg, uint64_t ram_size)
{
    struct orch_host *h = arg;
    struct orch_vm_config *cfg = NULL;
    struct orch_config_error err;
    int rc, fd;

    rc =
        orch_config_parse_string(h->img.config_json, strlen(h->img.config_json),
                                 "save file", &cfg, &err);
    if (rc < 0) {
        colo_err("restore: the configuration in the file: %s", err.text);
        return rc;
    }
    if ((orch_config_max_mb(cfg) << 20) != ram_size ||
        strcmp(orch_config_name(cfg), h->img.vm_name) != 0) {
        orch_config_free(cfg);
        colo_err("restore: the configuration does not match the image");
        return -COLO_ESTREAM_CORRUPT;
    }
    rc = host_set_vm(h, cfg);
    if (rc == 0)
        rc = host_open_ctl(h);
    if (rc < 0)
        return rc;
    fd = open(h->ram_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)ram_size) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

/* ==================== RECONFIGURATION ==================== */

static void reconf_finish(struct orch_host *h, int rc, const char *msg)
{
    struct orch_ctl_req *req = h->rc_.req;
    json_t *res = NULL;

    if (h->rc_.hook > 0) {
        qmp_client_remove_hook(ckpt_vm_qemu_client(h->vm), h->rc_.hook);
        h->rc_.hook = 0;
    }
    if (h->rc_.timer)
        event_del(h->rc_.timer);
    if (rc == 0) {
        char *json = NULL;

        /* The VM changed: the stored configuration follows it. */
        if (orch_config_generate(h->rc_.next, 0, &json, NULL) == 0) {
            orch_config_free(h->cfg);
            h->cfg = h->rc_.next;
            h->rc_.next = NULL;
            free(h->cfg_json);
            h->cfg_json = json;
            colo_info("%s done; configuration updated", h->rc_.op);
            res = json_pack("{s:O}", "config", orch_config_json(h->cfg));
        } else {
            rc = -ENOMEM;
        }
    }
    orch_config_free(h->rc_.next);
    h->rc_.next = NULL;
    json_decref(h->rc_.args);
    h->rc_.args = NULL;
    h->rc_.req = NULL;
    if (h->rc_.reprotect && h->job_args) {
        /* Re-pair: the secondary is launched from the configuration
         * that matches the VM now, and gets a full sync. */
        json_t *a = json_incref(h->job_args);

        h->rc_.reprotect = false;
        colo_info("re-pairing with %s",
                  json_string_value(json_object_get(a, "target")));
        start_job(h, NULL, a);
        json_decref(a);
        if (res)
            json_object_set_new(res, "reprotect", json_true());
    }
    h->rc_.reprotect = false;
    if (req)
        orch_ctl_req_finish(req, rc, msg, res);
    else
        json_decref(res);
}

static void reconf_reply(struct qmp_client *c, int rc, json_t *ret,
                         const char *desc, void *arg)
{
    struct orch_host *h = arg;
    char msg[512];

    (void)c;
    (void)ret;
    if (rc < 0) {
        snprintf(msg, sizeof(msg), "%s: QEMU said no: %s%s", h->rc_.op,
                 desc ? desc : colo_strerror(rc),
                 rc == -COLO_EQMP_DEVICE_NOT_ACTIVE &&
                         strcmp(h->rc_.op, "mem-set") == 0
                     ? " (the VM needs a balloon device, e.g. "
                       "{\"driver\": \"virtio-balloon-pci\", \"id\": "
                       "\"balloon0\"})"
                     : "");
        colo_err("%s", msg);
        reconf_finish(h, rc, msg);
        return;
    }
    if (strcmp(h->rc_.op, "device-remove") == 0)
        return; /* done when DEVICE_DELETED comes (or the deadline) */
    reconf_finish(h, 0, NULL);
}

/* After the deadline: a device that is gone counts as removed, whatever
 * happened to the event. */
static void reconf_check_gone(struct qmp_client *c, int rc, json_t *ret,
                              const char *desc, void *arg)
{
    struct orch_host *h = arg;
    const char *id = json_string_value(json_object_get(h->rc_.args, "id"));
    size_t i;
    json_t *e;

    (void)c;
    (void)desc;
    if (rc == 0) {
        json_array_foreach(ret, i, e)
        {
            const char *n = json_string_value(json_object_get(e, "name"));

            if (n && strcmp(n, id) == 0) {
                reconf_finish(h, -ETIMEDOUT,
                              "device-remove: the device is still present "
                              "after the deadline (the guest did not "
                              "release it); the configuration is unchanged");
                return;
            }
        }
        colo_warn("device-remove: no DEVICE_DELETED event for '%s', but it "
                  "is gone: counted as removed",
                  id);
        reconf_finish(h, 0, NULL);
        return;
    }
    reconf_finish(h, rc, "device-remove: cannot list the VM's devices");
}

static void reconf_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct orch_host *h = arg;
    struct qmp_client *c = ckpt_vm_qemu_client(h->vm);
    json_t *args = json_pack("{s:s}", "path", "/machine/peripheral");
    int rc;

    (void)fd;
    (void)what;
    rc = c && args ? qmp_send(c, "qom-list", args, -1, 5000, reconf_check_gone,
                              h, NULL)
                   : -ENOMEM;
    json_decref(args); /* qmp_send borrows it */
    if (rc < 0)
        reconf_finish(h, -ETIMEDOUT, "device-remove: timed out");
}

static void reconf_event(struct qmp_client *c, int rc, const char *event,
                         json_t *data, void *arg)
{
    struct orch_host *h = arg;
    const char *id = json_string_value(json_object_get(h->rc_.args, "id"));
    const char *dev;

    (void)c;
    if (rc < 0) {
        h->rc_.hook = 0; /* removed by the client */
        reconf_finish(h, rc, "device-remove: QMP connection lost");
        return;
    }
    if (strcmp(event, "DEVICE_DELETED") != 0)
        return;
    dev = json_string_value(json_object_get(data, "device"));
    if (dev && id && strcmp(dev, id) == 0)
        reconf_finish(h, 0, NULL);
}

/* Change the VM (its QEMU) now; the configuration follows on success. */
static void reconf_apply(struct orch_host *h)
{
    struct qmp_client *c = ckpt_vm_qemu_client(h->vm);
    const char *op = h->rc_.op, *cmd;
    json_t *a = h->rc_.args, *args;
    int rc;

    if (!c) {
        reconf_finish(h, -ENOTSUP, "the VM is not a QEMU VM");
        return;
    }
    if (strcmp(op, "mem-set") == 0) {
        json_int_t mb = json_integer_value(json_object_get(a, "mb"));

        cmd = "balloon";
        args = json_pack("{s:I}", "value", mb * 1024 * 1024);
    } else if (strcmp(op, "device-add") == 0) {
        cmd = "device_add";
        args = json_deep_copy(json_object_get(a, "device"));
    } else {
        struct timeval tv = {5, 0};

        cmd = "device_del";
        args = json_pack("{s:O}", "id", json_object_get(a, "id"));
        rc = qmp_client_add_hook(c, reconf_event, h, NULL);
        if (rc < 0) {
            json_decref(args);
            reconf_finish(h, rc, NULL);
            return;
        }
        h->rc_.hook = rc;
        if (!h->rc_.timer)
            h->rc_.timer = evtimer_new(h->base, reconf_timeout, h);
        evtimer_add(h->rc_.timer, &tv);
    }
    /* qmp_send borrows args. */
    rc = args ? qmp_send(c, cmd, args, -1, 10000, reconf_reply, h, NULL)
              : -ENOMEM;
    json_decref(args);
    if (rc < 0)
        reconf_finish(h, rc, NULL);
}

static void ctl_reconf(struct orch_host *h, struct orch_ctl_req *req,
                       const char *op, json_t *a)
{
    struct orch_config_error err = {0};
    struct orch_vm_config *next = NULL;
    int rc;

    if (h->rc_.req || h->save_req) {
        orch_ctl_req_finish(req, -EBUSY,
                            "a reconfiguration or a save is running", NULL);
        return;
    }
    if (!h->vm || (h->state != HOST_RUNNING && h->state != HOST_JOB)) {
        orch_ctl_req_finish(req, -EBUSY, "the VM is not running here", NULL);
        return;
    }
    if (h->prim && h->job_mode == CKPT_MODE_MIGRATE) {
        orch_ctl_req_finish(req, -EBUSY, "the VM is being migrated", NULL);
        return;
    }
    /* Validate against a copy first: nothing changes on a bad request. */
    rc = orch_config_dup(h->cfg, &next);
    if (rc == 0 && strcmp(op, "mem-set") == 0) {
        json_t *mb = json_object_get(a, "mb");

        rc = json_is_integer(mb)
                 ? orch_config_set_target_mb(
                       next, (uint64_t)json_integer_value(mb), &err)
                 : -EINVAL;
    } else if (rc == 0 && strcmp(op, "device-add") == 0) {
        json_t *dev = json_object_get(a, "device");

        rc = json_is_object(dev) ? orch_config_device_add(next, dev, &err)
                                 : -EINVAL;
        if (rc == -EEXIST)
            snprintf(err.text, sizeof(err.text),
                     "a device with this id exists already");
    } else if (rc == 0) {
        const char *id = json_string_value(json_object_get(a, "id"));

        rc = id ? orch_config_device_remove(next, id) : -EINVAL;
        if (rc == -ENOENT)
            snprintf(err.text, sizeof(err.text),
                     "the VM has no device with id '%s'", id);
    }
    if (rc < 0) {
        orch_config_free(next);
        orch_ctl_req_finish(req, rc, err.text[0] ? err.text : NULL, NULL);
        return;
    }
    h->rc_.req = req;
    snprintf(h->rc_.op, sizeof(h->rc_.op), "%s", op);
    h->rc_.args = json_incref(a);
    h->rc_.next = next;
    if (h->prim) {
        /* Protected: end this pairing first (the guest keeps running), so
         * no checkpoint carries a device state the secondary's QEMU could
         * not load; re-pair once the VM has changed. */
        colo_info("%s while protected: re-pairing around it", op);
        h->rc_.reprotect = h->job_args != NULL &&
                           ckpt_primary_state(h->prim) != CKPT_P_UNPROTECTED;
        h->rc_.wait_cancel = true;
        ckpt_primary_cancel(h->prim); /* prim_done -> reconf_apply */
        return;
    }
    reconf_apply(h);
}

/* ==================== CONTROL SOCKET ==================== */

/* status asks QEMU whether the guest runs (query-status): colo's own
 * state is not the guest's. */
struct status_ctx {
    struct orch_host *h;
    struct orch_ctl_req *req;
    json_t *j;
};

static const char *pause_reason(struct orch_host *h, const char *qstatus)
{
    if (h->prim) {
        switch (ckpt_primary_state(h->prim)) {
        case CKPT_P_STOPPING:
        case CKPT_P_CAPTURING:
        case CKPT_P_RESUMING:
            return "a checkpoint is being taken";
        default:
            break;
        }
        if (h->job_mode == CKPT_MODE_MIGRATE)
            return "the migration's final stop-and-copy is in progress";
    }
    if (h->save_req)
        return "a save is in progress";
    if (h->pause_note)
        return h->pause_note;
    if (strcmp(qstatus, "paused") == 0)
        return "stopped by a QMP 'stop' outside colo";
    if (strcmp(qstatus, "postmigrate") == 0 ||
        strcmp(qstatus, "finish-migrate") == 0)
        return "QEMU's own migration stopped it";
    if (strcmp(qstatus, "io-error") == 0)
        return "a disk I/O error (QEMU stopped the guest)";
    if (strcmp(qstatus, "guest-panicked") == 0)
        return "the guest panicked";
    if (strcmp(qstatus, "shutdown") == 0)
        return "the guest shut down";
    return "QEMU reports it";
}

static void status_reply(struct qmp_client *c, int rc, json_t *ret,
                         const char *desc, void *arg)
{
    struct status_ctx *x = arg;
    const char *st = json_string_value(json_object_get(ret, "status"));
    bool running = json_is_true(json_object_get(ret, "running"));

    (void)c;
    if (rc < 0 || !st) {
        json_object_set_new(x->j, "guest", json_string("unknown"));
        json_object_set_new(
            x->j, "guest_error",
            json_string(desc ? desc : colo_strerror(rc < 0 ? rc : -EPROTO)));
    } else {
        json_object_set_new(x->j, "guest",
                            json_string(running ? "running" : "paused"));
        json_object_set_new(x->j, "qemu_status", json_string(st));
        if (!running)
            json_object_set_new(x->j, "paused_reason",
                                json_string(pause_reason(x->h, st)));
    }
    orch_ctl_req_finish(x->req, 0, NULL, x->j);
    x->req = NULL;
    x->j = NULL;
}

static void status_ctx_free(void *arg)
{
    struct status_ctx *x = arg;

    if (x->req) {
        /* No answer (QEMU or its connection went away). */
        json_object_set_new(x->j, "guest", json_string("unknown"));
        orch_ctl_req_finish(x->req, 0, NULL, x->j);
    }
    free(x);
}

static void ctl_status(struct orch_host *h, struct orch_ctl_req *req)
{
    struct ckpt_stats st;
    struct qmp_client *c = h->vm ? ckpt_vm_qemu_client(h->vm) : NULL;
    struct status_ctx *x;
    json_t *j;

    if (h->prim) {
        ckpt_primary_get_stats(h->prim, &st);
        j = stats_json(&st);
    } else if (h->sec) {
        ckpt_secondary_get_stats(h->sec, &st);
        j = stats_json(&st);
    } else {
        j = json_pack("{s:s, s:b}", "role",
                      h->state == HOST_LISTENING ? "secondary" : "primary",
                      "protected", 0);
    }
    json_object_set_new(j, "vm", json_string(h->name ? h->name : ""));
    if (h->sec && ckpt_secondary_state(h->sec) == CKPT_S_LOST)
        json_object_set_new(j, "host_state",
                            json_string(h->o.takeover_cluster
                                            ? "awaiting_promotion"
                                            : "primary_lost"));
    else
        json_object_set_new(j, "host_state",
                            json_string(host_state_names[h->state]));
    if (h->state == HOST_LISTENING || h->state == HOST_SECONDARY)
        json_object_set_new(j, "takeover",
                            json_string(h->o.takeover_cluster ? "cluster"
                                        : h->o.fence_cmd      ? "fence-cmd"
                                        : h->o.witness        ? "witness"
                                                              : "manual"));
    json_object_set_new(j, "qemu_pid",
                        json_integer(h->vm ? ckpt_vm_qemu_pid(h->vm) : -1));
    json_object_set_new(j, "ram_path",
                        json_string(h->ram_path ? h->ram_path : ""));
    json_object_set_new(j, "serial_path",
                        json_string(h->serial_path ? h->serial_path : ""));
    json_object_set_new(j, "ram_mb",
                        json_integer((json_int_t)(h->ram_size >> 20)));
    if (h->mem)
        json_object_set_new(j, "dirty_method",
                            json_string(ckpt_mem_dirty_method(h->mem)));
    if (h->peer && h->prim)
        json_object_set_new(j, "peer", json_string(h->peer));
    if (h->took_over_from >= 0)
        json_object_set_new(j, "took_over_from",
                            json_integer(h->took_over_from));
    if (h->outbuf)
        json_object_set_new(j, "output", outbuf_json(h));
    if (c && (h->state == HOST_RUNNING || h->state == HOST_JOB) &&
        (x = calloc(1, sizeof(*x)))) {
        x->h = h;
        x->req = req;
        x->j = j;
        if (qmp_send_ex(c, "query-status", NULL, -1, 3000, status_reply, x,
                        status_ctx_free, NULL) == 0)
            return;
        free(x);
    }
    orch_ctl_req_finish(req, 0, NULL, j);
}

/* colo handover VM [HOST:PORT]: a planned switchover to the peer (by
 * default the one protecting the VM now). */
static void ctl_handover(struct orch_host *h, struct orch_ctl_req *req,
                         json_t *args)
{
    const char *to = json_string_value(json_object_get(args, "target"));

    if (h->handover_req || h->rc_.req || h->save_req) {
        orch_ctl_req_finish(req, -EBUSY,
                            "a handover, reconfiguration or save is running",
                            NULL);
        return;
    }
    if (!h->prim || h->job_mode == CKPT_MODE_MIGRATE ||
        ckpt_primary_state(h->prim) == CKPT_P_UNPROTECTED ||
        ckpt_primary_state(h->prim) == CKPT_P_DONE || !h->job_acked) {
        orch_ctl_req_finish(req, -ENOENT,
                            "the VM is not protected by a synced peer: "
                            "nothing to hand over to",
                            NULL);
        return;
    }
    if (to && !*to)
        to = NULL;
    free(h->handover_to);
    h->handover_to = strdup(to ? to : h->peer);
    if (!h->handover_to) {
        orch_ctl_req_finish(req, -ENOMEM, NULL, NULL);
        return;
    }
    colo_info("handover to %s: ending protection", h->handover_to);
    h->handover_req = req;
    ckpt_primary_cancel(h->prim); /* prim_done -> handover_migrate */
}

static void ctl_handler(struct orch_ctl_req *req, const char *cmd, json_t *args,
                        void *arg)
{
    struct orch_host *h = arg;
    int rc;

    if (strcmp(cmd, "status") == 0) {
        ctl_status(h, req);
    } else if (strcmp(cmd, "config") == 0) {
        json_t *c = h->cfg ? json_deep_copy(orch_config_json(h->cfg)) : NULL;

        orch_ctl_req_finish(req, c ? 0 : -ENOENT, "no configuration yet",
                            c ? json_pack("{s:o}", "config", c) : NULL);
    } else if (strcmp(cmd, "stop") == 0) {
        orch_ctl_req_finish(req, 0, NULL, NULL);
        colo_info("stop requested");
        host_exit(h, ORCH_EXIT_OK);
    } else if (strcmp(cmd, "migrate") == 0 || strcmp(cmd, "protect") == 0) {
        if (h->rc_.req || h->save_req)
            orch_ctl_req_finish(req, -EBUSY,
                                "a reconfiguration or a save is running", NULL);
        else
            start_job(h, req, args);
    } else if (strcmp(cmd, "save") == 0) {
        ctl_save(h, req, args);
    } else if (strcmp(cmd, "mem-set") == 0 || strcmp(cmd, "device-add") == 0 ||
               strcmp(cmd, "device-remove") == 0) {
        ctl_reconf(h, req, cmd, args);
    } else if (strcmp(cmd, "unprotect") == 0) {
        if (!h->prim) {
            orch_ctl_req_finish(req, -ENOENT, "the VM is not protected", NULL);
            return;
        }
        ckpt_primary_cancel(h->prim);
        orch_ctl_req_finish(req, 0, NULL, NULL);
    } else if (strcmp(cmd, "handover") == 0) {
        ctl_handover(h, req, args);
    } else if (strcmp(cmd, "failover") == 0) {
        if (!h->sec) {
            orch_ctl_req_finish(req, -ENOENT, "this host is not a secondary",
                                NULL);
            return;
        }
        orch_child_cancel(h->fence);
        h->fence = NULL;
        orch_connect_cancel(h->witness);
        h->witness = NULL;
        rc = ckpt_secondary_failover(h->sec);
        orch_ctl_req_finish(
            req, rc,
            rc == -ENOENT ? "no checkpoint was ever committed here" : NULL,
            NULL);
    } else {
        orch_ctl_req_finish(req, -EINVAL, "unknown control command", NULL);
    }
}

/* ==================== ENTRY POINTS ==================== */

static int host_init(struct orch_host *h, const struct orch_host_opts *o)
{
    int rc;

    memset(h, 0, sizeof(*h));
    h->o = *o;
    h->took_over_from = -1;
    signal(SIGPIPE, SIG_IGN);
    h->base = event_base_new();
    if (!h->base)
        return -ENOMEM;
    rc = orch_state_dir(o->state_dir, &h->state_dir);
    if (rc < 0) {
        colo_err("state directory: %s", colo_strerror(rc));
        return rc;
    }
    h->sig_int = evsignal_new(h->base, SIGINT, on_signal, h);
    h->sig_term = evsignal_new(h->base, SIGTERM, on_signal, h);
    if (!h->sig_int || !h->sig_term)
        return -ENOMEM;
    evsignal_add(h->sig_int, NULL);
    evsignal_add(h->sig_term, NULL);
    return 0;
}

static void host_dispose(struct orch_host *h)
{
    if (h->save_req) {
        orch_ctl_req_finish(h->save_req, -COLO_ECANCELLED, "colo is stopping",
                            NULL);
        h->save_req = NULL;
    }
    ckpt_vm_free(h->restore_vm);
    orch_qsave_image_dispose(&h->img);
    free(h->save_path);
    if (h->rc_.req) {
        orch_ctl_req_finish(h->rc_.req, -COLO_ECANCELLED, "colo is stopping",
                            NULL);
        h->rc_.req = NULL;
    }
    if (h->job_req)
        job_finish(h, -COLO_ECANCELLED, "colo is stopping", NULL);
    ckpt_outbuf_free(h->outbuf); /* QEMU goes too: nothing to release */
    h->outbuf = NULL;
    if (h->handover_req)
        orch_ctl_req_finish(h->handover_req, -COLO_ECANCELLED,
                            "colo is stopping", NULL);
    free(h->handover_to);
    ckpt_primary_free(h->prim);
    h->prim = NULL;
    disks_end(h);
    orch_xen_recv_free(h->xrecv);
    ckpt_secondary_free(h->sec);
    ckpt_secondary_free(h->sec_retired);
    h->sec = h->sec_retired = NULL;
    for (size_t i = 0; i < h->n_stages; i++)
        ckpt_disk_stage_free(h->stages[i]);
    h->n_stages = 0;
    orch_connect_cancel(h->conn);
    orch_connect_cancel(h->witness);
    orch_child_cancel(h->fence);
    orch_pidwatch_free(h->qemu_watch);
    ckpt_memory_free(h->mem);
    ckpt_vm_free(h->vm);
    orch_dbus_free(h->dbus);
    orch_ctl_server_free(h->ctl);
    if (h->listener)
        evconnlistener_free(h->listener);
    if (h->sig_int)
        event_free(h->sig_int);
    if (h->sig_term)
        event_free(h->sig_term);
    if (h->exit_timer)
        event_free(h->exit_timer);
    if (h->progress_timer)
        event_free(h->progress_timer);
    if (h->ram_path)
        unlink(h->ram_path);
    if (h->vm_dir)
        rmdir(h->vm_dir); /* only if empty: the serial log stays */
    orch_config_free(h->cfg);
    if (h->key)
        explicit_bzero(h->key, strlen(h->key));
    free(h->key);
    free(h->cfg_json);
    free(h->name);
    free(h->vm_dir);
    free(h->ram_path);
    free(h->serial_path);
    free(h->ctl_path);
    free(h->state_dir);
    free(h->peer);
    free(h->pause_note);
    free(h->job_host);
    json_decref(h->job_args);
    json_decref(h->rc_.args);
    orch_config_free(h->rc_.next);
    if (h->rc_.timer)
        event_free(h->rc_.timer);
    if (h->base)
        event_base_free(h->base);
}

int orch_host_run_start(const char *config_path, const struct orch_host_opts *o)
{
    struct orch_host h;
    struct orch_vm_config *cfg = NULL;
    struct orch_config_error err;
    int rc;

    rc = orch_config_parse_file(config_path, &cfg, &err);
    if (rc < 0) {
        fprintf(stderr, "colo: %s\n", err.text);
        return ORCH_EXIT_CONFIG;
    }
    if (orch_config_type(cfg) != ORCH_VM_QEMU) {
        fprintf(stderr,
                "colo: %s: Xen domains are not supported by "
                "'colo start' yet (QEMU guests only)\n",
                config_path);
        orch_config_free(cfg);
        return ORCH_EXIT_CONFIG;
    }
    rc = host_init(&h, o);
    if (rc == 0)
        rc = read_key(o, &h.key);
    if (rc == 0)
        rc = host_set_vm(&h, cfg);
    else
        orch_config_free(cfg);
    if (rc == 0)
        rc = host_open_ctl(&h);
    if (rc == 0) {
        unlink(h.ram_path);
        rc = host_launch(&h, false, h.ram_path);
    }
    if (rc < 0) {
        host_dispose(&h);
        return orch_exit_code(rc);
    }
    h.state = HOST_RUNNING; /* until QEMU is up the VM ops queue */
    h.exit_code = ORCH_EXIT_OK;
    event_base_dispatch(h.base);
    rc = h.exit_code;
    host_dispose(&h);
    return rc;
}

int orch_host_run_secondary(const struct orch_host_opts *o)
{
    struct orch_host h;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[NI_MAXSERV];
    int rc;

    rc = host_init(&h, o);
    if (rc == 0)
        rc = read_key(o, &h.key);
    if (rc < 0) {
        host_dispose(&h);
        return orch_exit_code(rc);
    }
    /* --listen HOST:0 asks for an ephemeral port. */
    snprintf(port, sizeof(port), "%u",
             o->listen_host ? o->listen_port : ORCH_DEFAULT_PORT);
    rc = getaddrinfo(o->listen_host ? o->listen_host : "0.0.0.0", port, &hints,
                     &ai);
    if (rc != 0) {
        colo_err("cannot listen on %s:%s: %s",
                 o->listen_host ? o->listen_host : "0.0.0.0", port,
                 gai_strerror(rc));
        host_dispose(&h);
        return ORCH_EXIT_USAGE;
    }
    h.listener = evconnlistener_new_bind(
        h.base, sec_accept, &h,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 4,
        ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (!h.listener) {
        colo_err("cannot listen on %s:%s: %s",
                 o->listen_host ? o->listen_host : "0.0.0.0", port,
                 strerror(errno));
        host_dispose(&h);
        return ORCH_EXIT_FAIL;
    }
    {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char hbuf[NI_MAXHOST], pbuf[NI_MAXSERV];

        /* The real port: --listen HOST:0 asks for an ephemeral one. */
        if (getsockname(evconnlistener_get_fd(h.listener),
                        (struct sockaddr *)&ss, &sl) == 0 &&
            getnameinfo((struct sockaddr *)&ss, sl, hbuf, sizeof(hbuf), pbuf,
                        sizeof(pbuf), NI_NUMERICHOST | NI_NUMERICSERV) == 0)
            snprintf(port, sizeof(port), "%s", pbuf);
    }
    printf("colo: %s: waiting for a primary on %s:%s\n",
           o->standby ? "standby" : "receive",
           o->listen_host ? o->listen_host : "0.0.0.0", port);
    fflush(stdout);
    h.state = HOST_LISTENING;
    event_base_dispatch(h.base);
    rc = h.exit_code;
    host_dispose(&h);
    return rc;
}

int orch_host_run_restore(const char *path, const struct orch_host_opts *o)
{
    struct orch_host h;
    char why[512];
    int rc;

    rc = host_init(&h, o);
    if (rc == 0)
        rc = read_key(o, &h.key);
    if (rc < 0) {
        host_dispose(&h);
        return orch_exit_code(rc);
    }
    rc = orch_qsave_read(path, restore_open_ram, &h, &h.img, why, sizeof(why));
    if (rc < 0) {
        fprintf(stderr, "colo: restore: %s: %s\n", path,
                why[0] ? why : colo_strerror(rc));
        if (h.ram_path)
            unlink(h.ram_path); /* nothing half-restored stays */
        host_dispose(&h);
        return orch_exit_code(rc);
    }
    colo_info("restoring '%s' from %s: %llu pages, %zu bytes of device "
              "state",
              h.name, path, (unsigned long long)h.img.pages, h.img.dev_len);
    h.restoring = true;
    rc = host_launch(&h, true, h.ram_path);
    if (rc < 0) {
        host_dispose(&h);
        return orch_exit_code(rc);
    }
    h.state = HOST_RUNNING;
    event_base_dispatch(h.base);
    rc = h.exit_code;
    host_dispose(&h);
    return rc;
}
