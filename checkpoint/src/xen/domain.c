/*
 * Xen domain operations with libxenctrl + libxenstore; see
 * checkpoint/xen_dom.h for the contract and what is covered. The xenstore
 * layout follows libxl (libxl__domain_make, libxl__build_post,
 * libxl__device_console_add) so that xl and xenconsoled see a domain colo
 * restored like one of their own.
 */
#include "checkpoint/xen_dom.h"
#include "checkpoint/xen_dm.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xenctrl.h>
#include <xenguest.h>
#include <xenstore.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"

#define MAXMEM_CONSTANT_KB 1024u /* libxl's LIBXL_MAXMEM_CONSTANT */
#define CONSOLE_LIMIT      "1048576"
#define DM_QMP_TIMEOUT_MS  5000 /* a QMP command to a device model */

struct ckpt_xen_dom {
    xc_interface *xch;
    struct xs_handle *xsh;
    xentoollog_logger lg;
    const char *userdata_dir;
    char err[512];
    char lastlog[256]; /* libxc's last error line */

    /* The suspend operation (one at a time). */
    struct event_base *base;
    struct event *xs_ev, *timer;
    uint32_t sus_domid;
    bool sus_active, sus_watching, sus_via_xs;
    ckpt_xen_suspend_done *sus_done;
    void *sus_opaque;
    char sus_token[32];
    char sus_path[96];
};

static int fail(struct ckpt_xen_dom *d, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct ckpt_xen_dom *d, int rc, const char *fmt, ...)
{
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    vsnprintf(d->err, sizeof(d->err), fmt, ap);
    va_end(ap);
    n = strlen(d->err);
    if (d->lastlog[0] && n + 4 < sizeof(d->err))
        snprintf(d->err + n, sizeof(d->err) - n, " (%s)", d->lastlog);
    d->lastlog[0] = '\0';
    return rc;
}

const char *ckpt_xen_dom_error(const struct ckpt_xen_dom *d)
{
    return d->err;
}

/* libxc's logger: keep the last error line for the next message. */
__attribute__((format(printf, 5, 0))) static void
lg_vmessage(xentoollog_logger *lg, xentoollog_level level, int errnoval,
            const char *context, const char *fmt, va_list al)
{
    struct ckpt_xen_dom *d =
        (struct ckpt_xen_dom *)((char *)lg - offsetof(struct ckpt_xen_dom, lg));
    char line[256];

    vsnprintf(line, sizeof(line), fmt, al);
    if (level >= XTL_ERROR) {
        int n = snprintf(d->lastlog, sizeof(d->lastlog), "%s", line);

        if (errnoval >= 0 && n > 0 && (size_t)n < sizeof(d->lastlog))
            snprintf(d->lastlog + n, sizeof(d->lastlog) - (size_t)n, ": %s",
                     strerror(errnoval));
    }
    if (level >= XTL_WARN)
        colo_debug("xen: %s%s%s", context ? context : "", context ? ": " : "",
                   line);
}

static void lg_progress(struct xentoollog_logger *lg, const char *context,
                        const char *doing_what, int percent, unsigned long done,
                        unsigned long total)
{
    (void)lg;
    (void)context;
    (void)doing_what;
    (void)percent;
    (void)done;
    (void)total;
}

static void lg_destroy(struct xentoollog_logger *lg)
{
    (void)lg;
}

int ckpt_xen_dom_open(struct ckpt_xen_dom **ret, char *why, size_t whysz)
{
    struct ckpt_xen_dom *d = calloc(1, sizeof(*d));

    *ret = NULL;
    if (!d)
        return -ENOMEM;
    d->lg.vmessage = lg_vmessage;
    d->lg.progress = lg_progress;
    d->lg.destroy = lg_destroy;
    d->userdata_dir = "/var/lib/xen";
    d->xch = xc_interface_open(&d->lg, &d->lg, 0);
    if (!d->xch) {
        snprintf(why, whysz,
                 "no Xen hypervisor: xc_interface_open failed (%s); is this "
                 "a Xen dom0 with privcmd?",
                 strerror(errno));
        free(d);
        return -COLO_EXEN;
    }
    d->xsh = xs_open(0);
    if (!d->xsh) {
        snprintf(why, whysz,
                 "xenstore: cannot connect (%s); is xenstored "
                 "running?",
                 strerror(errno));
        xc_interface_close(d->xch);
        free(d);
        return -COLO_EXEN;
    }
    *ret = d;
    return 0;
}

void ckpt_xen_dom_close(struct ckpt_xen_dom *d)
{
    if (!d)
        return;
    ckpt_xen_dom_suspend_cancel(d);
    if (d->xs_ev)
        event_free(d->xs_ev);
    if (d->timer)
        event_free(d->timer);
    xs_close(d->xsh);
    xc_interface_close(d->xch);
    free(d);
}

void ckpt_xen_dom_set_userdata_dir(struct ckpt_xen_dom *d, const char *dir)
{
    d->userdata_dir = dir;
}

/* ---- small xenstore helpers -------------------------------------------- */

