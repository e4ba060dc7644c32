/*
 * An HVM domain's device model (checkpoint/xen_dm.h).
 */
#include "checkpoint/xen_dm.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "qmp/devstate.h"
#include "qmp/launch.h"
#include "qmp/qmp.h"

#define DM_START_TIMEOUT_MS 30000
#define DM_LOG_DIR          "/var/log/xen"

void ckpt_xen_dm_qmp_path(uint32_t domid, char *buf, size_t sz)
{
    snprintf(buf, sz, "/var/run/xen/qmp-libxl-%" PRIu32, domid);
}

const char *ckpt_xen_dm_binary(void)
{
    static const char *const dflt[] = {
        "/usr/libexec/xen-qemu-system-i386",
        "/usr/lib/xen/bin/qemu-system-i386",
    };
    const char *e = getenv("COLO_XEN_DM");

    if (e && *e)
        return e;
    for (size_t i = 0; i < sizeof(dflt) / sizeof(dflt[0]); i++)
        if (access(dflt[i], X_OK) == 0)
            return dflt[i];
    return dflt[0];
}

/* ---- argv -------------------------------------------------------------- */

struct argv_b {
    char **v;
    size_t n, cap;
    bool oom;
};

static void add(struct argv_b *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add(struct argv_b *a, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    if (a->oom)
        return;
    if (a->n + 2 > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 32;
        char **nv = realloc(a->v, cap * sizeof(*nv));

        if (!nv) {
            a->oom = true;
            return;
        }
        a->v = nv;
        a->cap = cap;
    }
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s) {
        a->oom = true;
        return;
    }
    a->v[a->n++] = s;
    a->v[a->n] = NULL;
}

int ckpt_xen_dm_argv(const struct ckpt_xen_newdom *nd, uint32_t domid,
                     const char *binary, char ***ret)
{
    struct argv_b a = {0};
    const char *const *sec = qmp_secondary_args();
    uint64_t ram_mb = (nd->max_memkb - nd->hvm.video_memkb) / 1024;
    const char *machine = nd->hvm.xen_platform_pci ? "xenfv" : "pc,accel=xen";

    *ret = NULL;
    add(&a, "%s", binary);
    add(&a, "-xen-domid");
    add(&a, "%" PRIu32, domid);
    add(&a, "-no-shutdown");
    add(&a, "-nodefaults");
    add(&a, "-no-user-config");
    add(&a, "-name");
    add(&a, "%s", nd->name);
    add(&a, "-vnc");
    add(&a, "none");
    add(&a, "-display");
    add(&a, "none");
    if (nd->hvm.serial[0]) {
        add(&a, "-serial");
        add(&a, "%s", nd->hvm.serial);
    }
    if (strcmp(nd->hvm.vga, "std") == 0) {
        add(&a, "-device");
        add(&a, "VGA,vgamem_mb=%" PRIu64, nd->hvm.video_memkb / 1024);
    } else if (strcmp(nd->hvm.vga, "cirrus") == 0) {
        add(&a, "-device");
        add(&a, "cirrus-vga,vgamem_mb=%" PRIu64, nd->hvm.video_memkb / 1024);
    }
    if (nd->hvm.kernel[0]) {
        add(&a, "-kernel");
        add(&a, "%s", nd->hvm.kernel);
    }
    if (nd->hvm.ramdisk[0]) {
        add(&a, "-initrd");
        add(&a, "%s", nd->hvm.ramdisk);
    }
    if (nd->hvm.cmdline[0]) {
        add(&a, "-append");
        add(&a, "%s", nd->hvm.cmdline);
    }
    add(&a, "-boot");
    add(&a, "order=%s", nd->hvm.boot);
    if (!nd->hvm.acpi)
        add(&a, "-no-acpi");
    if (nd->max_vcpus > 1) {
        add(&a, "-smp");
        add(&a, "%u,maxcpus=%u", nd->max_vcpus, nd->max_vcpus);
    }
    add(&a, "-net");
    add(&a, "none");
    add(&a, "-machine");
    add(&a, "%s", machine);
    add(&a, "-m");
    add(&a, "%" PRIu64, ram_mb);
    for (size_t i = 0; sec[i]; i++)
        add(&a, "%s", sec[i]);
    if (a.oom) {
        ckpt_xen_dm_argv_free(a.v);
        return -ENOMEM;
    }
    *ret = a.v;
    return 0;
}

