/*
 * Links: TCP + bufferevent + handshake (link HELLO, then TLS 1.3 with an
 * external PSK or x509 certificates, tls.c) + heartbeats + backpressure +
 * fd lending (through a pump thread when the link is TLS, tls_pump.c). See
 * transport/link.h for the state machine and the callback contract.
 *
 * Layout, in execution order: creation (connect / from fd / accept),
 * handshake, the UP data path (receive, send, backpressure), heartbeats,
 * detach/attach, failure and freeing, the listener.
 */
#include "transport/link.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "tls.h"
#include "transport/colo_rec.h"

#define HS_MAX_RECORD 128u
#define HELLO_MAGIC   "COLOLINK"
#define HELLO_SIZE    48u
#define LINK_VERSION  2u
#define PEEK_MAX      64u
#define BULK_MIN      (256u << 10)

#define POOL_BLOCK (1u << 20)
#define POOL_MIN   (64u << 10)
#define POOL_KEEP  16

/* Reused send blocks (see queue_copy). */
struct send_pool {
    int refs; /* the link + every block in flight */
    int nfree;
    void *free[POOL_KEEP];
};

struct xprt_link {
    struct event_base *base;
    enum xprt_link_state state;
    int fd;
    struct bufferevent *bev;
    bool initiator;

    /* Configuration (copied). */
    struct xprt_link_cfg cfg;
    uint8_t *key;
    char *name;
    char *creds;

    struct xprt_link_cbs cbs;
    void *arg;
    struct xprt_listener *ls; /* accepted and still in handshake */
    struct xprt_link *ls_next;

    /* Timers: connect/handshake deadline, heartbeat tick, deferred work. */
    struct event *deadline;
    struct event *tick;
    struct event *deferred;

    /* Connect: remaining addresses. */
    struct addrinfo *ai_list, *ai_next;

    /* Handshake. */
    struct xprt_reader hs_rd;
    uint8_t my_nonce[XPRT_NONCE_SIZE], peer_nonce[XPRT_NONCE_SIZE];
    bool got_hello;

    /* TLS (unless cfg.plain): ssl is set from the TLS handshake on; l->bev
     * is then an OpenSSL bufferevent on fd. While DETACHED, a pump thread
     * owns ssl and fd, and lend_fd is the helper's end of its socketpair. */
    uint8_t psk[XPRT_TLS_PSK_LEN];
    SSL_CTX *tls_ctx;
    SSL *ssl;
    struct xprt_tls_pump *pump;
    int lend_fd, pump_fd;
    char host[256]; /* what we connected to (certificate check) */

    /* Data path. */
    struct xprt_reader rd;
    bool exact;
    /* Bulk body read straight from the socket into our buffer (no
     * evbuffer chains, no pullup copy) for records >= BULK_MIN. */
    struct event *bulk_ev;
    struct send_pool *pool;
    struct colo_buf bulk;
    size_t bulk_need;
    bool rx_paused;
    bool want_writable;
    uint64_t last_rx_ns, last_tx_ns;
    uint32_t hb_ms, hb_misses;

    /* Detach. */
    xprt_detach_cb detach_cb;
    void *detach_arg;

    /* Deferred failure (reported from the loop). */
    int pending_rc;

    /* Re-entrancy: free requested inside one of our callbacks. */
    int depth;
    bool free_pending;

    char peer[64];
    char why[200]; /* why the link failed, for the owner's log line */
    struct xprt_link_stats st;
};

struct xprt_listener {
    struct event_base *base;
    struct evconnlistener *evl;
    struct xprt_link_cfg cfg;
    uint8_t *key;
    char *name;
    char *creds;
    xprt_accept_cb cb;
    void *arg;
    struct xprt_link *hs_links; /* in handshake */
    uint16_t port;
    int depth;
    bool free_pending;
};

static void link_fail(struct xprt_link *l, int rc, const char *why);
static void rx_process(struct xprt_link *l);
static void link_really_free(struct xprt_link *l);
static void listener_really_free(struct xprt_listener *ls);

/* ---------------------------------------------------------------------- */
/* Helpers                                                                  */

void xprt_link_cfg_init(struct xprt_link_cfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
}

static void cfg_defaults(struct xprt_link_cfg *c)
{
    if (!c->connect_timeout_ms)
        c->connect_timeout_ms = 10000;
    if (!c->handshake_timeout_ms)
        c->handshake_timeout_ms = 5000;
    if (!c->heartbeat_ms)
        c->heartbeat_ms = 1000;
    if (!c->heartbeat_misses)
        c->heartbeat_misses = 3;
    if (!c->max_record)
        c->max_record = XPRT_REC_MAX_DEFAULT;
    if (!c->wm_high)
        c->wm_high = 8u << 20;
    if (!c->wm_low)
        c->wm_low = c->wm_high / 4;
}

static int cfg_check(const struct xprt_link_cfg *c)
{
    if (c->plain)
        return c->tls_creds ? -EINVAL : 0;
    if (c->tls_creds)
        return 0;
    if (!c->key || c->key_len < 16 || c->key_len > XPRT_KEY_MAX)
        return -EINVAL;
    return 0;
}

int xprt_link_cfg_check(const struct xprt_link_cfg *cfg, char *why,
                        size_t whysz)
{
    SSL_CTX *ctx = NULL;
    uint8_t psk[XPRT_TLS_PSK_LEN];
    int rc = cfg_check(cfg);

    if (rc < 0) {
        snprintf(why, whysz, "%s",
                 cfg->plain ? "--insecure excludes --tls-creds"
                            : "a key of 16..1024 bytes or --tls-creds is "
                              "needed");
        return -COLO_ECONFIG;
    }
    if (cfg->plain)
        return 0;
    if (!cfg->tls_creds && xprt_tls_derive_psk(cfg->key, cfg->key_len, psk))
        return -COLO_EINTERNAL;
    /* Both roles: a host may connect and accept. */
    for (int server = 0; server < 2; server++) {
        rc = xprt_tls_ctx_new(server, psk, cfg->tls_creds, &ctx, why, whysz);
        SSL_CTX_free(ctx);
        if (rc < 0)
            break;
    }
    OPENSSL_cleanse(psk, sizeof(psk));
    return rc < 0 ? -COLO_ECONFIG : 0;
}

/* Copy cfg with its key and name into owned storage. */
static int cfg_copy(struct xprt_link_cfg *dst, uint8_t **key, char **name,
                    char **creds, const struct xprt_link_cfg *src)
{
    *dst = *src;
    cfg_defaults(dst);
    *key = NULL;
    *creds = NULL;
    *name = strdup(src->name ? src->name : "link");
    if (!*name)
        return -ENOMEM;
    if (!src->plain && src->key) {
        *key = malloc(src->key_len);
        if (!*key)
            return -ENOMEM;
        memcpy(*key, src->key, src->key_len);
    }
    if (src->tls_creds) {
        *creds = strdup(src->tls_creds);
        if (!*creds)
            return -ENOMEM;
    }
    dst->key = *key;
    dst->name = *name;
    dst->tls_creds = *creds;
    return 0;
}

static void free_key(uint8_t **key, size_t len)
{
    if (*key) {
        OPENSSL_cleanse(*key, len);
        free(*key);
        *key = NULL;
    }
}

static void set_peer_name(struct xprt_link *l)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN];

    if (getpeername(l->fd, (struct sockaddr *)&ss, &sl) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s->sin_addr, host, sizeof(host));
        snprintf(l->peer, sizeof(l->peer), "%s:%u", host, ntohs(s->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof(host));
        snprintf(l->peer, sizeof(l->peer), "[%s]:%u", host,
                 ntohs(s->sin6_port));
    } else {
        snprintf(l->peer, sizeof(l->peer), "local");
    }
}