static char *xs_get(struct ckpt_xen_dom *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static char *xs_get(struct ckpt_xen_dom *d, const char *fmt, ...)
{
    char path[256];
    unsigned int len;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    return xs_read(d->xsh, XBT_NULL, path, &len);
}

static bool xs_put(struct ckpt_xen_dom *d, xs_transaction_t t, const char *val,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static bool xs_put(struct ckpt_xen_dom *d, xs_transaction_t t, const char *val,
                   const char *fmt, ...)
{
    char path[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    return xs_write(d->xsh, t, path, val, strlen(val));
}

static bool xs_mknod(struct ckpt_xen_dom *d, xs_transaction_t t,
                     struct xs_permissions *perms, unsigned int n,
                     const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static bool xs_mknod(struct ckpt_xen_dom *d, xs_transaction_t t,
                     struct xs_permissions *perms, unsigned int n,
                     const char *fmt, ...)
{
    char path[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    return xs_write(d->xsh, t, path, "", 0) &&
           xs_set_permissions(d->xsh, t, path, perms, n);
}

static void uuid_str(const uint8_t u[16], char out[37])
{
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10],
             u[11], u[12], u[13], u[14], u[15]);
}

static int uuid_parse(const char *s, uint8_t u[16])
{
    int i = 0;

    for (; *s && i < 16; s++) {
        unsigned int v;

        if (*s == '-')
            continue;
        if (sscanf(s, "%2x", &v) != 1 || !s[1])
            return -EINVAL;
        u[i++] = (uint8_t)v;
        s++;
    }
    return i == 16 && !*s ? 0 : -EINVAL;
}

/* ---- lookup and info --------------------------------------------------- */

static int getinfo(struct ckpt_xen_dom *d, uint32_t domid,
                   xc_domaininfo_t *info)
{
    int n = xc_domain_getinfolist(d->xch, domid, 1, info);

    if (n < 0)
        return fail(d, -errno, "domain %" PRIu32 ": getinfo failed: %s", domid,
                    strerror(errno));
    if (n != 1 || info->domain != domid)
        return fail(d, -ENOENT, "no domain %" PRIu32, domid);
    return 0;
}

int ckpt_xen_dom_info(struct ckpt_xen_dom *d, uint32_t domid,
                      struct ckpt_xen_dominfo *ret)
{
    xc_domaininfo_t info;
    char *s;
    int rc;

    memset(ret, 0, sizeof(*ret));
    rc = getinfo(d, domid, &info);
    if (rc < 0)
        return rc;
    ret->domid = domid;
    ret->paused = info.flags & XEN_DOMINF_paused;
    ret->shutdown = info.flags & XEN_DOMINF_shutdown;
    ret->dying = info.flags & XEN_DOMINF_dying;
    ret->shutdown_reason =
        (info.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask;
    ret->crashed = ret->shutdown && ret->shutdown_reason == SHUTDOWN_crash;
    ret->max_memkb = info.max_pages * (XC_PAGE_SIZE / 1024);
    ret->nr_pages = info.tot_pages;
    ret->max_vcpus =
        info.max_vcpu_id == XEN_INVALID_MAX_VCPU_ID ? 0 : info.max_vcpu_id + 1;
    memcpy(ret->uuid, info.handle, 16);
    if (!(info.flags & XEN_DOMINF_hvm_guest)) {
        ret->type = CKPT_XEN_DOM_PV;
    } else {
        /* libxl's rule: its own record, else the emulation flags (a PVH
         * container emulates the local APIC at most). */
        s = xs_get(d, "/libxl/%" PRIu32 "/type", domid);
        if (s && strcmp(s, "pvh") == 0)
            ret->type = CKPT_XEN_DOM_PVH;
        else if (s && strcmp(s, "hvm") == 0)
            ret->type = CKPT_XEN_DOM_HVM;
        else
            ret->type =
                (info.arch_config.emulation_flags & ~XEN_X86_EMU_LAPIC) == 0
                    ? CKPT_XEN_DOM_PVH
                    : CKPT_XEN_DOM_HVM;
        free(s);
    }
    s = xs_get(d, "/local/domain/%" PRIu32 "/name", domid);
    if (s)
        snprintf(ret->name, sizeof(ret->name), "%s", s);
    free(s);
    return 0;
}

int ckpt_xen_dom_find(struct ckpt_xen_dom *d, const char *what,
                      uint32_t *ret_domid)
{
    xc_domaininfo_t info;
    char **ents = NULL, *end;
    unsigned int n = 0, i;
    unsigned long v;
    int rc = -ENOENT;

    errno = 0;
    v = strtoul(what, &end, 10);
    if (!errno && end != what && !*end) {
        if (v == 0)
            return fail(d, -EPERM, "domain 0 is dom0 itself");
        if (v >= DOMID_FIRST_RESERVED)
            return fail(d, -EINVAL, "'%s' is not a domain id", what);
        rc = getinfo(d, (uint32_t)v, &info);
        if (rc == 0)
            *ret_domid = (uint32_t)v;
        return rc;
    }
    ents = xs_directory(d->xsh, XBT_NULL, "/local/domain", &n);
    for (i = 0; ents && i < n; i++) {
        char *name = xs_get(d, "/local/domain/%s/name", ents[i]);

        if (name && strcmp(name, what) == 0) {
            v = strtoul(ents[i], NULL, 10);
            free(name);
            if (v == 0) {
                rc = fail(d, -EPERM, "'%s' is dom0 itself", what);
                goto out;
            }
            *ret_domid = (uint32_t)v;
            rc = 0;
            goto out;
        }
        free(name);
    }
    rc = fail(d, -ENOENT, "no domain named '%s'", what);
out:
    free(ents);
    return rc;
}

static int userdata_path(struct ckpt_xen_dom *d, uint32_t domid,
                         const uint8_t uuid[16], char *out, size_t outsz)
{
    char u[37];

    uuid_str(uuid, u);
    if ((size_t)snprintf(out, outsz, "%s/userdata-d.%" PRIu32 ".%s.libxl-json",
                         d->userdata_dir, domid, u) >= outsz)
        return -ENAMETOOLONG;
    return 0;
}

int ckpt_xen_dom_config(struct ckpt_xen_dom *d, uint32_t domid, char **ret_json,
                        size_t *ret_len)
{
    struct ckpt_xen_dominfo di;
    char path[512], *buf = NULL;
    size_t len = 0;
    int rc;

    *ret_json = NULL;
    rc = ckpt_xen_dom_info(d, domid, &di);
    if (rc < 0)
        return rc;
    rc = userdata_path(d, domid, di.uuid, path, sizeof(path));
    if (rc < 0)
        return fail(d, rc, "userdata path too long");
    rc = colo_read_file(path, 4u << 20, &buf, &len);
    if (rc < 0)
        return fail(d, rc, "domain %" PRIu32 ": no libxl configuration: %s: %s",
                    domid, path, colo_strerror(rc));
    /* colo_read_file NUL-terminates (fd.c); be sure. */
    *ret_json = buf;
    *ret_len = strnlen(buf, len);
    return 0;
}

static bool vm_path_shared(struct ckpt_xen_dom *d, uint32_t domid,
                           const char *vm);

/* ---- pause, resume, destroy -------------------------------------------- */

int ckpt_xen_dom_pause(struct ckpt_xen_dom *d, uint32_t domid)
{
    if (xc_domain_pause(d->xch, domid) < 0)
        return fail(d, -COLO_EXEN, "domain %" PRIu32 ": pause failed: %s",
                    domid, strerror(errno));
    return 0;
}

int ckpt_xen_dom_unpause(struct ckpt_xen_dom *d, uint32_t domid)
{
    if (xc_domain_unpause(d->xch, domid) < 0)
        return fail(d, -COLO_EXEN, "domain %" PRIu32 ": unpause failed: %s",
                    domid, strerror(errno));
    return 0;
}

int ckpt_xen_dom_resume(struct ckpt_xen_dom *d, uint32_t domid, bool fast)
{
    struct ckpt_xen_dominfo di;

    /* HVM: the device model first (libxl__domain_resume): it was stopped
     * for its state to be taken. */
    if (ckpt_xen_dom_info(d, domid, &di) == 0 && di.type == CKPT_XEN_DOM_HVM) {
        char why[256];
        int rc = ckpt_xen_dm_call(domid, "cont", NULL, DM_QMP_TIMEOUT_MS, why,
                                  sizeof(why));

        if (rc < 0)
            return fail(d, rc,
                        "domain %" PRIu32 ": resuming its device model: %s",
                        domid, why);
    }
    return ckpt_xen_dom_resume_vcpus(d, domid, fast);
}

int ckpt_xen_dom_resume_vcpus(struct ckpt_xen_dom *d, uint32_t domid, bool fast)
{
    if (xc_domain_resume(d->xch, domid, fast ? 1 : 0) < 0)
        return fail(d, -COLO_EXEN, "domain %" PRIu32 ": resume failed: %s",
                    domid, strerror(errno));
    if (!xs_resume_domain(d->xsh, domid))
        return fail(d, -COLO_EXEN,
                    "domain %" PRIu32 ": xenstore resume failed: %s", domid,
                    strerror(errno));
    return 0;
}

int ckpt_xen_dom_logdirty(struct ckpt_xen_dom *d, uint32_t domid, bool on)
{
    if (!on) {
        if (xc_shadow_control(d->xch, domid, XEN_DOMCTL_SHADOW_OP_OFF, NULL,
                              0) < 0)
            return fail(d, -COLO_EXEN,
                        "domain %" PRIu32 ": log-dirty off failed: %s", domid,
                        strerror(errno));
        return 0;
    }
    if (xc_shadow_control(d->xch, domid, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY,
                          NULL, 0) == 0)
        return 0;
    /* Already on? There is no query: off, then on. */
    (void)xc_shadow_control(d->xch, domid, XEN_DOMCTL_SHADOW_OP_OFF, NULL, 0);
    if (xc_shadow_control(d->xch, domid, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY,
                          NULL, 0) < 0)
        return fail(d, -COLO_EXEN,
                    "domain %" PRIu32 ": log-dirty on failed: %s", domid,
                    strerror(errno));
    return 0;
}

/* After a soft reset: domid's unbound port to remote allocated again. Xen
 * hands out the lowest free port, so normally *port itself; if not, the
 * guest's HVM param follows and 1 is returned. */
static int realloc_port(struct ckpt_xen_dom *d, uint32_t domid, uint32_t remote,
                        int param, uint32_t *port, const char *what)
{
    int p = xc_evtchn_alloc_unbound(d->xch, domid, remote);

    if (p < 0)
        return fail(d, -COLO_EXEN, "domain %" PRIu32 ": %s event channel: %s",
                    domid, what, strerror(errno));
    if ((uint32_t)p == *port)
        return 0;
    *port = (uint32_t)p;
    if (xc_hvm_param_set(d->xch, domid, param, (uint64_t)p) < 0)
        return fail(d, -COLO_EXEN, "domain %" PRIu32 ": %s port: %s", domid,
                    what, strerror(errno));
    return 1;
}

int ckpt_xen_dom_reset_resume(struct ckpt_xen_dom *d, uint32_t domid,
                              struct ckpt_xen_newdom *nd, uint64_t store_gfn)
{
    char num[32];
    int rc;

    rc = ckpt_xen_dom_pause(d, domid);
    if (rc < 0)
        return rc;
    if (xc_domain_soft_reset(d->xch, domid) < 0) {
        int e = errno;

        (void)xc_domain_unpause(d->xch, domid);
        return fail(d, -COLO_EXEN, "domain %" PRIu32 ": soft reset failed: %s",
                    domid, strerror(e));
    }
    rc = realloc_port(d, domid, nd->store_domid, HVM_PARAM_STORE_EVTCHN,
                      &nd->store_evtchn, "store");
    if (rc < 0)
        return rc;
    if (rc > 0) {
        snprintf(num, sizeof(num), "%" PRIu32, nd->store_evtchn);
        xs_put(d, XBT_NULL, num, "/local/domain/%" PRIu32 "/store/port", domid);
    }
    rc = realloc_port(d, domid, nd->console_domid, HVM_PARAM_CONSOLE_EVTCHN,
                      &nd->console_evtchn, "console");
    if (rc < 0)
        return rc;
    /* xenstored binds its end again on a second introduce. */
    if (!xs_introduce_domain(d->xsh, domid, store_gfn, nd->store_evtchn))
        return fail(d, -COLO_EXEN,
                    "domain %" PRIu32 ": introducing it again: %s", domid,
                    strerror(errno));
    /* xenconsoled rebinds when its watch fires and its port is no longer
     * connected. */
    snprintf(num, sizeof(num), "%" PRIu32, nd->console_evtchn);
    if (!xs_put(d, XBT_NULL, num, "/local/domain/%" PRIu32 "/console/port",
                domid))
        return fail(d, -COLO_EXEN,
                    "xenstore: /local/domain/%" PRIu32 "/console/port: %s",
                    domid, strerror(errno));
    /* xenstored only reports the next suspend (@releaseDomain) once it
     * knows this one ended. */
    if (!xs_resume_domain(d->xsh, domid))
        return fail(d, -COLO_EXEN,
                    "domain %" PRIu32 ": xenstore resume failed: %s", domid,
                    strerror(errno));
    return ckpt_xen_dom_unpause(d, domid);
}

/* Backend classes an HVM domain's device model serves (libxl adds a
 * virtual keyboard to every HVM domain by default): they go with it. */
static bool dm_backend(const char *cls)
{
    return strcmp(cls, "vkbd") == 0;
}

/* A backend device class other than the console (which colo writes
 * itself) and, for an HVM domain, its device model's, or NULL. Returns a
 * malloc'd name. */
static char *backend_device(struct ckpt_xen_dom *d, uint32_t domid, bool hvm)
{
    char **cls;
    unsigned int n = 0, i;
    char *found = NULL;

    cls = xs_directory(d->xsh, XBT_NULL, "/local/domain/0/backend", &n);
    for (i = 0; cls && i < n && !found; i++) {
        char *s;

        if (strcmp(cls[i], "console") == 0 || (hvm && dm_backend(cls[i])))
            continue;
        s = xs_get(d, "/local/domain/0/backend/%s/%" PRIu32 "/0/frontend-id",
                   cls[i], domid);
        if (!s) {
            char path[160];
            char **devs;
            unsigned int m = 0;

            snprintf(path, sizeof(path), "/local/domain/0/backend/%s/%" PRIu32,
                     cls[i], domid);
            devs = xs_directory(d->xsh, XBT_NULL, path, &m);
            if (devs && m > 0)
                found = strdup(cls[i]);
            free(devs);
        } else {
            found = strdup(cls[i]);
        }
        free(s);
    }
    free(cls);
    return found;
}

/* Is pid the device model of domid? Its command line has
 * "-xen-domid <domid>" (a recycled pid does not). */
static bool is_dm_of(int pid, uint32_t domid)
{
    char path[64], buf[4096], want[16];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    snprintf(want, sizeof(want), "%" PRIu32, domid);
    for (char *p = buf; p < buf + n; p += strlen(p) + 1)
        if (strcmp(p, "-xen-domid") == 0 && p + strlen(p) + 1 < buf + n &&
            strcmp(p + strlen(p) + 1, want) == 0)
            return true;
    return false;
}

static void dm_kill(struct ckpt_xen_dom *d, uint32_t domid)
{
    char *s =
        xs_get(d, "/local/domain/%" PRIu32 "/image/device-model-pid", domid);
    int pid = s ? atoi(s) : 0;

    free(s);
    if (pid > 1 && is_dm_of(pid, domid) && kill(pid, SIGKILL) == 0)
        colo_debug("domain %" PRIu32 ": device model (pid %d) killed", domid,
                   pid);
}

#define DM_XS_MAX (64u << 10) /* cap on EMULATOR_XENSTORE_DATA */

int ckpt_xen_dom_dm_xs_save(struct ckpt_xen_dom *d, uint32_t domid, char **ret,
                            size_t *ret_len)
{
    static const char *const sub[] = {"start_addr", "size", "name"};
    char dir[96], **ents;
    unsigned int n = 0;
    char *buf = NULL;
    size_t len = 0;

    *ret = NULL;
    *ret_len = 0;
    snprintf(dir, sizeof(dir),
             "/local/domain/0/device-model/%" PRIu32 "/physmap", domid);
    ents = xs_directory(d->xsh, XBT_NULL, dir, &n);
    for (unsigned int i = 0; ents && i < n; i++) {
        for (size_t k = 0; k < sizeof(sub) / sizeof(sub[0]); k++) {
            char key[256];
            char *val = xs_get(d, "%s/%s/%s", dir, ents[i], sub[k]);
            size_t kl, vl;
            char *nb;

            if (!val)
                continue; /* libxl skips missing subkeys too */
            snprintf(key, sizeof(key), "physmap/%s/%s", ents[i], sub[k]);
            kl = strlen(key) + 1;
            vl = strlen(val) + 1;
            nb =
                len + kl + vl <= DM_XS_MAX ? realloc(buf, len + kl + vl) : NULL;
            if (!nb) {
                free(val);
                free(buf);
                free(ents);
                return fail(d, -ENOMEM,
                            "domain %" PRIu32 ": device-model xenstore "
                            "data over %u bytes",
                            domid, DM_XS_MAX);
            }
            buf = nb;
            memcpy(buf + len, key, kl);
            memcpy(buf + len + kl, val, vl);
            len += kl + vl;
            free(val);
        }
    }
    free(ents);
    *ret = buf;
    *ret_len = len;
    return 0;
}

static bool dm_key_ok(const char *k)
{
    if (strncmp(k, "physmap/", 8) != 0 || strstr(k, "..") || strstr(k, "//"))
        return false;
    for (const char *p = k; *p; p++)
        if (*p <= ' ' || *p > '~')
            return false;
    return true;
}

int ckpt_xen_dom_dm_xs_restore(struct ckpt_xen_dom *d, uint32_t domid,
                               const char *data, size_t len)
{
    struct xs_permissions perm[2] = {{0, XS_PERM_NONE}, {domid, XS_PERM_READ}};
    char root[96];
    size_t off = 0;

    snprintf(root, sizeof(root), "/local/domain/0/device-model/%" PRIu32,
             domid);
    if (len > DM_XS_MAX)
        return fail(d, -COLO_ESTREAM_TOO_BIG,
                    "device-model xenstore data of %zu bytes is over the "
                    "%u byte cap",
                    len, DM_XS_MAX);
    /* Check everything before writing anything. */
    while (off < len) {
        const char *k = data + off, *v;
        size_t kl = strnlen(k, len - off);

        if (kl == len - off || kl == 0 || kl > 200)
            goto corrupt;
        v = k + kl + 1;
        if ((size_t)(v - data) >= len ||
            strnlen(v, len - (size_t)(v - data)) == len - (size_t)(v - data))
            goto corrupt;
        if (!dm_key_ok(k))
            goto corrupt;
        off = (size_t)(v - data) + strlen(v) + 1;
    }
    if (!xs_mknod(d, XBT_NULL, perm, 2, "%s", root))
        return fail(d, -COLO_EXEN, "xenstore: %s: %s", root, strerror(errno));
    for (off = 0; off < len;) {
        const char *k = data + off, *v = k + strlen(k) + 1;

        if (!xs_put(d, XBT_NULL, v, "%s/%s", root, k))
            return fail(d, -COLO_EXEN, "xenstore: %s/%s: %s", root, k,
                        strerror(errno));
        off = (size_t)(v - data) + strlen(v) + 1;
    }
    return 0;
corrupt:
    return fail(d, -COLO_ESTREAM_CORRUPT,
                "malformed device-model xenstore data at byte %zu", off);
}

int ckpt_xen_dom_dm_record(struct ckpt_xen_dom *d, uint32_t domid, int pid)
{
    char num[16];

    snprintf(num, sizeof(num), "%d", pid);
    if (!xs_put(d, XBT_NULL, num,
                "/local/domain/%" PRIu32 "/image/device-model-pid", domid))
        return fail(d, -COLO_EXEN, "xenstore: device-model-pid: %s",
                    strerror(errno));
    return 0;
}

int ckpt_xen_dom_destroy(struct ckpt_xen_dom *d, uint32_t domid)
{
    struct ckpt_xen_dominfo di;
    char path[512], *vm, *dev;
    glob_t g;
    size_t i;
    int rc;

    rc = ckpt_xen_dom_info(d, domid, &di);
    if (rc < 0)
        return rc;
    dev = backend_device(d, domid, di.type == CKPT_XEN_DOM_HVM);
    if (dev) {
        rc = fail(d, -EBUSY,
                  "domain %" PRIu32 " has '%s' backend devices; colo does "
                  "not tear those down (use 'xl destroy %" PRIu32 "')",
                  domid, dev, domid);
        free(dev);
        return rc;
    }
    vm = xs_get(d, "/local/domain/%" PRIu32 "/vm", domid);
    if (di.type == CKPT_XEN_DOM_HVM)
        dm_kill(d, domid);
    if (xc_domain_destroy(d->xch, domid) < 0 && errno != ESRCH) {
        free(vm);
        return fail(d, -COLO_EXEN, "domain %" PRIu32 ": destroy failed: %s",
                    domid, strerror(errno));
    }
    snprintf(path, sizeof(path), "/local/domain/%" PRIu32, domid);
    xs_rm(d->xsh, XBT_NULL, path);
    if (vm && vm[0] == '/' && !vm_path_shared(d, domid, vm))
        xs_rm(d->xsh, XBT_NULL, vm);
    snprintf(path, sizeof(path), "/libxl/%" PRIu32, domid);
    xs_rm(d->xsh, XBT_NULL, path);
    snprintf(path, sizeof(path), "/local/domain/0/backend/console/%" PRIu32,
             domid);
    xs_rm(d->xsh, XBT_NULL, path);
    if (di.type == CKPT_XEN_DOM_HVM) {
        snprintf(path, sizeof(path), "/local/domain/0/device-model/%" PRIu32,
                 domid);
        xs_rm(d->xsh, XBT_NULL, path);
        snprintf(path, sizeof(path), "/local/domain/0/backend/vkbd/%" PRIu32,
                 domid);
        xs_rm(d->xsh, XBT_NULL, path);
        snprintf(path, sizeof(path), "/var/run/xen/qmp-libxl-%" PRIu32, domid);
        unlink(path);
        snprintf(path, sizeof(path), "/var/run/xen/qmp-libxenstat-%" PRIu32,
                 domid);
        unlink(path);
    }
    free(vm);
    snprintf(path, sizeof(path), "%s/userdata-d.%" PRIu32 ".*", d->userdata_dir,
             domid);
    if (glob(path, 0, NULL, &g) == 0) {
        for (i = 0; i < g.gl_pathc; i++)
            unlink(g.gl_pathv[i]);
        globfree(&g);
    }
    return 0;
}

int ckpt_xen_dom_rename(struct ckpt_xen_dom *d, uint32_t domid,
                        const char *name)
{
    uint32_t other;
    char *vm;
    bool ok;

    if (ckpt_xen_dom_find(d, name, &other) == 0 && other != domid)
        return fail(d, -EEXIST, "a domain named '%s' exists already", name);
    vm = xs_get(d, "/local/domain/%" PRIu32 "/vm", domid);
    ok = xs_put(d, XBT_NULL, name, "/local/domain/%" PRIu32 "/name", domid);
    if (ok && vm && vm[0] == '/')
        ok = xs_put(d, XBT_NULL, name, "%s/name", vm);
    free(vm);
    if (!ok)
        return fail(d, -COLO_EXEN, "domain %" PRIu32 ": rename: %s", domid,
                    strerror(errno));
    return 0;
}

/* Another domain still uses this /vm/UUID path (a local migration: both
 * halves share the UUID, as with xl). */
static bool vm_path_shared(struct ckpt_xen_dom *d, uint32_t domid,
                           const char *vm)
{
    char **ents;
    unsigned int n = 0, i;
    bool shared = false;

    ents = xs_directory(d->xsh, XBT_NULL, "/local/domain", &n);
    for (i = 0; ents && i < n && !shared; i++) {
        char *other;

        if (strtoul(ents[i], NULL, 10) == domid)
            continue;
        other = xs_get(d, "/local/domain/%s/vm", ents[i]);
        shared = other && strcmp(other, vm) == 0;
        free(other);
    }
    free(ents);
    return shared;
}

/* ---- suspend ----------------------------------------------------------- */

static void sus_stop(struct ckpt_xen_dom *d)
{
    if (d->sus_watching) {
        xs_unwatch(d->xsh, "@releaseDomain", d->sus_token);
        xs_unwatch(d->xsh, d->sus_path, d->sus_token);
        d->sus_watching = false;
    }
    if (d->xs_ev)
        event_del(d->xs_ev);
    if (d->timer)
        event_del(d->timer);
    d->sus_active = false;
}

static void sus_finish(struct ckpt_xen_dom *d, int rc)
{
    ckpt_xen_suspend_done *done = d->sus_done;
    void *opaque = d->sus_opaque;

    sus_stop(d);
    done(d, rc, opaque); /* last: d may be closed inside */
}

/* 1 suspended, 0 not yet, < 0 something else happened to it. */
static int sus_check(struct ckpt_xen_dom *d)
{
    xc_domaininfo_t info;
    unsigned int reason;
    int rc = getinfo(d, d->sus_domid, &info);

    if (rc < 0)
        return fail(d, -COLO_EXEN,
                    "domain %" PRIu32 " disappeared while suspending",
                    d->sus_domid);
    if (!(info.flags & XEN_DOMINF_shutdown))
        return 0;
    reason = (info.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask;
    if (reason == SHUTDOWN_suspend)
        return 1;
    return fail(d, -COLO_EXEN,
                "domain %" PRIu32 " shut down with reason %u instead of "
                "suspending",
                d->sus_domid, reason);
}

static void sus_xs_ready(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_xen_dom *d = arg;
    char **w;
    int rc;

    (void)fd;
    (void)what;
    /* Drain every pending watch event (xenstore.h: until EAGAIN). */
    while ((w = xs_check_watch(d->xsh)) != NULL)
        free(w);
    if (!d->sus_active)
        return;
    rc = sus_check(d);
    if (rc != 0)
        sus_finish(d, rc > 0 ? 0 : rc);
}

static void sus_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_xen_dom *d = arg;
    xs_transaction_t t;
    char *s;
    int rc;

    (void)fd;
    (void)what;
    /* Last look, then withdraw the request if the guest never took it
     * (libxl does the same), so a late suspend cannot surprise anyone. */
    rc = sus_check(d);
    if (rc != 0) {
        sus_finish(d, rc > 0 ? 0 : rc);
        return;
    }
    if (d->sus_via_xs) {
        for (int tries = 0; tries < 5; tries++) {
            t = xs_transaction_start(d->xsh);
            s = xs_read(d->xsh, t, d->sus_path, NULL);
            if (s && strcmp(s, "suspend") == 0)
                xs_rm(d->xsh, t, d->sus_path);
            free(s);
            if (xs_transaction_end(d->xsh, t, false) || errno != EAGAIN)
                break;
        }
    }
    fail(d, -ETIMEDOUT,
         "domain %" PRIu32 " did not suspend in time (does the guest have "
         "Xen PV drivers that handle control/shutdown?)",
         d->sus_domid);
    sus_finish(d, -ETIMEDOUT);
}

int ckpt_xen_dom_suspend_start(struct ckpt_xen_dom *d, struct event_base *base,
                               uint32_t domid, int timeout_ms,
                               ckpt_xen_suspend_done *done, void *opaque)
{
    struct ckpt_xen_dominfo di;
    struct timeval tv;
    uint64_t cb_irq = 0;
    int rc;

    if (d->sus_active)
        return fail(d, -EBUSY, "a suspend is already in progress");
    rc = ckpt_xen_dom_info(d, domid, &di);
    if (rc < 0)
        return rc;
    if (di.shutdown)
        return fail(d, -COLO_EXEN,
                    "domain %" PRIu32 " is already shut down (reason %u)",
                    domid, di.shutdown_reason);
    if (d->base != base) {
        if (d->xs_ev)
            event_free(d->xs_ev);
        if (d->timer)
            event_free(d->timer);
        d->xs_ev = event_new(base, xs_fileno(d->xsh), EV_READ | EV_PERSIST,
                             sus_xs_ready, d);
        d->timer = evtimer_new(base, sus_timeout, d);
        d->base = base;
        if (!d->xs_ev || !d->timer)
            return fail(d, -ENOMEM, "out of memory");
    }
    d->sus_domid = domid;
    d->sus_done = done;
    d->sus_opaque = opaque;
    snprintf(d->sus_token, sizeof(d->sus_token), "colo-suspend-%" PRIu32,
             domid);
    snprintf(d->sus_path, sizeof(d->sus_path),
             "/local/domain/%" PRIu32 "/control/shutdown", domid);
    /* An HVM guest without PV drivers cannot see control/shutdown: the
     * hypervisor suspends it (libxl's rule). */
    d->sus_via_xs = true;
    if (di.type == CKPT_XEN_DOM_HVM &&
        xc_hvm_param_get(d->xch, domid, HVM_PARAM_CALLBACK_IRQ, &cb_irq) == 0 &&
        cb_irq == 0)
        d->sus_via_xs = false;
    if (!xs_watch(d->xsh, "@releaseDomain", d->sus_token) ||
        !xs_watch(d->xsh, d->sus_path, d->sus_token)) {
        rc = fail(d, -COLO_EXEN, "xenstore watch failed: %s", strerror(errno));
        xs_unwatch(d->xsh, "@releaseDomain", d->sus_token);
        return rc;
    }
    d->sus_watching = true;
    if (d->sus_via_xs) {
        if (!xs_write(d->xsh, XBT_NULL, d->sus_path, "suspend", 7)) {
            rc = fail(d, -COLO_EXEN, "domain %" PRIu32 ": writing %s: %s",
                      domid, d->sus_path, strerror(errno));
            sus_stop(d);
            return rc;
        }
    } else if (xc_domain_shutdown(d->xch, domid, SHUTDOWN_suspend) < 0) {
        rc = fail(d, -COLO_EXEN, "domain %" PRIu32 ": shutdown(suspend): %s",
                  domid, strerror(errno));
        sus_stop(d);
        return rc;
    }
    d->sus_active = true;
    event_add(d->xs_ev, NULL);
    tv = colo_ms_to_tv((uint64_t)timeout_ms);
    event_add(d->timer, &tv);
    /* The watches fire once at registration, so the first check comes
     * from the loop even if the guest was quick. */
    return 0;
}

void ckpt_xen_dom_suspend_cancel(struct ckpt_xen_dom *d)
{
    if (d && d->sus_active)
        sus_stop(d);
}

/* ---- the receiving side ------------------------------------------------ */

static int json_u64(json_t *o, const char *key, uint64_t *v)
{
    json_t *j = json_object_get(o, key);

    if (!j)
        return 0;
    if (!json_is_integer(j) || json_integer_value(j) < 0)
        return -EINVAL;
    *v = (uint64_t)json_integer_value(j);
    return 1;
}

/* libxl's defbool in JSON: "True", "False" or "<default>". */
static bool json_defbool(json_t *o, const char *key, bool dflt)
{
    const char *s = json_string_value(json_object_get(o, key));

    if (s && strcmp(s, "True") == 0)
        return true;
    if (s && strcmp(s, "False") == 0)
        return false;
    return dflt;
}

/* b_info."type.hvm" and what libxl's defaults make of a missing field.
 * Anything the device model would need beyond colo's subset (disks,
 * nics, USB, sound, passthrough, a stub domain) is refused here. */
static int hvm_from_json(json_t *b, struct ckpt_xen_newdom *ret, char *why,
                         size_t whysz)
{
    static const char *const refused[] = {
        "usbdevice_list", "usbdevice", "soundhw", "spice", "vnc", "sdl", "rdm"};
    json_t *h = json_object_get(b, "type.hvm");
    const char *s;
    uint64_t v;

    if (!json_is_object(h))
        h = json_object(); /* all defaults */
    else
        json_incref(h);
    s = json_string_value(json_object_get(b, "device_model_version"));
    if (s && strcmp(s, "qemu_xen") != 0) {
        snprintf(why, whysz,
                 "b_info.device_model_version '%s': colo starts qemu_xen "
                 "device models only",
                 s);
        goto bad;
    }
    if (json_defbool(b, "device_model_stubdomain", false)) {
        snprintf(why, whysz, "a stub-domain device model is not supported");
        goto bad;
    }
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        json_t *o = json_object_get(h, refused[i]);

        if (json_is_object(o) &&
            json_defbool(o, "enable", false)) { /* vnc, sdl, spice */
            snprintf(why, whysz,
                     "type.hvm.%s is on; colo's device model has no "
                     "display",
                     refused[i]);
            goto bad;
        }
        if ((json_is_array(o) && json_array_size(o) > 0) ||
            (json_is_string(o) && strcmp(refused[i], "rdm") != 0)) {
            snprintf(why, whysz, "type.hvm.%s is not supported", refused[i]);
            goto bad;
        }
    }
    if (json_u64(b, "video_memkb", &v) > 0 && v < (1ull << 30))
        ret->hvm.video_memkb = v;
    s = json_string_value(json_object_get(json_object_get(h, "vga"), "kind"));
    if (!s)
        s = "cirrus"; /* libxl's default */
    snprintf(ret->hvm.vga, sizeof(ret->hvm.vga), "%s", s);
    if (strcmp(s, "none") != 0 && strcmp(s, "std") != 0 &&
        strcmp(s, "cirrus") != 0) {
        snprintf(why, whysz, "type.hvm.vga.kind '%s' is not supported", s);
        goto bad;
    }
    if (strcmp(s, "none") == 0)
        ret->hvm.video_memkb = 0;
    s = json_string_value(json_object_get(h, "serial"));
    if (s && strlen(s) >= sizeof(ret->hvm.serial)) {
        snprintf(why, whysz, "type.hvm.serial is too long");
        goto bad;
    }
    snprintf(ret->hvm.serial, sizeof(ret->hvm.serial), "%s", s ? s : "");
    s = json_string_value(json_object_get(h, "boot"));
    if (!s || !*s || strlen(s) >= sizeof(ret->hvm.boot) ||
        strspn(s, "acdn") != strlen(s))
        s = "cda";
    snprintf(ret->hvm.boot, sizeof(ret->hvm.boot), "%s", s);
    {
        static const struct {
            const char *key;
            size_t off, sz;
        } boot[] = {
            {"kernel", offsetof(struct ckpt_xen_newdom, hvm.kernel),
             sizeof(ret->hvm.kernel)},
            {"ramdisk", offsetof(struct ckpt_xen_newdom, hvm.ramdisk),
             sizeof(ret->hvm.ramdisk)},
            {"cmdline", offsetof(struct ckpt_xen_newdom, hvm.cmdline),
             sizeof(ret->hvm.cmdline)},
        };

        for (size_t i = 0; i < sizeof(boot) / sizeof(boot[0]); i++) {
            s = json_string_value(json_object_get(b, boot[i].key));
            if (!s)
                continue;
            if (strlen(s) >= boot[i].sz) {
                snprintf(why, whysz, "b_info.%s is too long", boot[i].key);
                goto bad;
            }
            memcpy((char *)ret + boot[i].off, s, strlen(s) + 1);
        }
    }
    ret->hvm.acpi = json_defbool(h, "acpi", json_defbool(b, "acpi", true));
    ret->hvm.hpet = json_defbool(h, "hpet", true);
    ret->hvm.vpt_align = json_defbool(h, "vpt_align", true);
    ret->hvm.xen_platform_pci = json_defbool(h, "xen_platform_pci", true);
    s = json_string_value(json_object_get(h, "timer_mode"));
    if (!s)
        s = json_string_value(json_object_get(b, "timer_mode"));
    if (!s || strcmp(s, "no_delay_for_missed_ticks") == 0 ||
        strcmp(s, "default") == 0 || strcmp(s, "unknown") == 0)
        ret->hvm.timer_mode = 1;
    else if (strcmp(s, "delay_for_missed_ticks") == 0)
        ret->hvm.timer_mode = 0;
    else if (strcmp(s, "no_missed_ticks_pending") == 0)
        ret->hvm.timer_mode = 2;
    else if (strcmp(s, "one_missed_tick_pending") == 0)
        ret->hvm.timer_mode = 3;
    else {
        snprintf(why, whysz, "timer_mode '%s' is not supported", s);
        goto bad;
    }
    json_decref(h);
    return 0;
bad:
    json_decref(h);
    return -EINVAL;
}

int ckpt_xen_newdom_from_json(const char *json, size_t len,
                              struct ckpt_xen_newdom *ret, char *why,
                              size_t whysz)
{
    json_error_t jerr;
    json_t *root, *c, *b, *j;
    const char *s;
    uint64_t v;
    int rc = -EINVAL;

    memset(ret, 0, sizeof(*ret));
    ret->max_vcpus = 1;
    ret->avail_vcpus_mask = 1;
    ret->event_channels = 1023;
    ret->max_grant_frames = -1;
    ret->max_maptrack_frames = -1;
    ret->max_grant_version = -1;
    root = json_loadb(json, len, 0, &jerr);
    if (!root) {
        snprintf(why, whysz, "domain configuration: line %d: %s", jerr.line,
                 jerr.text);
        return -EINVAL;
    }
    c = json_object_get(root, "c_info");
    b = json_object_get(root, "b_info");
    if (!json_is_object(c) || !json_is_object(b)) {
        snprintf(why, whysz,
                 "domain configuration: no c_info/b_info "
                 "objects (not a libxl domain configuration)");
        goto out;
    }
    s = json_string_value(json_object_get(c, "type"));
    if (!s)
        s = json_string_value(json_object_get(b, "type"));
    if (s && strcmp(s, "pv") == 0) {
        ret->type = CKPT_XEN_DOM_PV;
    } else if (s && strcmp(s, "pvh") == 0) {
        ret->type = CKPT_XEN_DOM_PVH;
    } else if (s && strcmp(s, "hvm") == 0) {
        ret->type = CKPT_XEN_DOM_HVM;
    } else {
        snprintf(why, whysz,
                 "c_info.type: expected \"pv\", \"pvh\" or "
                 "\"hvm\"");
        goto out;
    }
    s = json_string_value(json_object_get(c, "name"));
    if (!s || !*s || strlen(s) >= sizeof(ret->name)) {
        snprintf(why, whysz, "c_info.name: expected a name of 1..%zu bytes",
                 sizeof(ret->name) - 1);
        goto out;
    }
    snprintf(ret->name, sizeof(ret->name), "%s", s);
    /* libxl__domain_create_info_setdefault: hardware paging by default. */
    ret->hap = json_defbool(c, "hap", true);
    s = json_string_value(json_object_get(c, "uuid"));
    if (s) {
        if (uuid_parse(s, ret->uuid) < 0) {
            snprintf(why, whysz, "c_info.uuid: '%s' is not a UUID", s);
            goto out;
        }
        ret->have_uuid = true;
    }
    v = 0;
    if (json_u64(b, "max_vcpus", &v) < 0 || v > 128) {
        snprintf(why, whysz, "b_info.max_vcpus: expected 1..128");
        goto out;
    }
    if (v)
        ret->max_vcpus = (unsigned int)v;
    j = json_object_get(b, "avail_vcpus");
    if (json_is_array(j)) {
        size_t i;
        json_t *e;

        ret->avail_vcpus_mask = 0;
        json_array_foreach(j, i, e)
        {
            if (json_is_integer(e) && json_integer_value(e) >= 0 &&
                json_integer_value(e) < 64)
                ret->avail_vcpus_mask |= 1ull << json_integer_value(e);
        }
    }
    if (json_u64(b, "max_memkb", &ret->max_memkb) <= 0 || ret->max_memkb == 0 ||
        ret->max_memkb > (1ull << 40)) {
        snprintf(why, whysz, "b_info.max_memkb: expected a size in KiB");
        goto out;
    }
    if (json_u64(b, "target_memkb", &ret->target_memkb) <= 0 ||
        ret->target_memkb == 0 || ret->target_memkb > ret->max_memkb)
        ret->target_memkb = ret->max_memkb;
    if (json_u64(b, "shadow_memkb", &v) > 0 && v < (1ull << 32))
        ret->shadow_memkb = v;
    if (json_u64(b, "event_channels", &v) > 0 && v > 0 && v < (1u << 20))
        ret->event_channels = (unsigned int)v;
    j = json_object_get(b, "max_grant_frames");
    if (json_is_integer(j) && json_integer_value(j) > 0 &&
        json_integer_value(j) < 65536)
        ret->max_grant_frames = (int)json_integer_value(j);
    j = json_object_get(b, "max_maptrack_frames");
    if (json_is_integer(j) && json_integer_value(j) >= 0 &&
        json_integer_value(j) < (1 << 20))
        ret->max_maptrack_frames = (int)json_integer_value(j);
    j = json_object_get(b, "max_grant_version");
    if (json_is_integer(j) && json_integer_value(j) >= 1 &&
        json_integer_value(j) <= 2)
        ret->max_grant_version = (int)json_integer_value(j);
    j = json_object_get(b, "vcpu_hard_affinity");
    if (json_is_array(j)) {
        size_t i, k;
        json_t *cpus, *e;

        json_array_foreach(j, i, cpus)
        {
            if (i >= CKPT_XEN_AFFINITY_VCPUS || !json_is_array(cpus))
                break;
            json_array_foreach(cpus, k, e)
            {
                if (json_is_integer(e) && json_integer_value(e) >= 0 &&
                    json_integer_value(e) < 64)
                    ret->hard_affinity[i] |= 1ull << json_integer_value(e);
            }
        }
    }
    if (ret->type == CKPT_XEN_DOM_HVM) {
        static const char *const devs[] = {"disks", "nics", "pcidevs",
                                           "usbctrls", "usbdevs"};

        for (size_t i = 0; i < sizeof(devs) / sizeof(devs[0]); i++) {
            j = json_object_get(root, devs[i]);
            if (json_is_array(j) && json_array_size(j) > 0) {
                snprintf(why, whysz,
                         "an HVM domain with %s: colo's device model has "
                         "none (not supported)",
                         devs[i]);
                goto out;
            }
        }
        rc = hvm_from_json(b, ret, why, whysz);
        if (rc < 0)
            goto out;
        rc = -EINVAL;
    }
    s = json_string_value(json_object_get(b, "tsc_mode"));
    if (!s || strcmp(s, "default") == 0) {
        ret->tsc_mode = 0;
    } else if (strcmp(s, "always_emulate") == 0) {
        ret->tsc_mode = 1;
    } else if (strcmp(s, "native") == 0) {
        ret->tsc_mode = 2;
    } else {
        snprintf(why, whysz, "b_info.tsc_mode: '%s' is not supported", s);
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* libxl_get_required_shadow_memory() */
static uint64_t shadow_kb(const struct ckpt_xen_newdom *nd)
{
    return 4 * (256ull * nd->max_vcpus + 2 * (nd->max_memkb / 1024));
}

static int xs_skeleton(struct ckpt_xen_dom *d, uint32_t domid,
                       const struct ckpt_xen_newdom *nd)
{
    struct xs_permissions roperm[2] = {{0, XS_PERM_NONE},
                                       {domid, XS_PERM_READ}};
    struct xs_permissions rwperm[1] = {{domid, XS_PERM_NONE}};
    struct xs_permissions noperm[1] = {{0, XS_PERM_NONE}};
    static const char *const rw[] = {
        "control/shutdown",
        "control/feature-poweroff",
        "control/feature-reboot",
        "control/feature-suspend",
        "control/sysrq",
        "data",
        "drivers",
        "feature",
        "attr",
        "error",
        "device/suspend/event-channel",
    };
    const char *type = nd->type == CKPT_XEN_DOM_PV    ? "pv"
                       : nd->type == CKPT_XEN_DOM_PVH ? "pvh"
                                                      : "hvm";
    char dom[64], vm[64], u[37];
    xs_transaction_t t;
    bool ok;

    uuid_str(nd->uuid, u);
    snprintf(dom, sizeof(dom), "/local/domain/%" PRIu32, domid);
    snprintf(vm, sizeof(vm), "/vm/%s", u);
    for (int tries = 0; tries < 10; tries++) {
        t = xs_transaction_start(d->xsh);
        if (!t)
            break;
        xs_rm(d->xsh, t, dom);
        xs_rm(d->xsh, t, vm);
        ok =
            xs_mknod(d, t, roperm, 2, "%s", dom) &&
            xs_mknod(d, t, roperm, 2, "%s", vm) &&
            xs_put(d, t, vm, "%s/vm", dom) &&
            xs_put(d, t, nd->name, "%s/name", dom) &&
            xs_put(d, t, nd->name, "%s/name", vm) &&
            xs_put(d, t, u, "%s/uuid", vm) &&
            xs_put(d, t, "1",
                   "%s/control/platform-feature-multiprocessor-suspend", dom) &&
            xs_put(d, t, "1", "%s/control/platform-feature-xs_reset_watches",
                   dom) &&
            xs_mknod(d, t, roperm, 2, "%s/device", dom) &&
            xs_mknod(d, t, roperm, 2, "%s/control", dom);
        for (size_t i = 0; ok && i < sizeof(rw) / sizeof(rw[0]); i++)
            ok = xs_mknod(d, t, rwperm, 1, "%s/%s", dom, rw[i]);
        ok = ok && xs_mknod(d, t, noperm, 1, "/libxl/%" PRIu32, domid) &&
             xs_mknod(d, t, noperm, 1, "/libxl/%" PRIu32 "/device", domid) &&
             xs_put(d, t, type, "/libxl/%" PRIu32 "/type", domid) &&
             xs_put(d, t, "qemu_xen", "/libxl/%" PRIu32 "/dm-version", domid);
        if (!ok) {
            int e = errno;

            xs_transaction_end(d->xsh, t, true);
            return fail(d, -COLO_EXEN, "xenstore: writing %s: %s", dom,
                        strerror(e));
        }
        if (xs_transaction_end(d->xsh, t, false))
            return 0;
        if (errno != EAGAIN)
            break;
    }
    return fail(d, -COLO_EXEN, "xenstore: transaction for %s failed: %s", dom,
                strerror(errno));
}

int ckpt_xen_dom_create(struct ckpt_xen_dom *d, struct ckpt_xen_newdom *nd,
                        uint32_t *ret_domid)
{
    struct xen_domctl_createdomain cfg;
    xc_physinfo_t phys;
    uint32_t domid = 0;
    uint64_t shadow;
    char *s;
    int rc, e;

    if (!nd->have_uuid) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

        if (fd < 0 || colo_read_all(fd, nd->uuid, 16) < 0) {
            if (fd >= 0)
                close(fd);
            return fail(d, -EIO, "cannot make a UUID");
        }
        close(fd);
        nd->uuid[6] = (uint8_t)((nd->uuid[6] & 0x0f) | 0x40);
        nd->uuid[8] = (uint8_t)((nd->uuid[8] & 0x3f) | 0x80);
        nd->have_uuid = true;
    }
    {
        uint32_t other;

        if (ckpt_xen_dom_find(d, nd->name, &other) == 0)
            return fail(d, -EEXIST,
                        "a domain named '%s' exists already "
                        "(domain %" PRIu32 ")",
                        nd->name, other);
    }
    memset(&cfg, 0, sizeof(cfg));
    memcpy(cfg.handle, nd->uuid, 16);
    cfg.max_vcpus = nd->max_vcpus;
    cfg.max_evtchn_port = nd->event_channels;
    cfg.max_grant_frames = nd->max_grant_frames;
    cfg.max_maptrack_frames = nd->max_maptrack_frames;
    if (nd->max_grant_version < 0) {
        memset(&phys, 0, sizeof(phys));
        nd->max_grant_version =
            xc_physinfo(d->xch, &phys) == 0 &&
                    (phys.capabilities & XEN_SYSCTL_PHYSCAP_gnttab_v2)
                ? 2
                : 1;
    }
    cfg.grant_opts = XEN_DOMCTL_GRANT_version(nd->max_grant_version);
    if (nd->type != CKPT_XEN_DOM_PV)
        cfg.flags = XEN_DOMCTL_CDF_hvm | (nd->hap ? XEN_DOMCTL_CDF_hap : 0);
    if (nd->type == CKPT_XEN_DOM_PVH) {
        cfg.arch.emulation_flags = XEN_X86_EMU_LAPIC;
    } else if (nd->type == CKPT_XEN_DOM_HVM) {
        /* libxl__arch_domain_prepare_config: all emulation but vPCI. */
        cfg.arch.emulation_flags = XEN_X86_EMU_ALL & ~XEN_X86_EMU_VPCI;
    }
    if (xc_domain_create(d->xch, &domid, &cfg) < 0)
        return fail(d, -COLO_EXEN, "creating domain '%s' failed: %s%s",
                    nd->name, strerror(errno),
                    nd->hap || nd->type == CKPT_XEN_DOM_PV
                        ? ""
                        : " (its configuration has hap=0: shadow paging, "
                          "which Debian's hypervisor is built without)");
    /* libxl__build_pre */
    if (xc_domain_max_vcpus(d->xch, domid, nd->max_vcpus) < 0) {
        rc = fail(d, -COLO_EXEN, "domain %" PRIu32 ": max vcpus: %s", domid,
                  strerror(errno));
        goto fail_destroy;
    }
    for (unsigned int v = 0; v < nd->max_vcpus && v < CKPT_XEN_AFFINITY_VCPUS;
         v++) {
        xc_cpumap_t hard, soft;

        if (!nd->hard_affinity[v])
            continue;
        hard = xc_cpumap_alloc(d->xch);
        soft = xc_cpumap_alloc(d->xch);
        rc = hard && soft ? 0 : -ENOMEM;
        for (unsigned int c = 0; rc == 0 && c < 64; c++)
            if ((nd->hard_affinity[v] >> c) & 1 &&
                (int)c < xc_get_max_cpus(d->xch))
                hard[c / 8] |= (uint8_t)(1u << (c % 8));
        if (rc == 0 && xc_vcpu_setaffinity(d->xch, domid, (int)v, hard, soft,
                                           XEN_VCPUAFFINITY_HARD) < 0)
            rc = fail(d, -COLO_EXEN, "domain %" PRIu32 ": vcpu %u affinity: %s",
                      domid, v, strerror(errno));
        free(hard);
        free(soft);
        if (rc < 0)
            goto fail_destroy;
    }
    if (xc_domain_setmaxmem(d->xch, domid,
                            nd->target_memkb + MAXMEM_CONSTANT_KB) < 0) {
        rc = fail(d, -COLO_EXEN, "domain %" PRIu32 ": max memory: %s", domid,
                  strerror(errno));
        goto fail_destroy;
    }
    if (nd->type == CKPT_XEN_DOM_PV)
        xc_domain_set_memmap_limit(d->xch, domid, nd->max_memkb);
    if (xc_domain_set_tsc_info(d->xch, domid, (uint32_t)nd->tsc_mode, 0, 0, 0) <
        0) {
        rc = fail(d, -COLO_EXEN, "domain %" PRIu32 ": TSC mode: %s", domid,
                  strerror(errno));
        goto fail_destroy;
    }
    if (nd->type != CKPT_XEN_DOM_PV) {
        shadow = nd->shadow_memkb ? nd->shadow_memkb : shadow_kb(nd);
        if (xc_set_paging_mempool_size(d->xch, domid, shadow * 1024) < 0) {
            rc = fail(d, -COLO_EXEN,
                      "domain %" PRIu32 ": paging pool of %" PRIu64 " KiB: %s",
                      domid, shadow, strerror(errno));
            goto fail_destroy;
        }
    }
    if (nd->type == CKPT_XEN_DOM_HVM) {
        /* hvm_set_conf_params: what the stream does not carry. */
        if (xc_hvm_param_set(d->xch, domid, HVM_PARAM_HPET_ENABLED,
                             nd->hvm.hpet) < 0 ||
            xc_hvm_param_set(d->xch, domid, HVM_PARAM_TIMER_MODE,
                             (uint64_t)nd->hvm.timer_mode) < 0 ||
            xc_hvm_param_set(d->xch, domid, HVM_PARAM_VPT_ALIGN,
                             nd->hvm.vpt_align) < 0) {
            rc = fail(d, -COLO_EXEN, "domain %" PRIu32 ": HVM params: %s",
                      domid, strerror(errno));
            goto fail_destroy;
        }
    }
    s = xs_get(d, "/tool/xenstored/domid");
    nd->store_domid = s ? (uint32_t)strtoul(s, NULL, 10) : 0;
    free(s);
    s = xs_get(d, "/tool/xenconsoled/domid");
    nd->console_domid = s ? (uint32_t)strtoul(s, NULL, 10) : 0;
    free(s);
    rc = xc_evtchn_alloc_unbound(d->xch, domid, nd->store_domid);
    if (rc < 0) {
        rc = fail(d, -COLO_EXEN, "domain %" PRIu32 ": store event channel: %s",
                  domid, strerror(errno));
        goto fail_destroy;
    }
    nd->store_evtchn = (uint32_t)rc;
    rc = xc_evtchn_alloc_unbound(d->xch, domid, nd->console_domid);
    if (rc < 0) {
        rc =
            fail(d, -COLO_EXEN, "domain %" PRIu32 ": console event channel: %s",
                 domid, strerror(errno));
        goto fail_destroy;
    }
    nd->console_evtchn = (uint32_t)rc;
    rc = xs_skeleton(d, domid, nd);
    if (rc < 0)
        goto fail_destroy;
    *ret_domid = domid;
    return 0;

fail_destroy:
    e = errno;
    xc_domain_destroy(d->xch, domid);
    {
        char path[64];

        snprintf(path, sizeof(path), "/local/domain/%" PRIu32, domid);
        xs_rm(d->xsh, XBT_NULL, path);
        snprintf(path, sizeof(path), "/libxl/%" PRIu32, domid);
        xs_rm(d->xsh, XBT_NULL, path);
    }
    errno = e;
    return rc;
}

static int write_userdata(struct ckpt_xen_dom *d, uint32_t domid,
                          const struct ckpt_xen_newdom *nd, const char *json)
{
    char path[512], tmp[540];
    int rc;

    rc = userdata_path(d, domid, nd->uuid, path, sizeof(path));
    if (rc < 0)
        return fail(d, rc, "userdata path too long");
    snprintf(tmp, sizeof(tmp), "%s.colo-tmp", path);
    rc = colo_write_file(tmp, json, strlen(json));
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return fail(d, rc, "writing %s: %s", path, colo_strerror(rc));
    }
    return 0;
}

int ckpt_xen_dom_dirty_span(struct ckpt_xen_dom *d, uint32_t domid,
                            const struct ckpt_xen_newdom *nd, uint64_t *ret_pfn)
{
    /* Above 4 GiB and past the guest's RAM however libxl lays it out (RAM
     * pages <= max_memkb / 4; the part above the MMIO hole starts at
     * 4 GiB): no pfn of the stream, no hole. */
    xen_pfn_t pfn = 0x100000 + nd->max_memkb / 4;

    if (xc_domain_populate_physmap_exact(d->xch, domid, 1, 0, 0, &pfn) < 0)
        return fail(d, -COLO_EXEN,
                    "domain %" PRIu32 ": a page at pfn %#" PRIx64
                    " (COLO's dirty-page span): %s",
                    domid, (uint64_t)pfn, strerror(errno));
    *ret_pfn = pfn;
    return 0;
}

int ckpt_xen_dom_dirty_span_drop(struct ckpt_xen_dom *d, uint32_t domid,
                                 uint64_t pfn)
{
    xen_pfn_t p = pfn;

    if (xc_domain_decrease_reservation_exact(d->xch, domid, 1, 0, &p) < 0)
        return fail(d, -COLO_EXEN,
                    "domain %" PRIu32 ": freeing the page at pfn %#" PRIx64
                    ": %s",
                    domid, pfn, strerror(errno));
    return 0;
}

int ckpt_xen_dom_finish(struct ckpt_xen_dom *d, uint32_t domid,
                        const struct ckpt_xen_newdom *nd, uint64_t store_gfn,
                        uint64_t console_gfn, const char *json)
{
    struct xs_permissions feperm[2] = {{domid, XS_PERM_NONE},
                                       {nd->console_domid, XS_PERM_READ}};
    struct xs_permissions beperm[2] = {{nd->console_domid, XS_PERM_NONE},
                                       {domid, XS_PERM_READ}};
    char dom[64], be[96], num[32];
    xs_transaction_t t;
    bool ok;
    int rc;

    snprintf(dom, sizeof(dom), "/local/domain/%" PRIu32, domid);
    snprintf(be, sizeof(be),
             "/local/domain/%" PRIu32 "/backend/console/%" PRIu32 "/0",
             nd->console_domid, domid);
    for (int tries = 0;; tries++) {
        if (tries == 10)
            return fail(d, -COLO_EXEN,
                        "xenstore: %s: transaction keeps "
                        "conflicting",
                        dom);
        t = xs_transaction_start(d->xsh);
        if (!t)
            return fail(d, -COLO_EXEN, "xenstore: %s", strerror(errno));
        snprintf(num, sizeof(num), "%" PRIu64, nd->max_memkb);
        ok = xs_put(d, t, num, "%s/memory/static-max", dom);
        snprintf(num, sizeof(num), "%" PRIu64, nd->target_memkb);
        ok = ok && xs_put(d, t, num, "%s/memory/target", dom);
        snprintf(num, sizeof(num), "%" PRIu64, nd->hvm.video_memkb);
        ok = ok && xs_put(d, t, num, "%s/memory/videoram", dom);
        snprintf(num, sizeof(num), "%" PRIu32, domid);
        ok = ok && xs_put(d, t, num, "%s/domid", dom);
        snprintf(num, sizeof(num), "%" PRIu32, nd->store_evtchn);
        ok = ok && xs_put(d, t, num, "%s/store/port", dom);
        snprintf(num, sizeof(num), "%" PRIu64, store_gfn);
        ok = ok && xs_put(d, t, num, "%s/store/ring-ref", dom);
        for (unsigned int i = 0; ok && i < nd->max_vcpus; i++)
            ok = xs_put(d, t,
                        i < 64 && (nd->avail_vcpus_mask >> i) & 1 ? "online"
                                                                  : "offline",
                        "%s/cpu/%u/availability", dom, i);
        /* The primary console, as libxl__device_console_add writes it;
         * xenconsoled picks it up from here. */
        ok = ok && xs_mknod(d, t, feperm, 2, "%s/console", dom) &&
             xs_put(d, t, be, "%s/console/backend", dom);
        snprintf(num, sizeof(num), "%" PRIu32, nd->console_domid);
        ok = ok && xs_put(d, t, num, "%s/console/backend-id", dom) &&
             xs_put(d, t, CONSOLE_LIMIT, "%s/console/limit", dom) &&
             xs_put(d, t, "xenconsoled", "%s/console/type", dom) &&
             xs_put(d, t, "pty", "%s/console/output", dom) &&
             xs_put(d, t, "", "%s/console/tty", dom);
        snprintf(num, sizeof(num), "%" PRIu32, nd->console_evtchn);
        ok = ok && xs_put(d, t, num, "%s/console/port", dom);
        snprintf(num, sizeof(num), "%" PRIu64, console_gfn);
        ok = ok && xs_put(d, t, num, "%s/console/ring-ref", dom) &&
             xs_mknod(d, t, beperm, 2, "%s", be) &&
             xs_put(d, t, dom, "%s/frontend", be);
        snprintf(num, sizeof(num), "%" PRIu32, domid);
        ok = ok && xs_put(d, t, num, "%s/frontend-id", be) &&
             xs_put(d, t, "1", "%s/online", be) &&
             xs_put(d, t, "1", "%s/state", be) &&
             xs_put(d, t, "vt100", "%s/protocol", be);
        if (!ok) {
            int e = errno;

            xs_transaction_end(d->xsh, t, true);
            return fail(d, -COLO_EXEN, "xenstore: writing %s: %s", dom,
                        strerror(e));
        }
        if (xs_transaction_end(d->xsh, t, false))
            break;
        if (errno != EAGAIN)
            return fail(d, -COLO_EXEN, "xenstore: %s: %s", dom,
                        strerror(errno));
    }
    if (!xs_introduce_domain(d->xsh, domid, store_gfn, nd->store_evtchn))
        return fail(d, -COLO_EXEN,
                    "domain %" PRIu32 ": introducing it to xenstored failed: "
                    "%s",
                    domid, strerror(errno));
    if (json) {
        rc = write_userdata(d, domid, nd, json);
        if (rc < 0)
            return rc;
    }
    return 0;
}