void ckpt_xen_dm_argv_free(char **argv)
{
    if (!argv)
        return;
    for (size_t i = 0; argv[i]; i++)
        free(argv[i]);
    free(argv);
}

/* ---- one blocking command ---------------------------------------------- */

struct call_state {
    struct event_base *base;
    const char *cmd;
    json_t *args;
    int rc;
    bool done;
    char *why;
    size_t whysz;
};

/* The call's outcome; why = "WHAT: DESC or the error's text". */
static void call_finish(struct call_state *cs, int rc, const char *what,
                        const char *desc)
{
    cs->rc = rc;
    if (rc < 0)
        snprintf(cs->why, cs->whysz, "%s: %s", what,
                 desc ? desc : colo_strerror(rc));
    cs->done = true;
    event_base_loopbreak(cs->base);
}

static void call_reply(struct qmp_client *c, int rc, json_t *ret,
                       const char *desc, void *arg)
{
    struct call_state *cs = arg;

    (void)c;
    (void)ret;
    call_finish(cs, rc, cs->cmd, desc);
}

static void call_connected(struct qmp_client *c, int rc, void *arg)
{
    struct call_state *cs = arg;

    if (rc == 0)
        rc = qmp_send(c, cs->cmd, cs->args, -1, 0, call_reply, cs, NULL);
    if (rc < 0)
        call_finish(cs, rc, "QMP", NULL);
}

int ckpt_xen_dm_call(uint32_t domid, const char *cmd, json_t *args,
                     int timeout_ms, char *why, size_t whysz)
{
    struct qmp_client_opts o = {
        .greeting_timeout_ms = (uint32_t)timeout_ms,
        .default_cmd_timeout_ms = (uint32_t)timeout_ms,
        .no_probe = true,
        .name = "xen-dm",
    };
    struct call_state cs = {
        .cmd = cmd, .args = args, .why = why, .whysz = whysz};
    struct qmp_client *c = NULL;
    char path[64];
    struct timeval tv = colo_ms_to_tv((uint64_t)timeout_ms * 2);
    int rc;

    why[0] = '\0';
    ckpt_xen_dm_qmp_path(domid, path, sizeof(path));
    cs.base = event_base_new();
    if (cs.base)
        c = qmp_client_new(cs.base, &o);
    if (!c) {
        rc = -ENOMEM;
        goto out;
    }
    rc = qmp_client_connect_path(c, path, call_connected, &cs);
    if (rc < 0) {
        snprintf(why, whysz, "device model of domain %" PRIu32 ": %s: %s",
                 domid, path, colo_strerror(rc));
        goto out;
    }
    event_base_loopexit(cs.base, &tv); /* backs up the client's deadlines */
    event_base_dispatch(cs.base);
    rc = cs.done ? cs.rc : -ETIMEDOUT;
    if (!cs.done)
        snprintf(why, whysz, "%s: no answer within %d ms", cmd, timeout_ms);
out:
    qmp_client_free(c);
    if (cs.base)
        event_base_free(cs.base);
    json_decref(args);
    return rc;
}

/* ---- start a device model for a restored domain ------------------------ */

struct ckpt_xen_dm_start {
    struct ckpt_xen_dom *d;
    uint32_t domid;
    struct qmp_qemu *q;
    uint8_t *state;
    size_t len;
    ckpt_xen_dm_started *cb;
    void *opaque;
    struct event *ev_done;
    int rc;
    char why[512];
    bool fired;
};

static void start_fire(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_xen_dm_start *s = arg;

    (void)fd;
    (void)what;
    s->fired = true;
    s->cb(s->rc, s->rc < 0 ? s->why : "", s->opaque);
}

