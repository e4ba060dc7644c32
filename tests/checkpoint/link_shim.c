/*
 * A stand-in for transport/src/link.c, compiled into the checkpoint tests
 * ONLY while the real one does not exist (see CMakeLists.txt): plain links
 * (no authentication), records framed with transport/record.h, heartbeats,
 * backpressure, detach-after-drain. Enough for the engines' tests; the real
 * link replaces it automatically.
 */
#include "transport/colo_rec.h"
#include "transport/link.h"

#include "common/error.h"
#include "common/fd.h"
#include "common/timeutil.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

struct xprt_link {
    struct event_base *evb;
    struct bufferevent *bev;
    enum xprt_link_state state;
    struct xprt_link_cbs cbs;
    void *arg;
    struct xprt_reader rd;
    struct event *up_ev, *hb_ev;
    uint32_t hb_ms, misses;
    uint64_t last_rx, last_tx;
    size_t wm_high, wm_low;
    bool want_writable;
    xprt_detach_cb dcb;
    void *darg;
    struct xprt_link_stats st;
    uint64_t queued;
    int depth;
    bool freed;
};

void xprt_link_cfg_init(struct xprt_link_cfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
}

static void really_free(struct xprt_link *l)
{
    if (l->bev)
        bufferevent_free(l->bev);
    if (l->up_ev)
        event_free(l->up_ev);
    if (l->hb_ev)
        event_free(l->hb_ev);
    xprt_reader_dispose(&l->rd);
    free(l);
}

void xprt_link_free(struct xprt_link *l)
{
    if (!l)
        return;
    if (l->depth) {
        l->freed = true;
        l->state = XPRT_LINK_CLOSED;
        if (l->bev)
            bufferevent_disable(l->bev, EV_READ | EV_WRITE);
        evtimer_del(l->hb_ev);
        return;
    }
    really_free(l);
}

static void fail(struct xprt_link *l, int rc)
{
    if (l->state == XPRT_LINK_CLOSED)
        return;
    l->state = XPRT_LINK_CLOSED;
    evtimer_del(l->hb_ev);
    bufferevent_disable(l->bev, EV_READ | EV_WRITE);
    if (l->cbs.error)
        l->cbs.error(l, rc, l->arg);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct xprt_link *l = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    l->depth++;
    l->last_rx = colo_now_ns();
    while (!l->freed && l->state == XPRT_LINK_UP &&
           evbuffer_get_length(in) > 0) {
        size_t len = evbuffer_get_length(in);
        struct evbuffer_iovec v;
        struct xprt_item it;
        ssize_t n;

        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        len = v.iov_len;
        n = xprt_reader_push(&l->rd, v.iov_base, len, &it);
        if (n < 0) {
            fail(l, (int)n);
            break;
        }
        if (it.kind == XPRT_ITEM_RECORD) {
            l->st.records_in++;
            if (it.type == XPRT_COLO_HEARTBEAT)
                l->st.heartbeats_in++;
            else if (l->cbs.record)
                l->cbs.record(l, &it, l->arg);
        }
        l->st.bytes_in += (uint64_t)n;
        if (!l->freed)
            evbuffer_drain(in, (size_t)n);
    }
    l->depth--;
    if (l->freed && !l->depth)
        really_free(l);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct xprt_link *l = arg;
    size_t left = evbuffer_get_length(bufferevent_get_output(bev));

    l->depth++;
    if (l->state == XPRT_LINK_DETACHING && left == 0) {
        l->state = XPRT_LINK_DETACHED;
        bufferevent_disable(bev, EV_READ | EV_WRITE);
        if (l->dcb)
            l->dcb(l, 0, bufferevent_getfd(bev), NULL, l->darg);
    } else if (l->want_writable && left <= l->wm_low &&
               l->state == XPRT_LINK_UP) {
        l->want_writable = false;
        if (l->cbs.writable)
            l->cbs.writable(l, l->arg);
    }
    l->depth--;
    if (l->freed && !l->depth)
        really_free(l);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct xprt_link *l = arg;
    int rc;

    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    rc = (what & BEV_EVENT_EOF) ? -COLO_EPEER_CLOSED : -ECONNRESET;
    if (what & BEV_EVENT_EOF && xprt_reader_eof(&l->rd) < 0)
        rc = -COLO_ESTREAM_TRUNCATED;
    l->depth++;
    if (l->state == XPRT_LINK_DETACHING) {
        l->state = XPRT_LINK_CLOSED;
        if (l->dcb)
            l->dcb(l, rc, -1, NULL, l->darg);
    } else {
        fail(l, rc);
    }
    l->depth--;
    if (l->freed && !l->depth)
        really_free(l);
}

static void hb_cb(evutil_socket_t fd, short w, void *arg)
{
    struct xprt_link *l = arg;
    uint64_t now = colo_now_ns();
    struct timeval tv = colo_ms_to_tv(l->hb_ms / 2 ? l->hb_ms / 2 : 1);

    if (l->state != XPRT_LINK_UP)
        return;
    if (now - l->last_rx > (uint64_t)l->hb_ms * l->misses * 1000000ull) {
        l->depth++;
        fail(l, -COLO_EPEER_GONE);
        l->depth--;
        if (l->freed && !l->depth)
            really_free(l);
        return;
    }
    if (now - l->last_tx >= (uint64_t)l->hb_ms * 1000000ull) {
        uint8_t b[8] = {0};

        xprt_link_send(l, XPRT_COLO_HEARTBEAT, b, 8);
        l->st.heartbeats_out++;
    }
    evtimer_add(l->hb_ev, &tv);
}

