/* colo-compare's notify_dev protocol (colo_notify.h). */
#include "checkpoint/colo_notify.h"

#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MSG_INIT     "COLO_USERSPACE_PROXY_INIT"
#define MSG_INIT_REP "COLO_COMPARE_GET_XEN_INIT"
#define MSG_DO_CKPT  "DO_CHECKPOINT"
#define MSG_CKPT     "COLO_CHECKPOINT"

enum cn_state { CN_CONNECTING, CN_HANDSHAKE, CN_READY, CN_FLUSHING, CN_LOST };

struct ckpt_colo_notify {
    struct event_base *base;
    int fd;
    struct event *ev, *timer;
    enum cn_state state;
    unsigned timeout_ms;
    struct ckpt_colo_notify_cbs cbs;
    void *arg;
    bool armed;
    uint8_t buf[4 + CKPT_COLO_NOTIFY_MAX_FRAME];
    size_t len;
    struct ckpt_colo_notify_stats st;
};

static void arm_timer(struct ckpt_colo_notify *n)
{
    struct timeval tv = colo_ms_to_tv(n->timeout_ms);

    evtimer_add(n->timer, &tv);
}

static void lose(struct ckpt_colo_notify *n, int rc)
{
    enum cn_state was = n->state;

    if (was == CN_LOST)
        return;
    n->state = CN_LOST;
    event_del(n->ev);
    evtimer_del(n->timer);
    colo_close(&n->fd);
    colo_warn("colo-compare notify: %s", colo_strerror(rc));
    if (was == CN_HANDSHAKE || was == CN_CONNECTING) {
        if (n->cbs.ready)
            n->cbs.ready(n->arg, rc);
        return;
    }
    if (was == CN_FLUSHING && n->cbs.flushed)
        n->cbs.flushed(n->arg, rc);
    else if (n->cbs.lost)
        n->cbs.lost(n->arg, rc);
}

/* Frames of the given texts in one write (the flush barrier relies on
 * it). */
static int send_msgs(struct ckpt_colo_notify *n, const char *a, const char *b)
{
    uint8_t out[128];
    size_t off = 0;
    const char *m[2] = {a, b};

    for (int i = 0; i < 2 && m[i]; i++) {
        uint32_t l = (uint32_t)strlen(m[i]);

        out[off] = (uint8_t)(l >> 24);
        out[off + 1] = (uint8_t)(l >> 16);
        out[off + 2] = (uint8_t)(l >> 8);
        out[off + 3] = (uint8_t)l;
        memcpy(out + off + 4, m[i], l);
        off += 4 + l;
    }
    /* A few dozen bytes to a unix socket: all or nothing. */
    if (send(n->fd, out, off, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)off)
        return -errno ? -errno : -EIO;
    return 0;
}

static void on_frame(struct ckpt_colo_notify *n, const char *t, size_t l)
{
    if (l == strlen(MSG_DO_CKPT) && !memcmp(t, MSG_DO_CKPT, l)) {
        n->st.do_checkpoint++;
        if (n->state == CN_READY && n->armed) {
            n->armed = false;
            n->st.divergences++;
            if (n->cbs.divergence)
                n->cbs.divergence(n->arg);
        }
        return;
    }
    if (l == strlen(MSG_INIT_REP) && !memcmp(t, MSG_INIT_REP, l)) {
        if (n->state == CN_HANDSHAKE) {
            evtimer_del(n->timer);
            n->state = CN_READY;
            if (n->cbs.ready)
                n->cbs.ready(n->arg, 0);
        } else if (n->state == CN_FLUSHING) {
            evtimer_del(n->timer);
            n->state = CN_READY;
            n->st.flushes++;
            if (n->cbs.flushed)
                n->cbs.flushed(n->arg, 0);
        }
        return;
    }
    colo_debug("colo-compare notify: ignoring a %zu-byte frame", l);
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_colo_notify *n = arg;
    ssize_t r;
    size_t off = 0;

    (void)what;
    r = read(fd, n->buf + n->len, sizeof(n->buf) - n->len);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        lose(n, r == 0 ? -COLO_EQMP_DISCONNECTED : -errno);
        return;
    }
    if (r < 0)
        return;
    n->len += (size_t)r;
    while (n->len - off >= 4 && n->state != CN_LOST) {
        const uint8_t *p = n->buf + off;
        uint32_t l = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                     (uint32_t)p[2] << 8 | p[3];

        if (l > CKPT_COLO_NOTIFY_MAX_FRAME) {
            lose(n, -COLO_EQMP_PROTOCOL);
            return;
        }
        if (n->len - off < 4 + l)
            break;
        off += 4 + l;
        on_frame(n, (const char *)p + 4, l);
    }
    if (n->state == CN_LOST)
        return;
    memmove(n->buf, n->buf + off, n->len - off);
    n->len -= off;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    lose(arg, -ETIMEDOUT);
}