static void start_end(struct ckpt_xen_dm_start *s, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void start_end(struct ckpt_xen_dm_start *s, int rc, const char *fmt, ...)
{
    va_list ap;

    if (s->fired || event_pending(s->ev_done, EV_TIMEOUT, NULL))
        return;
    s->rc = rc;
    if (rc < 0 && fmt) {
        va_start(ap, fmt);
        vsnprintf(s->why, sizeof(s->why), fmt, ap);
        va_end(ap);
    }
    if (rc < 0 && s->q) {
        qmp_qemu_free(s->q); /* killed: nothing half-started stays */
        s->q = NULL;
    }
    event_active(s->ev_done, EV_TIMEOUT, 0);
}

static void loaded(struct qmp_client *c, int rc, enum qmp_loader loader,
                   void *arg)
{
    struct ckpt_xen_dm_start *s = arg;
    int pid;

    (void)c;
    (void)loader;
    if (rc < 0) {
        start_end(s, rc,
                  "device model of domain %" PRIu32 ": loading its "
                  "state failed: %s%s%s",
                  s->domid, colo_strerror(rc),
                  qmp_qemu_exited(s->q) ? "; " : "",
                  qmp_qemu_exited(s->q) ? qmp_qemu_describe_exit(s->q) : "");
        return;
    }
    pid = (int)qmp_qemu_pid(s->q);
    rc = ckpt_xen_dom_dm_record(s->d, s->domid, pid);
    if (rc < 0) {
        start_end(s, rc, "%s", ckpt_xen_dom_error(s->d));
        return;
    }
    colo_info("domain %" PRIu32 ": device model up (pid %d), state loaded",
              s->domid, pid);
    qmp_qemu_release(s->q); /* it lives with the domain now */
    s->q = NULL;
    start_end(s, 0, NULL);
}

static void up(struct qmp_qemu *q, int rc, const char *status, void *arg)
{
    struct ckpt_xen_dm_start *s = arg;

    (void)status;
    if (rc < 0) {
        start_end(s, rc, "device model of domain %" PRIu32 " did not start: %s",
                  s->domid,
                  rc == -COLO_EQEMU_DIED ? qmp_qemu_describe_exit(q)
                                         : colo_strerror(rc));
        return;
    }
    rc = qmp_devstate_load(qmp_qemu_client(q), s->state, s->len, 0, loaded, s);
    if (rc < 0)
        start_end(s, rc, "device model of domain %" PRIu32 ": %s", s->domid,
                  colo_strerror(rc));
}

int ckpt_xen_dm_start(struct event_base *base, struct ckpt_xen_dom *d,
                      uint32_t domid, const struct ckpt_xen_newdom *nd,
                      const uint8_t *state, size_t len, ckpt_xen_dm_started *cb,
                      void *opaque, struct ckpt_xen_dm_start **ret)
{
    struct ckpt_xen_dm_start *s = calloc(1, sizeof(*s));
    struct qmp_launch_opts o = {.start_timeout_ms = DM_START_TIMEOUT_MS};
    char qmp[64], log[256], name[64];
    char **argv = NULL;
    int rc;

    *ret = NULL;
    if (!s)
        return -ENOMEM;
    s->d = d;
    s->domid = domid;
    s->cb = cb;
    s->opaque = opaque;
    s->ev_done = event_new(base, -1, 0, start_fire, s);
    s->state = malloc(len ? len : 1);
    if (!s->ev_done || !s->state) {
        rc = -ENOMEM;
        goto fail;
    }
    memcpy(s->state, state, len);
    s->len = len;
    rc = ckpt_xen_dm_argv(nd, domid, ckpt_xen_dm_binary(), &argv);
    if (rc < 0)
        goto fail;
    ckpt_xen_dm_qmp_path(domid, qmp, sizeof(qmp));
    mkdir("/var/run/xen", 0755);
    mkdir(DM_LOG_DIR, 0755);
    snprintf(log, sizeof(log), DM_LOG_DIR "/qemu-dm-%s.log", nd->name);
    for (char *p = log + strlen(DM_LOG_DIR "/"); *p; p++)
        if (*p == '/') /* a name is not a path */
            *p = '_';
    snprintf(name, sizeof(name), "xen-dm-%" PRIu32, domid);
    o.qmp_path = qmp;
    o.log_path = log;
    o.name = name;
    rc = qmp_qemu_launch(base, argv, &o, up, s, &s->q);
    ckpt_xen_dm_argv_free(argv);
    if (rc < 0)
        goto fail;
    *ret = s;
    return 0;
fail:
    ckpt_xen_dm_start_free(s);
    return rc;
}

void ckpt_xen_dm_start_free(struct ckpt_xen_dm_start *s)
{
    if (!s)
        return;
    qmp_qemu_free(s->q);
    if (s->ev_done)
        event_free(s->ev_done);
    free(s->state);
    free(s);
}