static void set_nodelay(int fd)
{
    int one = 1;

    /* Fails harmlessly on AF_UNIX socketpairs. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void enter(struct xprt_link *l)
{
    l->depth++;
}

/* Returns true if the link is gone (freed) and must not be touched. */
static bool leave(struct xprt_link *l)
{
    if (--l->depth == 0 && l->free_pending) {
        link_really_free(l);
        return true;
    }
    return false;
}

static bool gone(const struct xprt_link *l)
{
    return l->free_pending || l->state == XPRT_LINK_CLOSED;
}

/* ---------------------------------------------------------------------- */
/* Creation                                                                 */

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void on_deadline(evutil_socket_t fd, short what, void *arg);
static void on_tick(evutil_socket_t fd, short what, void *arg);
static void on_deferred(evutil_socket_t fd, short what, void *arg);
static void hs_start(struct xprt_link *l);

static int link_alloc(struct event_base *base, const struct xprt_link_cfg *cfg,
                      const struct xprt_link_cbs *cbs, void *arg,
                      struct xprt_link **ret)
{
    struct xprt_link *l;
    int rc;

    rc = cfg_check(cfg);
    if (rc < 0)
        return rc;
    l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->base = base;
    l->fd = -1;
    l->lend_fd = -1;
    l->pump_fd = -1;
    rc = cfg_copy(&l->cfg, &l->key, &l->name, &l->creds, cfg);
    if (rc < 0)
        goto fail;
    if (!l->cfg.plain && l->key &&
        xprt_tls_derive_psk(l->key, l->cfg.key_len, l->psk) < 0) {
        rc = -COLO_EINTERNAL;
        goto fail;
    }
    if (cbs)
        l->cbs = *cbs;
    l->arg = arg;
    l->hb_ms = l->cfg.heartbeat_ms;
    l->hb_misses = l->cfg.heartbeat_misses;
    l->deadline = evtimer_new(base, on_deadline, l);
    l->tick = event_new(base, -1, EV_PERSIST, on_tick, l);
    l->deferred = event_new(base, -1, 0, on_deferred, l);
    l->pool = calloc(1, sizeof(*l->pool));
    if (l->pool)
        l->pool->refs = 1;
    colo_buf_init(&l->bulk,
                  XPRT_REC_HDR_SIZE + xprt_rec_padded_len(l->cfg.max_record));
    if (!l->deadline || !l->tick || !l->deferred) {
        rc = -ENOMEM;
        goto fail;
    }
    xprt_reader_init(&l->hs_rd, XPRT_FMT_RECORDS, HS_MAX_RECORD);
    xprt_reader_init(&l->rd, XPRT_FMT_RECORDS, l->cfg.max_record);
    *ret = l;
    return 0;
fail:
    link_really_free(l);
    return rc;
}

static int bev_setup(struct xprt_link *l)
{
    /* The link owns the fd, not the bufferevent: it survives detach. The
     * same holds for the SSL of a TLS link (no BEV_OPT_CLOSE_ON_FREE). */
    if (l->ssl) {
        l->bev = bufferevent_openssl_socket_new(
            l->base, l->fd, l->ssl,
            l->state == XPRT_LINK_HANDSHAKE
                ? (l->initiator ? BUFFEREVENT_SSL_CONNECTING
                                : BUFFEREVENT_SSL_ACCEPTING)
                : BUFFEREVENT_SSL_OPEN,
            0);
        if (l->bev)
            /* A killed peer sends no close_notify: that is EOF, as on a
             * plain link; what it truncates, the record framing finds. */
            bufferevent_openssl_set_allow_dirty_shutdown(l->bev, 1);
    } else {
        l->bev = bufferevent_socket_new(l->base, l->fd, 0);
    }
    if (!l->bev)
        return -ENOMEM;
    bufferevent_setcb(l->bev, on_read, on_write, on_event, l);
    bufferevent_setwatermark(l->bev, EV_WRITE, l->cfg.wm_low, 0);
    /* libevent's default of 16 KiB per read/write call costs a syscall per
     * 16 KiB at wire speed; bulk memory wants bigger bites. */
    bufferevent_set_max_single_read(l->bev, 1u << 20);
    bufferevent_set_max_single_write(l->bev, 1u << 20);
    return 0;
}

static void arm_deadline(struct xprt_link *l, uint32_t ms)
{
    struct timeval tv = colo_ms_to_tv(ms);

    evtimer_add(l->deadline, &tv);
}

static int try_connect(struct xprt_link *l)
{
    int rc = -EHOSTUNREACH;

    while (l->ai_next) {
        struct addrinfo *ai = l->ai_next;

        l->ai_next = ai->ai_next;
        if (l->bev) {
            bufferevent_disable(l->bev, EV_READ | EV_WRITE);
            bufferevent_free(l->bev);
            l->bev = NULL;
        }
        colo_close(&l->fd);
        l->fd = socket(ai->ai_family,
                       SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (l->fd < 0) {
            rc = -errno;
            continue;
        }
        rc = bev_setup(l);
        if (rc < 0)
            return rc;
        if (bufferevent_socket_connect(l->bev, ai->ai_addr,
                                       (int)ai->ai_addrlen) == 0)
            return 0;
        rc = -errno ? -errno : -ECONNREFUSED;
    }
    return rc;
}

int xprt_link_connect(struct event_base *base, const char *host, uint16_t port,
                      const struct xprt_link_cfg *cfg,
                      const struct xprt_link_cbs *cbs, void *arg,
                      struct xprt_link **ret)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct xprt_link *l = NULL;
    char portstr[8];
    int rc;

    *ret = NULL;
    if (!host || !*host || !port)
        return -EINVAL;
    rc = link_alloc(base, cfg, cbs, arg, &l);
    if (rc < 0)
        return rc;
    l->initiator = true;
    l->state = XPRT_LINK_CONNECTING;
    snprintf(portstr, sizeof(portstr), "%u", port);
    /* Blocking resolution: numeric addresses and /etc/hosts answer at once;
     * a DNS name may block the loop (documented in link.h). */
    if (getaddrinfo(host, portstr, &hints, &l->ai_list) != 0) {
        rc = -EHOSTUNREACH;
        goto fail;
    }
    l->ai_next = l->ai_list;
    snprintf(l->peer, sizeof(l->peer), "%s:%u", host, port);
    snprintf(l->host, sizeof(l->host), "%s", host);
    rc = try_connect(l);
    if (rc < 0)
        goto fail;
    arm_deadline(l, l->cfg.connect_timeout_ms);
    *ret = l;
    return 0;
fail:
    link_really_free(l);
    return rc;
}

int xprt_link_new_from_fd(struct event_base *base, int fd, bool initiator,
                          const struct xprt_link_cfg *cfg,
                          const struct xprt_link_cbs *cbs, void *arg,
                          struct xprt_link **ret)
{
    struct xprt_link *l = NULL;
    int rc;

    *ret = NULL;
    rc = link_alloc(base, cfg, cbs, arg, &l);
    if (rc < 0) {
        colo_close(&fd);
        return rc;
    }
    l->fd = fd;
    l->initiator = initiator;
    colo_fd_set_nonblock(fd, 1);
    colo_fd_set_cloexec(fd, 1);
    rc = bev_setup(l);
    if (rc < 0) {
        link_really_free(l);
        return rc;
    }
    set_peer_name(l);
    hs_start(l);
    *ret = l;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Handshake                                                                */

static void send_raw_record(struct xprt_link *l, uint32_t type,
                            const void *body, size_t len)
{
    if (xprt_rec_write_evbuf(bufferevent_get_output(l->bev), type, body, len) ==
        0)
        l->last_tx_ns = colo_now_ns();
}

/* Link HELLO flags (docs/protocol.md §2.2): how this side protects the
 * link. Exactly one is set; both sides must send the same. */
static uint32_t hello_mode(const struct xprt_link *l)
{
    if (l->cfg.plain)
        return XPRT_LINK_HELLO_PLAIN;
    return l->cfg.tls_creds ? XPRT_LINK_HELLO_TLS_X509
                            : XPRT_LINK_HELLO_TLS_PSK;
}

static const char *mode_name(uint32_t mode)
{
    switch (mode) {
    case XPRT_LINK_HELLO_PLAIN:
        return "plain TCP (--insecure)";
    case XPRT_LINK_HELLO_TLS_PSK:
        return "TLS with the key file (PSK)";
    case XPRT_LINK_HELLO_TLS_X509:
        return "TLS with x509 certificates (--tls-creds)";
    default:
        return "an unknown protection mode";
    }
}

static void send_hello(struct xprt_link *l)
{
    uint8_t hello[HELLO_SIZE];

    memcpy(hello, HELLO_MAGIC, 8);
    colo_put_le32(hello + 8, LINK_VERSION);
    colo_put_le32(hello + 12, hello_mode(l));
    memcpy(hello + 16, l->my_nonce, XPRT_NONCE_SIZE);
    send_raw_record(l, XPRT_LINK_HELLO, hello, sizeof(hello));
}

/* The connecting side sends its HELLO first; the accepting side answers
 * with its own once it has checked the peer's. Then TLS starts at once on
 * both sides, so no TLS byte is ever read as part of the HELLO exchange. */
static void hs_start(struct xprt_link *l)
{
    l->state = XPRT_LINK_HANDSHAKE;
    set_nodelay(l->fd);
    if (RAND_bytes(l->my_nonce, sizeof(l->my_nonce)) != 1) {
        l->pending_rc = -COLO_EINTERNAL;
        event_active(l->deferred, 0, 0);
        return;
    }
    if (l->initiator)
        send_hello(l);
    evtimer_del(l->deadline);
    arm_deadline(l, l->cfg.handshake_timeout_ms);
    bufferevent_enable(l->bev, EV_READ | EV_WRITE);
}

/* Tell the peer no, as plainly as possible, before closing. Only before
 * TLS: once the TLS handshake runs, OpenSSL's alerts say it. */
static void send_reject(struct xprt_link *l, int code, const char *text)
{
    uint8_t rec[8 + 8 + 128];
    size_t tl = strnlen(text, 120);
    uint8_t body[8 + 120];

    if (l->ssl || l->fd < 0)
        return;
    colo_put_le32(body, (uint32_t)code);
    colo_put_le32(body + 4, (uint32_t)tl);
    memcpy(body + 8, text, tl);
    xprt_rec_hdr_encode(rec, XPRT_LINK_REJECT, (uint32_t)(8 + tl));
    memcpy(rec + 8, body, 8 + tl);
    memset(rec + 16 + tl, 0, xprt_rec_padded_len((uint32_t)(8 + tl)) - 8 - tl);
    /* Whatever is queued first (our HELLO), then the rejection; a
     * best-effort non-blocking write on a fresh socket. */
    if (l->bev) {
        /* The bufferevent froze its output's front: copy, not drain. */
        struct evbuffer *out = bufferevent_get_output(l->bev);
        size_t n = evbuffer_get_length(out);

        if (n)
            (void)!send(l->fd, evbuffer_pullup(out, -1), n,
                        MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    (void)!send(l->fd, rec, 8 + xprt_rec_padded_len((uint32_t)(8 + tl)),
                MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void go_up(struct xprt_link *l)
{
    struct timeval tv;

    l->state = XPRT_LINK_UP;
    evtimer_del(l->deadline);
    l->last_rx_ns = l->last_tx_ns = colo_now_ns();
    if (l->hb_ms != UINT32_MAX) {
        tv = colo_ms_to_tv(l->hb_ms / 4 ? l->hb_ms / 4 : 1);
        event_add(l->tick, &tv);
    }
    colo_debug("link %s: up with %s (%s)", l->name, l->peer,
               mode_name(hello_mode(l)));
    if (l->ls) {
        struct xprt_listener *ls = l->ls;
        struct xprt_link **pp;

        for (pp = &ls->hs_links; *pp; pp = &(*pp)->ls_next)
            if (*pp == l) {
                *pp = l->ls_next;
                break;
            }
        l->ls = NULL;
        l->ls_next = NULL;
        ls->depth++;
        ls->cb(ls, l, 0, ls->arg);
        if (--ls->depth == 0 && ls->free_pending)
            listener_really_free(ls);
    } else if (l->cbs.up) {
        l->cbs.up(l, l->arg);
    }
}

/* Both HELLOs are through and agree on TLS: the plain bufferevent makes
 * room for an OpenSSL one on the same fd. */
static void tls_begin(struct xprt_link *l)
{
    char why[300];
    int rc;

    struct evbuffer *out = bufferevent_get_output(l->bev);
    size_t n = evbuffer_get_length(out);

    if (evbuffer_get_length(bufferevent_get_input(l->bev))) {
        send_reject(l, -COLO_EAUTH, "data before the TLS handshake");
        link_fail(l, -COLO_EAUTH, "peer sent data before the TLS handshake");
        return;
    }
    /* Our HELLO must leave before the bufferevent goes: a few dozen bytes
     * on a fresh socket, which the kernel takes at once. */
    if (n && send(l->fd, evbuffer_pullup(out, -1), n,
                  MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)n) {
        link_fail(l, errno ? -errno : -EIO, "cannot send the link HELLO");
        return;
    }
    rc = xprt_tls_ctx_new(!l->initiator, l->key ? l->psk : NULL,
                          l->cfg.tls_creds, &l->tls_ctx, why, sizeof(why));
    if (rc < 0) {
        link_fail(l, rc == -ENOMEM ? rc : -COLO_ECONFIG, why);
        return;
    }
    l->ssl = xprt_tls_ssl_new(l->tls_ctx, !l->initiator, l->key ? l->psk : NULL,
                              l->host);
    if (!l->ssl) {
        link_fail(l, -ENOMEM, "cannot create a TLS session");
        return;
    }
    bufferevent_disable(l->bev, EV_READ | EV_WRITE);
    bufferevent_free(l->bev);
    l->bev = NULL;
    rc = bev_setup(l);
    if (rc < 0) {
        link_fail(l, rc, "cannot set up the TLS bufferevent");
        return;
    }
    bufferevent_enable(l->bev, EV_READ | EV_WRITE);
}

static void hs_record(struct xprt_link *l, const struct xprt_item *it)
{
    char why[200];

    switch (it->type) {
    case XPRT_LINK_HELLO: {
        uint32_t mode, version;

        if (l->got_hello || it->length != HELLO_SIZE ||
            memcmp(it->body, HELLO_MAGIC, 8)) {
            send_reject(l, -COLO_EAUTH, "bad handshake hello");
            link_fail(l, -COLO_EAUTH, "bad handshake hello from peer");
            return;
        }
        version = colo_get_le32(it->body + 8);
        if (version != LINK_VERSION) {
            snprintf(why, sizeof(why),
                     "unsupported link version %u (this side speaks %u%s)",
                     version, LINK_VERSION,
                     version == 1 ? ": the peer is a colo without TLS; "
                                    "upgrade it"
                                  : "");
            send_reject(l, -COLO_EAUTH, "unsupported link version");
            link_fail(l, -COLO_EAUTH, why);
            return;
        }
        mode = colo_get_le32(it->body + 12);
        if (mode != hello_mode(l)) {
            /* No downgrade: each side's mode is its own configuration;
             * nothing is negotiated. */
            snprintf(why, sizeof(why),
                     "protection mismatch: it requires %s; we offer %s",
                     mode_name(hello_mode(l)), mode_name(mode));
            send_reject(l, -COLO_EAUTH, why);
            snprintf(why, sizeof(why),
                     "protection mismatch: we require %s; the peer offers %s",
                     mode_name(hello_mode(l)), mode_name(mode));
            link_fail(l, -COLO_EAUTH, why);
            return;
        }
        memcpy(l->peer_nonce, it->body + 16, XPRT_NONCE_SIZE);
        l->got_hello = true;
        if (!l->initiator)
            send_hello(l);
        if (l->cfg.plain)
            go_up(l);
        else
            tls_begin(l);
        return;
    }
    case XPRT_LINK_REJECT: {
        char text[128] = "";
        uint32_t tl = it->length >= 8 ? colo_get_le32(it->body + 4) : 0;

        if (tl <= it->length - 8 && tl < sizeof(text)) {
            memcpy(text, it->body + 8, tl);
            text[tl] = '\0';
        }
        snprintf(why, sizeof(why), "rejected by the peer: %s", text);
        link_fail(l, -COLO_EAUTH, why);
        return;
    }
    default:
        /* Nothing else is parsed before the handshake. */
        send_reject(l, -COLO_EAUTH, "expected the colo link handshake");
        link_fail(l, -COLO_EAUTH,
                  it->type == XPRT_LINK_AUTH
                      ? "the peer speaks link version 1 (colo without TLS)"
                      : "peer sent data before the link handshake");
        return;
    }
}

/* ---------------------------------------------------------------------- */
/* Receive path                                                             */

/* Deliver one item; returns false if the link went away or stopped. */
static bool deliver(struct xprt_link *l, const struct xprt_item *it)
{
    if (it->kind == XPRT_ITEM_RECORD) {
        l->st.records_in++;
        if (it->type == XPRT_COLO_HEARTBEAT) {
            l->st.heartbeats_in++;
            return true;
        }
        if (it->type >= XPRT_COLO_LINK_FIRST &&
            it->type <= XPRT_COLO_LINK_FIRST + 0xfff) {
            link_fail(l, -COLO_ESTREAM_CORRUPT,
                      "handshake record after the handshake");
            return false;
        }
    }
    if (l->cbs.record)
        l->cbs.record(l, it, l->arg);
    return !gone(l);
}

/* peek (1..8 bytes) is, so far, the header of a HEARTBEAT record. */
static bool maybe_heartbeat(const uint8_t *peek, size_t plen)
{
    uint8_t hb[XPRT_REC_HDR_SIZE];

    xprt_rec_hdr_encode(hb, XPRT_COLO_HEARTBEAT, 8);
    return memcmp(peek, hb, plen < sizeof(hb) ? plen : sizeof(hb)) == 0;
}

static void set_read_limit(struct xprt_link *l, size_t need)
{
    if (l->exact)
        bufferevent_setwatermark(l->bev, EV_READ, 0, need);
    else
        bufferevent_setwatermark(l->bev, EV_READ, 0, 0);
}

/* Bulk bodies: read the rest of a big item straight into l->bulk. */
static void bulk_finish(struct xprt_link *l)
{
    struct xprt_item it;
    ssize_t n;

    event_del(l->bulk_ev);
    l->bulk_need = 0;
    n = xprt_reader_push(&l->rd, l->bulk.data, l->bulk.len, &it);
    if (n < 0) {
        link_fail(l, (int)n, xprt_reader_why(&l->rd));
        return;
    }
    l->st.bytes_in += (uint64_t)n;
    if (it.kind != XPRT_ITEM_NONE && !deliver(l, &it))
        return;
    colo_buf_reset(&l->bulk);
    if (l->state == XPRT_LINK_UP && !l->rx_paused && l->bev) {
        bufferevent_enable(l->bev, EV_READ);
        rx_process(l);
    }
}

static void on_bulk_read(evutil_socket_t fd, short what, void *arg)
{
    struct xprt_link *l = arg;

    (void)fd;
    (void)what;
    enter(l);
    while (l->bulk_need && l->bulk.len < l->bulk_need) {
        ssize_t n =
            read(l->fd, l->bulk.data + l->bulk.len, l->bulk_need - l->bulk.len);

        if (n > 0) {
            l->bulk.len += (size_t)n;
            l->last_rx_ns = colo_now_ns();
            continue;
        }
        if (n == 0) {
            char why[128];

            snprintf(why, sizeof(why),
                     "peer closed the link inside record #%llu at stream "
                     "offset %llu (%zu of %zu bytes)",
                     (unsigned long long)l->rd.index,
                     (unsigned long long)l->rd.offset, l->bulk.len,
                     l->bulk_need);
            link_fail(l, -COLO_ESTREAM_TRUNCATED, why);
            goto out;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            link_fail(l, -errno, "socket error");
        goto out;
    }
    if (l->bulk_need)
        bulk_finish(l);
out:
    leave(l);
}

static void bulk_start(struct xprt_link *l, size_t need)
{
    struct evbuffer *in = bufferevent_get_input(l->bev);
    size_t avail = evbuffer_get_length(in);

    colo_buf_reset(&l->bulk);
    if (colo_buf_reserve(&l->bulk, need) < 0) {
        link_fail(l, -ENOMEM, "no memory for a record");
        return;
    }
    evbuffer_remove(in, l->bulk.data, avail);
    l->bulk.len = avail;
    l->bulk_need = need;
    bufferevent_disable(l->bev, EV_READ);
    if (!l->bulk_ev)
        l->bulk_ev =
            event_new(l->base, l->fd, EV_READ | EV_PERSIST, on_bulk_read, l);
    if (!l->bulk_ev) {
        link_fail(l, -ENOMEM, "no memory for an event");
        return;
    }
    event_add(l->bulk_ev, NULL);
}

static void rx_process(struct xprt_link *l)
{
    while (!gone(l) && l->bev &&
           (l->state == XPRT_LINK_HANDSHAKE ||
            (l->state == XPRT_LINK_UP && !l->rx_paused))) {
        struct evbuffer *in = bufferevent_get_input(l->bev);
        struct xprt_reader *rd =
            l->state == XPRT_LINK_HANDSHAKE ? &l->hs_rd : &l->rd;
        size_t avail = evbuffer_get_length(in);
        uint8_t peek[PEEK_MAX];
        size_t plen = avail < PEEK_MAX ? avail : PEEK_MAX;
        struct xprt_item it;
        ssize_t need, n;
        uint8_t *p;

        if (avail == 0)
            break;
        evbuffer_copyout(in, peek, plen);
        /* Heartbeats are link traffic, not part of the stream: swallow
         * them before the reader, so they may come between any two items
         * (even after a stream's END) and stream offsets exclude them. */
        if (l->state == XPRT_LINK_UP && plen && maybe_heartbeat(peek, plen)) {
            if (avail < 16) {
                set_read_limit(l, 16);
                return; /* wait for the whole heartbeat */
            }
            l->st.heartbeats_in++;
            l->st.bytes_in += 16;
            evbuffer_drain(in, 16);
            continue;
        }
        need = xprt_reader_next_size(rd, peek, plen);
        if (need < 0) {
            if (l->state == XPRT_LINK_HANDSHAKE) {
                send_reject(l, -COLO_EAUTH, "oversized handshake record");
                link_fail(l, -COLO_EAUTH, "oversized handshake record");
            } else {
                char why[160];
                snprintf(why, sizeof(why), "record #%llu at offset %llu: %s",
                         (unsigned long long)rd->index,
                         (unsigned long long)rd->offset,
                         need == -COLO_ESTREAM_TOO_BIG
                             ? "length over the cap"
                             : "data after the END record");
                link_fail(l, (int)need, why);
            }
            return;
        }
        if ((size_t)need > avail) {
            if (l->state == XPRT_LINK_UP && !l->exact && !l->ssl &&
                (size_t)need >= BULK_MIN && avail >= XPRT_REC_HDR_SIZE) {
                bulk_start(l, (size_t)need);
                return;
            }
            set_read_limit(l, (size_t)need);
            return;
        }
        p = evbuffer_pullup(in, need);
        n = xprt_reader_push(rd, p, (size_t)need, &it);
        if (n < 0) {
            if (l->state == XPRT_LINK_HANDSHAKE) {
                send_reject(l, -COLO_EAUTH, "bad handshake record");
                link_fail(l, -COLO_EAUTH, "bad handshake record");
            } else {
                link_fail(l, (int)n, xprt_reader_why(rd));
            }
            return;
        }
        if (it.kind == XPRT_ITEM_NONE) {
            /* AUTO decided a format without consuming: go round. */
            if (n == 0)
                continue;
        }
        l->st.bytes_in += (uint64_t)n;
        if (l->state == XPRT_LINK_HANDSHAKE) {
            uint8_t hs[HS_MAX_RECORD];

            /* Consumed before it is acted on: the HELLO may replace the
             * bufferevent (TLS begins). */
            if (it.length > sizeof(hs)) {
                link_fail(l, -COLO_EAUTH, "oversized handshake record");
                return;
            }
            memcpy(hs, it.body, it.length);
            it.body = hs;
            evbuffer_drain(in, (size_t)n);
            hs_record(l, &it);
            if (gone(l) || l->ssl)
                return;
            continue;
        }
        if (it.kind != XPRT_ITEM_NONE && !deliver(l, &it))
            return;
        if (l->bev)
            evbuffer_drain(bufferevent_get_input(l->bev), (size_t)n);
    }
    if (!gone(l) && l->bev && l->exact)
        set_read_limit(l, XPRT_REC_HDR_SIZE);
}

/*
 * TLS: move what the session has already decrypted into the input buffer.
 * libevent's OpenSSL bufferevent reads the rest of a TLS record only while
 * reading is enabled, and on a socket event; after a pause (or attach) the
 * socket may stay quiet while a record's tail waits inside the SSL.
 */
static void tls_take_pending(struct xprt_link *l)
{
    struct evbuffer *in;

    if (!l->ssl || !l->bev)
        return;
    in = bufferevent_get_input(l->bev);
    while (SSL_pending(l->ssl) > 0) {
        struct evbuffer_iovec v;
        int r;

        if (evbuffer_reserve_space(in, SSL_pending(l->ssl), &v, 1) < 1)
            return;
        r = SSL_read(l->ssl, v.iov_base, (int)v.iov_len);
        if (r <= 0) {
            ERR_clear_error();
            return;
        }
        v.iov_len = (size_t)r;
        evbuffer_commit_space(in, &v, 1);
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct xprt_link *l = arg;

    (void)bev;
    l->last_rx_ns = colo_now_ns();
    enter(l);
    rx_process(l);
    leave(l);
}

/* ---------------------------------------------------------------------- */
/* Send path and backpressure                                               */

static const uint8_t pad_zero[XPRT_REC_ALIGN];

/*
 * Send buffer pool. Bytes the socket does not take at once are copied into
 * reused 1 MiB blocks that the output evbuffer references, instead of fresh
 * evbuffer chains: fresh memory from malloc is returned to the kernel and
 * faulted back in for every megabyte, which halved throughput.
 */

static void pool_unref(struct send_pool *p)
{
    if (--p->refs > 0)
        return;
    for (int i = 0; i < p->nfree; i++)
        free(p->free[i]);
    free(p);
}

static void pool_block_done(const void *data, size_t len, void *arg)
{
    struct send_pool *p = arg;

    (void)len;
    if (p->refs > 1 && p->nfree < POOL_KEEP)
        p->free[p->nfree++] = (void *)data;
    else
        free((void *)data);
    pool_unref(p);
}

static uint8_t *pool_get(struct send_pool *p)
{
    uint8_t *b = p->nfree ? p->free[--p->nfree] : malloc(POOL_BLOCK);

    if (b)
        p->refs++;
    return b;
}

/* Queue v[] minus its first `skip` bytes into out. */
static int queue_copy(struct xprt_link *l, struct evbuffer *out,
                      const struct iovec *v, int nv, size_t skip)
{
    size_t rem = 0, used = 0;
    uint8_t *blk = NULL;

    for (int i = 0; i < nv; i++)
        rem += v[i].iov_len;
    rem -= skip;
    for (int i = 0; i < nv; i++) {
        const uint8_t *p = v[i].iov_base;
        size_t left = v[i].iov_len;

        if (skip >= left) {
            skip -= left;
            continue;
        }
        p += skip;
        left -= skip;
        skip = 0;
        if (rem < POOL_MIN || !l->pool) {
            if (evbuffer_add(out, p, left))
                return -ENOMEM; /* the stream is now broken: rare */
            continue;
        }
        while (left) {
            size_t take;

            if (!blk) {
                blk = pool_get(l->pool);
                if (!blk)
                    return -ENOMEM;
                used = 0;
            }
            take = POOL_BLOCK - used < left ? POOL_BLOCK - used : left;
            memcpy(blk + used, p, take);
            used += take;
            p += take;
            left -= take;
            if (used == POOL_BLOCK) {
                if (evbuffer_add_reference(out, blk, used, pool_block_done,
                                           l->pool)) {
                    pool_block_done(blk, used, l->pool);
                    return -ENOMEM;
                }
                blk = NULL;
            }
        }
    }
    if (blk &&
        evbuffer_add_reference(out, blk, used, pool_block_done, l->pool)) {
        pool_block_done(blk, used, l->pool);
        return -ENOMEM;
    }
    return 0;
}

/*
 * Queue a record. When nothing is queued, first try to hand it to the
 * kernel directly (one sendmsg, no copy); only what the socket does not
 * take is copied into the output buffer. Socket errors are left for the
 * bufferevent to find, so they are reported from the loop.
 */
struct borrow {
    int pending; /* references in the output buffer + 1 while queuing */
    xprt_sent_cb cb;
    void *arg;
};

static void borrow_release(struct borrow *bw)
{
    if (--bw->pending > 0)
        return;
    if (bw->cb)
        bw->cb(bw->arg);
    free(bw);
}

static void borrow_ref_done(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    borrow_release(arg);
}

static void borrow_once(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    borrow_release(arg);
}

/* Queue v[] minus `skip` bytes by reference: pieces in caller memory
 * (is_borrowed[i]) are referenced, our header/padding are copied. */
static int queue_ref(struct evbuffer *out, const struct iovec *v, int nv,
                     size_t skip, int first_borrowed, int last_borrowed,
                     struct borrow *bw)
{
    for (int i = 0; i < nv; i++) {
        const uint8_t *p = v[i].iov_base;
        size_t left = v[i].iov_len;

        if (skip >= left) {
            skip -= left;
            continue;
        }
        p += skip;
        left -= skip;
        skip = 0;
        if (i >= first_borrowed && i <= last_borrowed) {
            bw->pending++;
            if (evbuffer_add_reference(out, p, left, borrow_ref_done, bw)) {
                bw->pending--;
                return -ENOMEM;
            }
        } else if (evbuffer_add(out, p, left)) {
            return -ENOMEM;
        }
    }
    return 0;
}

static int write_through(struct xprt_link *l, uint32_t type,
                         const struct iovec *iov, int n, uint32_t len,
                         struct borrow *bw)
{
    struct evbuffer *out = bufferevent_get_output(l->bev);
    uint8_t hdr[XPRT_REC_HDR_SIZE];
    struct iovec stack_v[66], *v = stack_v;
    struct msghdr mh = {0};
    size_t total = XPRT_REC_HDR_SIZE + xprt_rec_padded_len(len);
    size_t done = 0;
    ssize_t w;
    int nv = 0, rc;

    if (n + 2 > (int)(sizeof(stack_v) / sizeof(stack_v[0]))) {
        v = malloc(((size_t)n + 2) * sizeof(*v));
        if (!v)
            return -ENOMEM;
    }
    xprt_rec_hdr_encode(hdr, type, len);
    v[nv].iov_base = hdr;
    v[nv++].iov_len = sizeof(hdr);
    for (int i = 0; i < n; i++)
        if (iov[i].iov_len)
            v[nv++] = iov[i];
    if (xprt_rec_padded_len(len) != len) {
        v[nv].iov_base = (void *)pad_zero;
        v[nv++].iov_len = xprt_rec_padded_len(len) - len;
    }
    if (evbuffer_get_length(out) == 0 && !l->exact && !l->ssl && nv <= 1024) {
        mh.msg_iov = v;
        mh.msg_iovlen = (size_t)nv;
        do {
            w = sendmsg(l->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (w < 0 && errno == EINTR);
        if (w > 0)
            done = (size_t)w;
    }
    if (done == total)
        rc = 0;
    else if (bw)
        rc = queue_ref(out, v, nv, done, 1,
                       xprt_rec_padded_len(len) != len ? nv - 2 : nv - 1, bw);
    else
        rc = queue_copy(l, out, v, nv, done);
    if (v != stack_v)
        free(v);
    return rc;
}

static int sendv_common(struct xprt_link *l, uint32_t type,
                        const struct iovec *iov, int n, struct borrow *bw)
{
    uint64_t len = 0;
    int rc;

    if (l->state != XPRT_LINK_UP)
        return -ENOTCONN;
    if (type >= XPRT_COLO_LINK_FIRST && type <= XPRT_COLO_LINK_FIRST + 0xfff)
        return -EINVAL;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    if (len > l->cfg.max_record)
        return -COLO_ESTREAM_TOO_BIG;
    rc = write_through(l, type, iov, n, (uint32_t)len, bw);
    if (rc < 0)
        return rc;
    l->last_tx_ns = colo_now_ns();
    l->st.records_out++;
    l->st.bytes_out += XPRT_REC_HDR_SIZE + xprt_rec_padded_len((uint32_t)len);
    return 0;
}

int xprt_link_sendv(struct xprt_link *l, uint32_t type, const struct iovec *iov,
                    int n)
{
    return sendv_common(l, type, iov, n, NULL);
}

int xprt_link_sendv_borrowed(struct xprt_link *l, uint32_t type,
                             const struct iovec *iov, int n, xprt_sent_cb cb,
                             void *arg)
{
    struct borrow *bw = calloc(1, sizeof(*bw));
    static const struct timeval now = {0, 0};
    int rc;

    if (!bw)
        return -ENOMEM;
    bw->pending = 1; /* ours, while queuing */
    bw->cb = cb;
    bw->arg = arg;
    rc = sendv_common(l, type, iov, n, bw);
    if (rc < 0 && bw->pending == 1) {
        free(bw); /* nothing referenced: the caller keeps ownership */
        return rc;
    }
    if (bw->pending == 1) {
        /* All bytes went to the kernel at once: still report from the
         * loop, never from inside this call. */
        if (event_base_once(l->base, -1, EV_TIMEOUT, borrow_once, bw, &now) <
            0) {
            bw->cb = NULL; /* cannot defer: drop silently, data sent */
            borrow_release(bw);
        }
        return rc;
    }
    borrow_release(bw); /* the output buffer holds the rest */
    return rc;
}

int xprt_link_send(struct xprt_link *l, uint32_t type, const void *body,
                   size_t len)
{
    struct iovec iov = {.iov_base = (void *)body, .iov_len = len};

    return xprt_link_sendv(l, type, &iov, len ? 1 : 0);
}

int xprt_link_send_raw(struct xprt_link *l, const void *bytes, size_t len)
{
    if (l->state != XPRT_LINK_UP)
        return -ENOTCONN;
    if (evbuffer_add(bufferevent_get_output(l->bev), bytes, len))
        return -ENOMEM;
    l->last_tx_ns = colo_now_ns();
    l->st.bytes_out += len;
    return 0;
}

size_t xprt_link_output_len(const struct xprt_link *l)
{
    if (!l->bev)
        return 0;
    return evbuffer_get_length(bufferevent_get_output(l->bev));
}

bool xprt_link_may_write(struct xprt_link *l)
{
    if (l->state != XPRT_LINK_UP)
        return false;
    if (xprt_link_output_len(l) < l->cfg.wm_high)
        return true;
    l->want_writable = true;
    return false;
}

static void detach_finish(struct xprt_link *l);

static void on_write(struct bufferevent *bev, void *arg)
{
    struct xprt_link *l = arg;

    (void)bev;
    enter(l);
    if (l->state == XPRT_LINK_DETACHING) {
        if (xprt_link_output_len(l) == 0)
            detach_finish(l);
    } else if (l->state == XPRT_LINK_UP && l->want_writable &&
               xprt_link_output_len(l) <= l->cfg.wm_low) {
        l->want_writable = false;
        if (l->cbs.writable)
            l->cbs.writable(l, l->arg);
    }
    leave(l);
}

/* ---------------------------------------------------------------------- */
/* Socket events, timers                                                    */

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct xprt_link *l = arg;

    (void)bev;
    enter(l);
    if (what & BEV_EVENT_CONNECTED) {
        if (l->state == XPRT_LINK_CONNECTING) {
            set_peer_name(l);
            hs_start(l);
        } else if (l->state == XPRT_LINK_HANDSHAKE && l->ssl) {
            go_up(l); /* the TLS handshake is done */
        }
        leave(l);
        return;
    }
    if (l->ssl && (what & BEV_EVENT_ERROR)) {
        /* OpenSSL's verdict, in the link's words. */
        unsigned long e, first = 0;
        char why[300];
        int rc;

        while ((e = bufferevent_get_openssl_error(l->bev)))
            if (!first)
                first = e;
        if (first) {
            rc =
                xprt_tls_explain(l->ssl, first, l->state == XPRT_LINK_HANDSHAKE,
                                 why, sizeof(why));
            link_fail(l, rc, why);
            leave(l);
            return;
        }
    }
    if (l->state == XPRT_LINK_CONNECTING && (what & BEV_EVENT_ERROR)) {
        int err = EVUTIL_SOCKET_ERROR();
        int rc = try_connect(l);

        if (rc < 0)
            link_fail(l, err ? -err : rc, "connect failed");
        leave(l);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* Deliver whatever complete records came before the EOF. */
        rx_process(l);
        if (!gone(l)) {
            struct evbuffer *in = l->bev ? bufferevent_get_input(l->bev) : NULL;

            if (l->state == XPRT_LINK_HANDSHAKE)
                link_fail(l, -COLO_EAUTH,
                          l->ssl ? "peer closed the link during the TLS "
                                   "handshake (it refused us: its log says "
                                   "why)"
                                 : "peer closed the link during the "
                                   "handshake");
            else if (in && evbuffer_get_length(in) > 0) {
                char why[128];

                snprintf(why, sizeof(why),
                         "peer closed the link inside record #%llu at "
                         "stream offset %llu (%zu bytes of it)",
                         (unsigned long long)l->rd.index,
                         (unsigned long long)l->rd.offset,
                         evbuffer_get_length(in));
                link_fail(l, -COLO_ESTREAM_TRUNCATED, why);
            } else
                link_fail(l, -COLO_EPEER_CLOSED, "peer closed the link");
        }
    } else if (what & BEV_EVENT_ERROR) {
        int err = EVUTIL_SOCKET_ERROR();

        link_fail(l, err ? -err : -EIO, "socket error");
    }
    leave(l);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct xprt_link *l = arg;

    (void)fd;
    (void)what;
    enter(l);
    if (l->state == XPRT_LINK_CONNECTING)
        link_fail(l, -ETIMEDOUT, "connect timed out");
    else if (l->state == XPRT_LINK_HANDSHAKE)
        link_fail(l, -ETIMEDOUT, "handshake timed out");
    leave(l);
}

static void send_heartbeat(struct xprt_link *l)
{
    uint8_t b[8];

    colo_put_le64(b, colo_now_ns());
    if (xprt_rec_write_evbuf(bufferevent_get_output(l->bev),
                             XPRT_COLO_HEARTBEAT, b, sizeof(b)) == 0) {
        l->last_tx_ns = colo_now_ns();
        l->st.heartbeats_out++;
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct xprt_link *l = arg;
    uint64_t now = colo_now_ns();
    uint64_t iv = (uint64_t)l->hb_ms * 1000000u;

    (void)fd;
    (void)what;
    if (l->state != XPRT_LINK_UP)
        return;
    enter(l);
    if (now - l->last_tx_ns >= iv)
        send_heartbeat(l);
    if (!l->rx_paused && now - l->last_rx_ns >= iv * l->hb_misses) {
        char why[96];

        snprintf(why, sizeof(why), "no heartbeat for %llu ms",
                 (unsigned long long)((now - l->last_rx_ns) / 1000000u));
        link_fail(l, -COLO_EPEER_GONE, why);
    }
    leave(l);
}

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct xprt_link *l = arg;

    (void)fd;
    (void)what;
    enter(l);
    if (l->pending_rc) {
        int rc = l->pending_rc;

        l->pending_rc = 0;
        link_fail(l, rc, "deferred failure");
    } else if (l->state == XPRT_LINK_DETACHING &&
               xprt_link_output_len(l) == 0) {
        detach_finish(l);
    } else if (l->state == XPRT_LINK_UP && l->bev && !l->bulk_need) {
        /* After attach with a prefix, or resume: process buffered input. */
        if (!l->rx_paused)
            tls_take_pending(l);
        rx_process(l);
    }
    leave(l);
}

/* ---------------------------------------------------------------------- */
/* Options                                                                  */

int xprt_link_set_rx_format(struct xprt_link *l, enum xprt_format fmt)
{
    return xprt_reader_set_format(&l->rd, fmt);
}

int xprt_link_libxc_consumed(struct xprt_link *l, bool at_checkpoint)
{
    return xprt_reader_libxc_consumed(&l->rd, at_checkpoint);
}

void xprt_link_set_exact_reads(struct xprt_link *l, bool on)
{
    l->exact = on;
    if (l->bev)
        set_read_limit(l, XPRT_REC_HDR_SIZE);
}

void xprt_link_rx_pause(struct xprt_link *l, bool pause)
{
    if (l->rx_paused == pause)
        return;
    l->rx_paused = pause;
    if (!l->bev || l->state != XPRT_LINK_UP)
        return;
    if (pause) {
        bufferevent_disable(l->bev, EV_READ);
        if (l->bulk_ev)
            event_del(l->bulk_ev);
    } else {
        l->last_rx_ns = colo_now_ns();
        if (l->bulk_need)
            event_add(l->bulk_ev, NULL);
        else
            bufferevent_enable(l->bev, EV_READ);
        event_active(l->deferred, 0, 0);
    }
}

void xprt_link_set_heartbeat(struct xprt_link *l, uint32_t interval_ms,
                             uint32_t misses)
{
    struct timeval tv;

    l->hb_ms = interval_ms ? interval_ms : 1000;
    l->hb_misses = misses ? misses : 3;
    event_del(l->tick);
    if (l->state == XPRT_LINK_UP && l->hb_ms != UINT32_MAX) {
        tv = colo_ms_to_tv(l->hb_ms / 4 ? l->hb_ms / 4 : 1);
        event_add(l->tick, &tv);
    }
}

enum xprt_link_state xprt_link_state(const struct xprt_link *l)
{
    return l->state;
}

const char *xprt_link_name(const struct xprt_link *l)
{
    return l->name;
}

const char *xprt_link_peer(const struct xprt_link *l)
{
    return l->peer;
}

const char *xprt_link_why(const struct xprt_link *l)
{
    return l->why;
}

void xprt_link_get_stats(const struct xprt_link *l, struct xprt_link_stats *ret)
{
    *ret = l->st;
}

void xprt_link_set_cbs(struct xprt_link *l, const struct xprt_link_cbs *cbs,
                       void *arg)
{
    l->cbs = *cbs;
    l->arg = arg;
}

/* ---------------------------------------------------------------------- */
/* Detach / attach                                                          */

int xprt_link_detach_start(struct xprt_link *l, xprt_detach_cb cb, void *arg)
{
    if (l->state != XPRT_LINK_UP)
        return -ENOTCONN;
    l->state = XPRT_LINK_DETACHING;
    l->detach_cb = cb;
    l->detach_arg = arg;
    event_del(l->tick);
    bufferevent_disable(l->bev, EV_READ);
    if (l->bulk_ev)
        event_del(l->bulk_ev);
    l->bulk_need = 0; /* l->bulk keeps the partial item: leftover */
    bufferevent_setwatermark(l->bev, EV_WRITE, 0, 0);
    /* Completion always comes from the loop, never from here. */
    event_active(l->deferred, 0, 0);
    return 0;
}

static void detach_finish(struct xprt_link *l)
{
    struct colo_buf left;
    struct evbuffer *in = bufferevent_get_input(l->bev);
    size_t n = evbuffer_get_length(in);
    xprt_detach_cb cb = l->detach_cb;

    colo_buf_init(&left, 0);
    if (l->bulk.len) {
        /* A big item was half read directly: it comes first. */
        colo_buf_append(&left, l->bulk.data, l->bulk.len);
        colo_buf_reset(&l->bulk);
    }
    if (n && colo_buf_reserve(&left, n) == 0) {
        evbuffer_remove(in, left.data + left.len, n);
        left.len += n;
    }
    bufferevent_disable(l->bev, EV_READ | EV_WRITE);
    bufferevent_free(l->bev);
    l->bev = NULL;
    l->state = XPRT_LINK_DETACHED;
    l->detach_cb = NULL;
    if (l->ssl) {
        /* The helper gets one end of a socketpair; a thread pumps the
         * other through the TLS session, byte for byte. */
        int sp[2];
        int rc = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp);

        if (rc < 0)
            rc = -errno;
        else if ((rc = xprt_tls_pump_start(l->ssl, l->fd, sp[1], &l->pump)) <
                 0) {
            close(sp[0]);
            close(sp[1]);
        }
        if (rc < 0) {
            colo_buf_dispose(&left);
            /* Reported through cb, as a failed drain would be. */
            l->state = XPRT_LINK_DETACHING;
            l->detach_cb = cb;
            link_fail(l, rc, "cannot start the TLS pump");
            return;
        }
        l->lend_fd = sp[0];
        l->pump_fd = sp[1];
        if (cb)
            cb(l, 0, l->lend_fd, &left, l->detach_arg);
        colo_buf_dispose(&left);
        return;
    }
    colo_fd_set_nonblock(l->fd, 0);
    if (cb)
        cb(l, 0, l->fd, &left, l->detach_arg);
    colo_buf_dispose(&left);
}

/* TLS: stop the pump; pre gets, in stream order, the bytes the helper did
 * not read (still in its end of the socketpair) and those the pump had
 * decrypted but not passed on. */
static int pump_end(struct xprt_link *l, struct colo_buf *pre)
{
    struct colo_buf undelivered;
    uint8_t tmp[65536];
    ssize_t n;
    int rc;

    colo_buf_init(&undelivered, 0);
    rc = xprt_tls_pump_stop(l->pump, &undelivered);
    l->pump = NULL;
    while ((n = recv(l->lend_fd, tmp, sizeof(tmp), MSG_DONTWAIT)) > 0)
        if (colo_buf_append(pre, tmp, (size_t)n) < 0)
            rc = -ENOMEM;
    if (undelivered.len &&
        colo_buf_append(pre, undelivered.data, undelivered.len) < 0)
        rc = -ENOMEM;
    colo_buf_dispose(&undelivered);
    colo_close(&l->lend_fd);
    colo_close(&l->pump_fd);
    return rc;
}

int xprt_link_attach(struct xprt_link *l, const void *prefix, size_t len)
{
    struct colo_buf pre;
    struct timeval tv;
    int rc;

    if (l->state != XPRT_LINK_DETACHED)
        return -EINVAL;
    colo_buf_init(&pre, 0);
    if (len && colo_buf_append(&pre, prefix, len) < 0)
        return -ENOMEM;
    if (l->pump) {
        rc = pump_end(l, &pre);
        if (rc < 0) {
            colo_buf_dispose(&pre);
            return rc;
        }
    }
    colo_fd_set_nonblock(l->fd, 1);
    rc = bev_setup(l);
    if (rc < 0) {
        colo_buf_dispose(&pre);
        return rc;
    }
    len = pre.len;
    if (len && evbuffer_add(bufferevent_get_input(l->bev), pre.data, len)) {
        colo_buf_dispose(&pre);
        bufferevent_free(l->bev);
        l->bev = NULL;
        return -ENOMEM;
    }
    colo_buf_dispose(&pre);
    l->state = XPRT_LINK_UP;
    l->last_rx_ns = l->last_tx_ns = colo_now_ns();
    bufferevent_enable(l->bev, l->rx_paused ? EV_WRITE : EV_READ | EV_WRITE);
    if (l->exact)
        set_read_limit(l, XPRT_REC_HDR_SIZE);
    if (l->hb_ms != UINT32_MAX) {
        tv = colo_ms_to_tv(l->hb_ms / 4 ? l->hb_ms / 4 : 1);
        event_add(l->tick, &tv);
    }
    if (len || l->ssl)
        event_active(l->deferred, 0, 0);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Failure and freeing                                                      */

static void stop_io(struct xprt_link *l)
{
    xprt_tls_pump_free(l->pump); /* ends the thread before fds close */
    l->pump = NULL;
    colo_close(&l->lend_fd);
    colo_close(&l->pump_fd);
    if (l->bulk_ev)
        event_del(l->bulk_ev);
    if (l->bev) {
        /* Delete the socket events now, not at deferred finalization,
         * which would run after the close below. */
        bufferevent_disable(l->bev, EV_READ | EV_WRITE);
        bufferevent_free(l->bev);
        l->bev = NULL;
    }
    if (l->deadline)
        evtimer_del(l->deadline);
    if (l->tick)
        event_del(l->tick);
    if (l->ssl) {
        SSL_free(l->ssl);
        l->ssl = NULL;
    }
    colo_close(&l->fd);
}

static void link_fail(struct xprt_link *l, int rc, const char *why)
{
    enum xprt_link_state was = l->state;
    xprt_detach_cb dcb = l->detach_cb;

    if (l->state == XPRT_LINK_CLOSED || l->free_pending)
        return;
    stop_io(l);
    l->state = XPRT_LINK_CLOSED;
    snprintf(l->why, sizeof(l->why), "%s", why);
    colo_debug("link %s: %s (%s): %s", l->name, why, l->peer,
               colo_strerror(rc));
    if (l->ls) {
        /* Still in the listener's handshake: report and drop it. */
        struct xprt_listener *ls = l->ls;
        struct xprt_link **pp;

        for (pp = &ls->hs_links; *pp; pp = &(*pp)->ls_next)
            if (*pp == l) {
                *pp = l->ls_next;
                break;
            }
        l->ls = NULL;
        l->free_pending = true; /* freed when the callbacks unwind */
        ls->depth++;
        ls->cb(ls, NULL, rc, ls->arg);
        if (--ls->depth == 0 && ls->free_pending)
            listener_really_free(ls);
        return;
    }
    if (was == XPRT_LINK_DETACHING && dcb) {
        l->detach_cb = NULL;
        dcb(l, rc, -1, NULL, l->detach_arg);
        return;
    }
    if (l->cbs.error)
        l->cbs.error(l, rc, l->arg); /* last thing we do */
}

static void link_really_free(struct xprt_link *l)
{
    stop_io(l);
    if (l->deadline)
        event_free(l->deadline);
    if (l->tick)
        event_free(l->tick);
    if (l->deferred)
        event_free(l->deferred);
    if (l->bulk_ev)
        event_free(l->bulk_ev);
    colo_buf_dispose(&l->bulk);
    if (l->pool)
        pool_unref(l->pool); /* blocks still queued keep it alive */
    if (l->ai_list)
        freeaddrinfo(l->ai_list);
    xprt_reader_dispose(&l->hs_rd);
    xprt_reader_dispose(&l->rd);
    free_key(&l->key, l->cfg.key_len);
    free(l->name);
    free(l->creds);
    SSL_CTX_free(l->tls_ctx);
    OPENSSL_cleanse(l->psk, sizeof(l->psk));
    OPENSSL_cleanse(l->my_nonce, sizeof(l->my_nonce));
    free(l);
}

void xprt_link_free(struct xprt_link *l)
{
    if (!l)
        return;
    if (l->ls) {
        struct xprt_link **pp;

        for (pp = &l->ls->hs_links; *pp; pp = &(*pp)->ls_next)
            if (*pp == l) {
                *pp = l->ls_next;
                break;
            }
        l->ls = NULL;
    }
    if (l->depth > 0) {
        /* Inside our own callback: stop everything now, free on unwind. */
        stop_io(l);
        l->state = XPRT_LINK_CLOSED;
        l->free_pending = true;
        return;
    }
    link_really_free(l);
}

/* ---------------------------------------------------------------------- */
/* Listener                                                                 */

static void on_accept(struct evconnlistener *evl, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg)
{
    struct xprt_listener *ls = arg;
    struct xprt_link *l = NULL;
    int rc;

    (void)evl;
    (void)sa;
    (void)salen;
    rc = xprt_link_new_from_fd(ls->base, fd, false, &ls->cfg, NULL, NULL, &l);
    if (rc < 0) {
        colo_warn("listener %s: cannot take a connection: %s", ls->name,
                  colo_strerror(rc));
        return;
    }
    l->ls = ls;
    l->ls_next = ls->hs_links;
    ls->hs_links = l;
}

int xprt_listener_new(struct event_base *base, const char *host, uint16_t port,
                      const struct xprt_link_cfg *cfg, xprt_accept_cb cb,
                      void *arg, struct xprt_listener **ret)
{
    struct xprt_listener *ls;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    unsigned flags =
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;
    int rc;

    *ret = NULL;
    rc = cfg_check(cfg);
    if (rc < 0)
        return rc;
    ls = calloc(1, sizeof(*ls));
    if (!ls)
        return -ENOMEM;
    ls->base = base;
    ls->cb = cb;
    ls->arg = arg;
    rc = cfg_copy(&ls->cfg, &ls->key, &ls->name, &ls->creds, cfg);
    if (rc < 0)
        goto fail;
    if (!host || !*host) {
        struct sockaddr_in6 s6 = {.sin6_family = AF_INET6,
                                  .sin6_port = htons(port),
                                  .sin6_addr = IN6ADDR_ANY_INIT};
        ls->evl = evconnlistener_new_bind(base, on_accept, ls, flags, 64,
                                          (struct sockaddr *)&s6, sizeof(s6));
        if (!ls->evl) {
            struct sockaddr_in s4 = {.sin_family = AF_INET,
                                     .sin_port = htons(port)};
            ls->evl =
                evconnlistener_new_bind(base, on_accept, ls, flags, 64,
                                        (struct sockaddr *)&s4, sizeof(s4));
        }
    } else {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_PASSIVE};
        struct addrinfo *ai = NULL;
        char portstr[8];

        snprintf(portstr, sizeof(portstr), "%u", port);
        if (getaddrinfo(host, portstr, &hints, &ai) != 0) {
            rc = -EADDRNOTAVAIL;
            goto fail;
        }
        ls->evl = evconnlistener_new_bind(base, on_accept, ls, flags, 64,
                                          ai->ai_addr, (int)ai->ai_addrlen);
        freeaddrinfo(ai);
    }
    if (!ls->evl) {
        rc = errno ? -errno : -EADDRINUSE;
        goto fail;
    }
    if (getsockname(evconnlistener_get_fd(ls->evl), (struct sockaddr *)&ss,
                    &sl) == 0)
        ls->port = ntohs(ss.ss_family == AF_INET6
                             ? ((struct sockaddr_in6 *)&ss)->sin6_port
                             : ((struct sockaddr_in *)&ss)->sin_port);
    *ret = ls;
    return 0;
fail:
    listener_really_free(ls);
    return rc;
}

uint16_t xprt_listener_port(const struct xprt_listener *ls)
{
    return ls->port;
}

void xprt_listener_pause(struct xprt_listener *ls, bool pause)
{
    if (pause)
        evconnlistener_disable(ls->evl);
    else
        evconnlistener_enable(ls->evl);
}

static void listener_really_free(struct xprt_listener *ls)
{
    while (ls->hs_links) {
        struct xprt_link *l = ls->hs_links;

        ls->hs_links = l->ls_next;
        l->ls = NULL;
        xprt_link_free(l);
    }
    if (ls->evl)
        evconnlistener_free(ls->evl);
    free_key(&ls->key, ls->cfg.key_len);
    free(ls->name);
    free(ls->creds);
    free(ls);
}

void xprt_listener_free(struct xprt_listener *ls)
{
    if (!ls)
        return;
    if (ls->depth > 0) {
        if (ls->evl) {
            evconnlistener_free(ls->evl);
            ls->evl = NULL;
        }
        ls->free_pending = true;
        return;
    }
    listener_really_free(ls);
}

/* ---------------------------------------------------------------------- */
/* Key files                                                                */

int xprt_key_read_file(const char *path, uint8_t **ret_key, size_t *ret_len,
                       char *why, size_t whysz)
{
    char *buf = NULL;
    size_t len = 0;
    int rc;

    *ret_key = NULL;
    *ret_len = 0;
    rc = xprt_secret_file_check(path, why, whysz);
    if (rc < 0)
        return rc;
    rc = colo_read_file(path, XPRT_KEY_MAX + 2, &buf, &len);
    if (rc < 0) {
        snprintf(why, whysz, "%s: %s", path,
                 rc == -EFBIG ? "longer than 1024 bytes" : colo_strerror(rc));
        return rc == -EFBIG ? -COLO_ECONFIG : rc;
    }
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    if (len < 16 || len > XPRT_KEY_MAX) {
        snprintf(why, whysz, "%s: a key must have 16..%u bytes (it has %zu)",
                 path, XPRT_KEY_MAX, len);
        OPENSSL_cleanse(buf, len);
        free(buf);
        return -COLO_ECONFIG;
    }
    *ret_key = (uint8_t *)buf;
    *ret_len = len;
    return 0;
}
