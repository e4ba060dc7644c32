/*
 * Xen domain operations with libxenctrl + libxenstore; see
 * checkpoint/xen_dom.h for the contract and what is covered. The xenstore
 * layout follows libxl (libxl__domain_make, libxl__build_post,
 * libxl__device_console_add) so that xl and xenconsoled see a domain colo
 * restored like one of their own.
 *
 * The primitives: open, lookup, pause/resume, destroy, the device model's
 * xenstore keys, COLO's dirty span. Suspend is suspend.c, building a
 * domain for a restore build.c.
 */
#include "domain_priv.h"
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

#define DM_QMP_TIMEOUT_MS 5000 /* a QMP command to a device model */

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

/* ---- lookup and info --------------------------------------------------- */

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
    /* As libxl_retrieve_domain_configuration: what the running domain
     * says wins over what it was created with. */
    {
        struct ckpt_xen_live lv = {.name = di.name, .uuid = di.uuid};
        char *s, *out = NULL, why[256];
        size_t olen = 0;

        s = xs_get(d, "/local/domain/%" PRIu32 "/memory/target", domid);
        lv.target_memkb = s ? strtoull(s, NULL, 10) : 0;
        free(s);
        s = xs_get(d, "/local/domain/%" PRIu32 "/memory/static-max", domid);
        lv.max_memkb = s ? strtoull(s, NULL, 10) : 0;
        free(s);
        for (unsigned k = 0; k < di.max_vcpus && k < 64; k++) {
            s = xs_get(d, "/local/domain/%" PRIu32 "/cpu/%u/availability",
                       domid, k);
            if (s) {
                lv.have_vcpus = true;
                if (strcmp(s, "online") == 0)
                    lv.avail_vcpus_mask |= 1ull << k;
            }
            free(s);
        }
        rc = ckpt_xen_config_refresh(buf, strnlen(buf, len), &lv, &out, &olen,
                                     why, sizeof(why));
        if (rc < 0) {
            free(buf);
            return fail(d, rc, "domain %" PRIu32 ": %s: %s", domid, path, why);
        }
        free(buf);
        *ret_json = out;
        *ret_len = olen;
    }
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
