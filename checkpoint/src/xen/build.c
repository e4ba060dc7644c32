/*
 * A domain for a restore, built from libxl's JSON (checkpoint/xen_dom.h):
 * the configuration parsed (ckpt_xen_newdom_from_json), the paused empty
 * domain with its xenstore skeleton (ckpt_xen_dom_create, libxl__domain_make
 * + libxl__build_pre) and, after xc_domain_restore, its xenstore nodes and
 * libxl's userdata (ckpt_xen_dom_finish, libxl__build_post).
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

#define MAXMEM_CONSTANT_KB 1024u /* libxl's LIBXL_MAXMEM_CONSTANT */
#define CONSOLE_LIMIT      "1048576"

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

int ckpt_xen_config_refresh(const char *json, size_t len,
                            const struct ckpt_xen_live *live, char **ret_json,
                            size_t *ret_len, char *why, size_t whysz)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *ci, *bi;
    char *out;
    int rc = -EINVAL;

    *ret_json = NULL;
    ci = json_object_get(root, "c_info");
    bi = json_object_get(root, "b_info");
    if (!json_is_object(ci) || !json_is_object(bi)) {
        snprintf(why, whysz, "not a libxl domain configuration%s%s",
                 root ? "" : ": ", root ? "" : jerr.text);
        goto out;
    }
    rc = -ENOMEM;
    if (live->name && live->name[0] &&
        json_object_set_new(ci, "name", json_string(live->name)) < 0)
        goto out;
    if (live->uuid) {
        const uint8_t *u = live->uuid;
        char us[40];

        snprintf(us, sizeof(us),
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                 "%02x%02x%02x%02x%02x%02x",
                 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9],
                 u[10], u[11], u[12], u[13], u[14], u[15]);
        if (json_object_set_new(ci, "uuid", json_string(us)) < 0)
            goto out;
    }
    if (live->target_memkb) {
        /* libxl: the balloon target plus the video RAM it keeps apart. */
        json_int_t video =
            json_integer_value(json_object_get(bi, "video_memkb"));
        uint64_t t = live->target_memkb + (video > 0 ? (uint64_t)video : 0);

        if (json_object_set_new(bi, "target_memkb",
                                json_integer((json_int_t)t)) < 0)
            goto out;
    }
    if (live->max_memkb &&
        json_object_set_new(bi, "max_memkb",
                            json_integer((json_int_t)live->max_memkb)) < 0)
        goto out;
    if (live->have_vcpus) {
        json_t *a = json_array();

        for (unsigned k = 0; a && k < 64; k++)
            if ((live->avail_vcpus_mask >> k) & 1)
                json_array_append_new(a, json_integer(k));
        if (!a || json_object_set_new(bi, "avail_vcpus", a) < 0)
            goto out;
    }
    out = json_dumps(root, JSON_INDENT(4));
    if (!out)
        goto out;
    *ret_json = out;
    if (ret_len)
        *ret_len = strlen(out);
    rc = 0;
out:
    if (rc == -ENOMEM)
        snprintf(why, whysz, "out of memory");
    json_decref(root);
    return rc;
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