static void up_cb(evutil_socket_t fd, short w, void *arg)
{
    struct xprt_link *l = arg;

    l->depth++;
    if (l->state == XPRT_LINK_UP && l->cbs.up)
        l->cbs.up(l, l->arg);
    l->depth--;
    if (l->freed && !l->depth)
        really_free(l);
}

int xprt_link_new_from_fd(struct event_base *base, int fd, bool initiator,
                          const struct xprt_link_cfg *cfg,
                          const struct xprt_link_cbs *cbs, void *arg,
                          struct xprt_link **ret)
{
    struct xprt_link *l = calloc(1, sizeof(*l));
    struct timeval tv;

    if (!l) {
        colo_close(&fd);
        return -ENOMEM;
    }
    colo_fd_set_nonblock(fd, 1);
    l->evb = base;
    l->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    l->cbs = *cbs;
    l->arg = arg;
    l->hb_ms = cfg->heartbeat_ms ? cfg->heartbeat_ms : 1000;
    l->misses = cfg->heartbeat_misses ? cfg->heartbeat_misses : 3;
    l->wm_high = cfg->wm_high ? cfg->wm_high : (8u << 20);
    l->wm_low = cfg->wm_low ? cfg->wm_low : l->wm_high / 4;
    xprt_reader_init(&l->rd, XPRT_FMT_RECORDS, cfg->max_record);
    l->up_ev = event_new(base, -1, 0, up_cb, l);
    l->hb_ev = evtimer_new(base, hb_cb, l);
    bufferevent_setcb(l->bev, read_cb, write_cb, event_cb, l);
    bufferevent_enable(l->bev, EV_READ | EV_WRITE);
    l->state = XPRT_LINK_UP;
    l->last_rx = l->last_tx = colo_now_ns();
    event_active(l->up_ev, 0, 0);
    tv = colo_ms_to_tv(l->hb_ms / 2 ? l->hb_ms / 2 : 1);
    evtimer_add(l->hb_ev, &tv);
    *ret = l;
    return 0;
}

enum xprt_link_state xprt_link_state(const struct xprt_link *l)
{
    return l->state;
}

int xprt_link_sendv(struct xprt_link *l, uint32_t type, const struct iovec *iov,
                    int n)
{
    int rc;

    if (l->state != XPRT_LINK_UP)
        return -ENOTCONN;
    size_t before = xprt_link_output_len(l);

    rc = xprt_rec_writev_evbuf(bufferevent_get_output(l->bev), type, iov, n);
    if (rc >= 0) {
        l->queued += xprt_link_output_len(l) - before;
        l->st.records_out++;
        l->last_tx = colo_now_ns();
    }
    return rc;
}

int xprt_link_send(struct xprt_link *l, uint32_t type, const void *body,
                   size_t len)
{
    struct iovec iov = {(void *)body, len};

    return xprt_link_sendv(l, type, &iov, len ? 1 : 0);
}

int xprt_link_send_raw(struct xprt_link *l, const void *bytes, size_t len)
{
    if (l->state != XPRT_LINK_UP)
        return -ENOTCONN;
    l->last_tx = colo_now_ns();
    l->queued += len;
    return evbuffer_add(bufferevent_get_output(l->bev), bytes, len) == 0
               ? 0
               : -ENOMEM;
}

bool xprt_link_may_write(struct xprt_link *l)
{
    if (xprt_link_output_len(l) < l->wm_high)
        return true;
    l->want_writable = true;
    bufferevent_setwatermark(l->bev, EV_WRITE, l->wm_low, 0);
    return false;
}

size_t xprt_link_output_len(const struct xprt_link *l)
{
    return evbuffer_get_length(bufferevent_get_output(l->bev));
}

int xprt_link_detach_start(struct xprt_link *l, xprt_detach_cb cb, void *arg)
{
    if (l->state != XPRT_LINK_UP)
        return -ENOTCONN;
    l->state = XPRT_LINK_DETACHING;
    l->dcb = cb;
    l->darg = arg;
    evtimer_del(l->hb_ev);
    bufferevent_disable(l->bev, EV_READ);
    bufferevent_setwatermark(l->bev, EV_WRITE, 0, 0);
    if (xprt_link_output_len(l) == 0) {
        /* Report from the loop. */
        struct timeval tv = {0, 0};

        l->state = XPRT_LINK_DETACHING;
        bufferevent_trigger(l->bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
        (void)tv;
    }
    return 0;
}

void xprt_link_get_stats(const struct xprt_link *l, struct xprt_link_stats *ret)
{
    *ret = l->st;
    ret->bytes_out = l->queued - xprt_link_output_len(l);
}

void xprt_link_set_cbs(struct xprt_link *l, const struct xprt_link_cbs *cbs,
                       void *arg)
{
    l->cbs = *cbs;
    l->arg = arg;
}