static void connected_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_colo_notify *n = arg;
    int err = 0, rc;
    socklen_t el = sizeof(err);

    (void)what;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err) {
        lose(n, -err);
        return;
    }
    event_free(n->ev);
    n->ev = event_new(n->base, n->fd, EV_READ | EV_PERSIST, read_cb, n);
    if (!n->ev) {
        lose(n, -ENOMEM);
        return;
    }
    event_add(n->ev, NULL);
    n->state = CN_HANDSHAKE;
    rc = send_msgs(n, MSG_INIT, NULL);
    if (rc < 0)
        lose(n, rc);
}

int ckpt_colo_notify_new(struct event_base *base, const char *path,
                         unsigned timeout_ms,
                         const struct ckpt_colo_notify_cbs *cbs, void *arg,
                         struct ckpt_colo_notify **ret)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    struct ckpt_colo_notify *n;
    int rc;

    *ret = NULL;
    if (strlen(path) >= sizeof(a.sun_path))
        return -ENAMETOOLONG;
    n = calloc(1, sizeof(*n));
    if (!n)
        return -ENOMEM;
    n->base = base;
    n->cbs = *cbs;
    n->arg = arg;
    n->armed = true;
    n->timeout_ms = timeout_ms ? timeout_ms : 5000;
    strcpy(a.sun_path, path);
    n->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (n->fd < 0) {
        rc = -errno;
        free(n);
        return rc;
    }
    if (connect(n->fd, (struct sockaddr *)&a, sizeof(a)) < 0 &&
        errno != EINPROGRESS && errno != EAGAIN) {
        rc = -errno;
        colo_close(&n->fd);
        free(n);
        return rc;
    }
    n->ev = event_new(base, n->fd, EV_WRITE, connected_cb, n);
    n->timer = evtimer_new(base, timer_cb, n);
    if (!n->ev || !n->timer) {
        ckpt_colo_notify_free(n);
        return -ENOMEM;
    }
    event_add(n->ev, NULL);
    arm_timer(n);
    *ret = n;
    return 0;
}

int ckpt_colo_notify_flush(struct ckpt_colo_notify *n)
{
    int rc;

    if (n->state != CN_READY)
        return n->state == CN_LOST ? -ENOTCONN : -EBUSY;
    rc = send_msgs(n, MSG_CKPT, MSG_INIT);
    if (rc < 0)
        return rc;
    n->state = CN_FLUSHING;
    arm_timer(n);
    return 0;
}

void ckpt_colo_notify_rearm(struct ckpt_colo_notify *n)
{
    n->armed = true;
}

void ckpt_colo_notify_get_stats(const struct ckpt_colo_notify *n,
                                struct ckpt_colo_notify_stats *ret)
{
    *ret = n->st;
}

void ckpt_colo_notify_free(struct ckpt_colo_notify *n)
{
    if (!n)
        return;
    if (n->ev)
        event_free(n->ev);
    if (n->timer)
        event_free(n->timer);
    colo_close(&n->fd);
    free(n);
}
