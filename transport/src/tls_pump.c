/*
 * The pump of a detached TLS link (tls.h): a thread that carries bytes
 * between the TLS session and our end of a socketpair, whose other end a
 * helper process (libxenguest) reads and writes as if it were the socket.
 * The helper sees exactly the bytes the peer's helper wrote: the pump
 * neither adds nor drops any. It runs in a thread, not on the event loop,
 * because the Xen job also reads and writes the helper's fd with blocking
 * calls from the loop's thread.
 */
#include "tls.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/timeutil.h"

#define PUMP_BUF     (256u << 10)
#define STOP_WAIT_MS 5000

struct xprt_tls_pump {
    pthread_t th;
    SSL *ssl;
    int net_fd, local_fd, stop_fd;
    int rc;
    /* net -> local: in[in_off .. in_len) decrypted, not yet written */
    uint8_t *in;
    size_t in_len, in_off;
    /* local -> net: out[0 .. out_len) read, not yet encrypted */
    uint8_t *out;
    size_t out_len;
    bool net_eof, local_eof, local_shut, net_shut, stopping;
};

/* One SSL call's outcome: 1 progress, 0 would block (*ev set), -1 EOF,
 * < -1 error (rc). */
static int ssl_status(struct xprt_tls_pump *p, int r, short *ev)
{
    int e = SSL_get_error(p->ssl, r);
    char why[256];

    switch (e) {
    case SSL_ERROR_WANT_READ:
        *ev |= POLLIN;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        *ev |= POLLOUT;
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return -1;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0)
            return errno && errno != EAGAIN ? -errno : -1;
        /* fall through */
    default:
        return xprt_tls_explain(p->ssl, ERR_get_error(), false, why,
                                sizeof(why));
    }
}

/* One pass over both directions; returns progress (>0), 0, or an error. */
static int pump_pass(struct xprt_tls_pump *p, short *net_ev, short *local_ev)
{
    int progress = 0, r;
    ssize_t n;

    /* net -> local */
    if (!p->net_eof && p->in_off == p->in_len && !p->stopping) {
        r = SSL_read(p->ssl, p->in, PUMP_BUF);
        if (r > 0) {
            p->in_len = (size_t)r;
            p->in_off = 0;
            progress = 1;
        } else {
            r = ssl_status(p, r, net_ev);
            if (r == -1)
                p->net_eof = true;
            else if (r < -1)
                return r;
        }
    }
    if (p->in_off < p->in_len && !p->stopping) {
        n = send(p->local_fd, p->in + p->in_off, p->in_len - p->in_off,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p->in_off += (size_t)n;
            progress = 1;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            *local_ev |= POLLOUT;
        } else {
            return -EPIPE; /* the helper's end is gone */
        }
    }
    if (p->net_eof && p->in_off == p->in_len && !p->local_shut) {
        shutdown(p->local_fd, SHUT_WR); /* the helper reads EOF */
        p->local_shut = true;
    }
    /* local -> net */
    if (!p->local_eof && !p->out_len) {
        n = recv(p->local_fd, p->out, PUMP_BUF, MSG_DONTWAIT);
        if (n > 0) {
            p->out_len = (size_t)n;
            progress = 1;
        } else if (n == 0) {
            p->local_eof = true;
        } else if (errno == EAGAIN || errno == EINTR) {
            *local_ev |= POLLIN;
        } else {
            p->local_eof = true;
        }
    }
    while (p->out_len) {
        r = SSL_write(p->ssl, p->out, (int)p->out_len);
        if (r > 0) {
            memmove(p->out, p->out + r, p->out_len - (size_t)r);
            p->out_len -= (size_t)r;
            progress = 1;
            continue;
        }
        r = ssl_status(p, r, net_ev);
        if (r < 0)
            return r == -1 ? -EPIPE : r;
        break;
    }
    if (p->local_eof && !p->out_len && !p->net_shut && !p->stopping) {
        (void)SSL_shutdown(p->ssl); /* close_notify, best effort */
        shutdown(p->net_fd, SHUT_WR);
        p->net_shut = true;
    }
    return progress;
}

