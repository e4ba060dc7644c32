/*
 * Suspending a domain on the loop (ckpt_xen_dom_suspend_start of
 * checkpoint/xen_dom.h): libxl_dom_suspend.c's order, the xenstore
 * control/shutdown request or the event channel, then waiting for the
 * domain to report shut down (suspend) without blocking the loop.
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
