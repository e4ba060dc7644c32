/*
 * Private to checkpoint/src/xen/domain.c, suspend.c and build.c: the
 * domain handle (struct ckpt_xen_dom of checkpoint/xen_dom.h) and the small
 * helpers the three share. Pulls in xenctrl.h and xenstore.h.
 */
#ifndef COLO_CHECKPOINT_XEN_DOMAIN_PRIV_H
#define COLO_CHECKPOINT_XEN_DOMAIN_PRIV_H

#include "checkpoint/xen_dom.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <xenctrl.h>
#include <xenstore.h>

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

static inline int fail(struct ckpt_xen_dom *d, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline int fail(struct ckpt_xen_dom *d, int rc, const char *fmt, ...)
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

static inline char *xs_get(struct ckpt_xen_dom *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline char *xs_get(struct ckpt_xen_dom *d, const char *fmt, ...)
{
    char path[256];
    unsigned int len;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    return xs_read(d->xsh, XBT_NULL, path, &len);
}

static inline bool xs_put(struct ckpt_xen_dom *d, xs_transaction_t t,
                          const char *val, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline bool xs_put(struct ckpt_xen_dom *d, xs_transaction_t t,
                          const char *val, const char *fmt, ...)
{
    char path[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    return xs_write(d->xsh, t, path, val, strlen(val));
}

static inline bool xs_mknod(struct ckpt_xen_dom *d, xs_transaction_t t,
                            struct xs_permissions *perms, unsigned int n,
                            const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static inline bool xs_mknod(struct ckpt_xen_dom *d, xs_transaction_t t,
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

static inline void uuid_str(const uint8_t u[16], char out[37])
{
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10],
             u[11], u[12], u[13], u[14], u[15]);
}

static inline int getinfo(struct ckpt_xen_dom *d, uint32_t domid,
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

static inline int userdata_path(struct ckpt_xen_dom *d, uint32_t domid,
                                const uint8_t uuid[16], char *out, size_t outsz)
{
    char u[37];

    uuid_str(uuid, u);
    if ((size_t)snprintf(out, outsz, "%s/userdata-d.%" PRIu32 ".%s.libxl-json",
                         d->userdata_dir, domid, u) >= outsz)
        return -ENAMETOOLONG;
    return 0;
}

#endif