static void *pump_main(void *arg)
{
    struct xprt_tls_pump *p = arg;
    uint64_t deadline = 0;

    for (;;) {
        short net_ev = 0, local_ev = 0;
        struct pollfd pf[3];
        int r = pump_pass(p, &net_ev, &local_ev);

        if (r < 0) {
            p->rc = r;
            break;
        }
        if (r > 0)
            continue;
        if (p->stopping && !p->out_len && p->local_eof)
            break;
        if (p->stopping && !p->out_len && (local_ev & POLLIN))
            break; /* the helper's bytes are all out */
        if (p->net_shut && p->local_shut)
            break; /* both directions ended */
        if (p->stopping && colo_now_ns() > deadline) {
            p->rc = -ETIMEDOUT;
            break;
        }
        pf[0] = (struct pollfd){.fd = p->stop_fd, .events = POLLIN};
        pf[1] = (struct pollfd){.fd = p->net_fd, .events = net_ev};
        pf[2] = (struct pollfd){.fd = p->local_fd, .events = local_ev};
        if (poll(pf, 3, p->stopping ? 100 : -1) < 0 && errno != EINTR) {
            p->rc = -errno;
            break;
        }
        if (!p->stopping && (pf[0].revents & POLLIN)) {
            p->stopping = true;
            deadline = colo_now_ns() + (uint64_t)STOP_WAIT_MS * 1000000u;
        }
    }
    if (p->rc < 0 && !p->stopping) {
        /* Broken: both ends see it as a dead socket. */
        shutdown(p->local_fd, SHUT_RDWR);
        shutdown(p->net_fd, SHUT_RDWR);
    }
    return NULL;
}

int xprt_tls_pump_start(SSL *ssl, int net_fd, int local_fd,
                        struct xprt_tls_pump **ret)
{
    struct xprt_tls_pump *p = calloc(1, sizeof(*p));

    *ret = NULL;
    if (!p)
        return -ENOMEM;
    p->ssl = ssl;
    p->net_fd = net_fd;
    p->local_fd = local_fd;
    p->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    p->in = malloc(PUMP_BUF);
    p->out = malloc(PUMP_BUF);
    if (p->stop_fd < 0 || !p->in || !p->out) {
        colo_close(&p->stop_fd);
        free(p->in);
        free(p->out);
        free(p);
        return -ENOMEM;
    }
    colo_fd_set_nonblock(net_fd, 1);
    colo_fd_set_nonblock(local_fd, 1);
    if (pthread_create(&p->th, NULL, pump_main, p) != 0) {
        colo_close(&p->stop_fd);
        free(p->in);
        free(p->out);
        free(p);
        return -EAGAIN;
    }
    *ret = p;
    return 0;
}

int xprt_tls_pump_stop(struct xprt_tls_pump *p, struct colo_buf *undelivered)
{
    uint64_t one = 1;
    int rc;

    (void)!write(p->stop_fd, &one, sizeof(one));
    pthread_join(p->th, NULL);
    rc = p->rc;
    if (undelivered && p->in_off < p->in_len)
        colo_buf_append(undelivered, p->in + p->in_off, p->in_len - p->in_off);
    p->in_off = p->in_len = 0;
    /* Records the session has buffered but not yet given out. */
    while (undelivered && rc == 0 && SSL_pending(p->ssl) > 0) {
        int r = SSL_read(p->ssl, p->in, PUMP_BUF);

        if (r <= 0)
            break;
        colo_buf_append(undelivered, p->in, (size_t)r);
    }
    colo_close(&p->stop_fd);
    free(p->in);
    free(p->out);
    free(p);
    return rc;
}

void xprt_tls_pump_free(struct xprt_tls_pump *p)
{
    if (!p)
        return;
    /* No draining: both ends fail at once and the thread ends. */
    shutdown(p->local_fd, SHUT_RDWR);
    shutdown(p->net_fd, SHUT_RDWR);
    (void)xprt_tls_pump_stop(p, NULL);
}
