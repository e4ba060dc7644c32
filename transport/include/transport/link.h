/*
 * Links: one TCP connection between two colo processes, encrypted and
 * integrity-protected with TLS 1.3 unless both sides run --insecure,
 * carrying records (record.h) on a libevent bufferevent.
 *
 * States (enum xprt_link_state) and what each holds:
 *   CONNECTING  socket + connect timer (connect side only)
 *   HANDSHAKE   bufferevent, handshake timer; only the fixed-size handshake
 *               records (<= 128 bytes each) are read, then (TLS) the TLS
 *               handshake runs on an OpenSSL bufferevent; nothing else the
 *               peer sends is parsed
 *   UP          bufferevent, reader, heartbeat timers; records flow
 *   DETACHING   output draining; reading and heartbeats stopped
 *   DETACHED    fd lent to the caller (e.g. a libxenguest helper): the
 *               socket itself on a plain link; on a TLS link one end of a
 *               socketpair, whose other end a pump thread carries through
 *               the TLS session byte for byte
 *   CLOSED      terminal: nothing but the object; only _free is allowed
 *
 * Transitions (public functions):
 *   xprt_link_connect:  (new) -> CONNECTING -> HANDSHAKE -> UP (cbs.up)
 *                       any failure -> CLOSED (cbs.error)
 *   xprt_listener_new:  accepted fds -> HANDSHAKE -> UP, handed over by
 *                       accept_cb (the link's callbacks are set there)
 *   xprt_link_send*:    UP -> UP (queues a record; never fails for lack of
 *                       room: check xprt_link_may_write first)
 *   xprt_link_detach_start: UP -> DETACHING -> DETACHED (detach_cb)
 *   xprt_link_attach:   DETACHED -> UP
 *   xprt_link_close:    any -> CLOSED (no callback)
 *   peer EOF / missed heartbeats / bad record / socket error:
 *                       any live state -> CLOSED (cbs.error, once)
 *
 * Callback contract: callbacks run from the event loop, never from inside a
 * public function. cbs.up fires at most once; cbs.error fires exactly once
 * per link that reached CONNECTING or HANDSHAKE, unless the owner closed or
 * freed it first; nothing fires after cbs.error. The owner may call
 * xprt_link_free() inside any callback (the link defers its own cleanup).
 * Error codes given to cbs.error:
 *   -COLO_EPEER_CLOSED  the peer closed the connection (EOF between records)
 *   -COLO_EPEER_GONE    nothing received for heartbeat_ms * heartbeat_misses
 *   -COLO_ESTREAM_*     the peer sent a bad record (TRUNCATED: EOF inside a
 *                       record; CORRUPT; TOO_BIG: over max_record);
 *                       CORRUPT also when a TLS record fails its integrity
 *                       check (altered, dropped or replayed in transit)
 *   -COLO_EAUTH         the handshake failed: wrong key, certificate
 *                       refused, protection mismatch (TLS vs --insecure,
 *                       PSK vs x509), a peer without TLS; either side's
 *                       verdict, named in xprt_link_why()
 *   -COLO_ECONFIG       our own TLS credentials could not be loaded
 *   -ETIMEDOUT          connect or handshake timed out
 *   -ECONNREFUSED, -EHOSTUNREACH, ... (-errno) socket errors
 *
 * Protection (docs/protocol.md §2.2): the connecting side sends a link
 * HELLO naming the protection it requires (plain, TLS-PSK, TLS-x509), the
 * accepting side answers with its own; they must be equal, or both sides
 * fail with -COLO_EAUTH and say what the other offered (no negotiation, no
 * downgrade). Then TLS 1.3: with an external PSK derived from the key
 * (HKDF-SHA256), or with x509 certificates from cfg.tls_creds (QEMU's
 * layout), the peer's certificate verified against ca-cert.pem. The TLS
 * handshake authenticates both sides; every record after it is encrypted
 * and authenticated (AES-128-GCM). Plain links only if both sides set
 * cfg.plain.
 *
 * The process must ignore SIGPIPE (colo's main does): libevent writes with
 * writev(), which raises it on a reset connection.
 *
 * Heartbeats: when UP and nothing was sent for heartbeat_ms, the link sends
 * a HEARTBEAT record; any bytes received reset the peer's silence timer.
 * HEARTBEAT records are never delivered to cbs.record. While DETACHED,
 * neither timer runs.
 */
#ifndef COLO_TRANSPORT_LINK_H
#define COLO_TRANSPORT_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/buf.h"
#include "transport/record.h"

struct event_base;
struct xprt_link;
struct xprt_listener;

enum xprt_link_state {
    XPRT_LINK_CONNECTING = 1,
    XPRT_LINK_HANDSHAKE,
    XPRT_LINK_UP,
    XPRT_LINK_DETACHING,
    XPRT_LINK_DETACHED,
    XPRT_LINK_CLOSED,
};

#define XPRT_KEY_MAX    1024u
#define XPRT_NONCE_SIZE 32u

struct xprt_link_cfg {
    /* Shared key (copied): TLS with a PSK derived from it. Required
     * unless plain or tls_creds is set. */
    const uint8_t *key;
    size_t key_len; /* 16 .. XPRT_KEY_MAX bytes */
    /* A directory in QEMU's/libvirt's layout (ca-cert.pem, server-cert.pem,
     * server-key.pem, client-cert.pem, client-key.pem): TLS with x509
     * certificates instead of the key. Copied. */
    const char *tls_creds;
    bool plain;                    /* explicitly no TLS, no authentication */
    uint32_t connect_timeout_ms;   /* 0: 10000 */
    uint32_t handshake_timeout_ms; /* 0: 5000 */
    uint32_t heartbeat_ms;         /* 0: 1000; UINT32_MAX: heartbeats off */
    uint32_t heartbeat_misses;     /* 0: 3 */
    uint32_t max_record;           /* 0: XPRT_REC_MAX_DEFAULT */
    size_t wm_high;                /* 0: 8 MiB of queued output */
    size_t wm_low;                 /* 0: wm_high / 4 */
    const char *name;              /* for log lines ("to-secondary"); copied */
};

struct xprt_link_cbs {
    /* Handshake done: records may be sent and will be received. */
    void (*up)(struct xprt_link *l, void *arg);
    /* One received item (a record, or a stream header when the rx format
     * has one). it->body is valid only during the call. */
    void (*record)(struct xprt_link *l, const struct xprt_item *it, void *arg);
    /* Output drained to wm_low after it had reached wm_high. */
    void (*writable)(struct xprt_link *l, void *arg);
    /* Terminal; see the error codes above. */
    void (*error)(struct xprt_link *l, int rc, void *arg);
};

/* Fill cfg with defaults (all zero = defaults; key must still be set). */
void xprt_link_cfg_init(struct xprt_link_cfg *cfg);

/* Check cfg as a link would use it, for a job's start: loads the TLS
 * credentials (both roles). -COLO_ECONFIG with why naming the file and the
 * problem (missing, unreadable, group/other-readable key, key not matching
 * its certificate). */
int xprt_link_cfg_check(const struct xprt_link_cfg *cfg, char *why,
                        size_t whysz);

/*
 * Connect to host:port (numeric IPv4/IPv6 or a host name, resolved with
 * getaddrinfo(); names other than numeric ones and "localhost" block the
 * loop while resolving — documented, acceptable at job start). Tries each
 * address in turn until one connects or the timeout expires. Returns the
 * link (in *ret) or a synchronous error (bad cfg, -EINVAL; resolution
 * failure, -EHOSTUNREACH); after success, the outcome comes through cbs.
 */
int xprt_link_connect(struct event_base *base, const char *host, uint16_t port,
                      const struct xprt_link_cfg *cfg,
                      const struct xprt_link_cbs *cbs, void *arg,
                      struct xprt_link **ret);

/* Wrap an already connected socket (e.g. from socketpair() in tests, or an
 * inherited fd): HANDSHAKE at once. Consumes fd even on failure. */
int xprt_link_new_from_fd(struct event_base *base, int fd, bool initiator,
                          const struct xprt_link_cfg *cfg,
                          const struct xprt_link_cbs *cbs, void *arg,
                          struct xprt_link **ret);

/* Close and free; accepts NULL; safe inside the link's own callbacks. No
 * callback fires afterwards. Queued output not yet written is dropped. */
void xprt_link_free(struct xprt_link *l);

enum xprt_link_state xprt_link_state(const struct xprt_link *l);
const char *xprt_link_name(const struct xprt_link *l);
/* "1.2.3.4:5" / "[::1]:5" of the peer; empty until connected. */
const char *xprt_link_peer(const struct xprt_link *l);
/* After cbs.error: one line saying where and why ("peer closed the link
 * inside record #12 at stream offset 4096 (10 bytes of it)", "no heartbeat
 * for 3012 ms", the reader's "at offset X, record #i: ..."). The link does
 * not log errors above debug level: the owner logs once, with context. */
const char *xprt_link_why(const struct xprt_link *l);

/*
 * Queue one record (header, body = iov concatenation, padding) for
 * sending. UP only (-ENOTCONN otherwise). The bytes are copied: iov may be
 * reused when the call returns. Fails only for a bad state, -EINVAL (a
 * link-internal type), -COLO_ESTREAM_TOO_BIG (over max_record) or -ENOMEM.
 * Backpressure is the caller's part: stop producing when
 * xprt_link_may_write() is false and continue on cbs.writable.
 */
int xprt_link_sendv(struct xprt_link *l, uint32_t type, const struct iovec *iov,
                    int n);
int xprt_link_send(struct xprt_link *l, uint32_t type, const void *body,
                   size_t len);
/*
 * Like xprt_link_sendv, but the body is borrowed instead of copied: the
 * memory iov points to must stay valid and unchanged until cb(arg) runs.
 * cb runs exactly once, from the event loop (never inside this call): when
 * every byte has gone to the kernel, or when the link dropped it (closed,
 * freed; then possibly during event_base_free). Saves one copy of bulk data
 * (e.g. a checkpoint's page buffer). On failure (rc < 0) cb never runs and
 * the memory is the caller's again.
 */
typedef void (*xprt_sent_cb)(void *arg);
int xprt_link_sendv_borrowed(struct xprt_link *l, uint32_t type,
                             const struct iovec *iov, int n, xprt_sent_cb cb,
                             void *arg);

/* Queue raw bytes that are already framed (e.g. a stream header or a
 * record built with xprt_rec_write_buf()). */
int xprt_link_send_raw(struct xprt_link *l, const void *bytes, size_t len);

/* True while queued output is below wm_high. When it returns false, the
 * link arms cbs.writable. */
bool xprt_link_may_write(struct xprt_link *l);
size_t xprt_link_output_len(const struct xprt_link *l);

/* How received bytes are parsed (record.h). Default XPRT_FMT_RECORDS.
 * Between items only (-EBUSY otherwise). */
int xprt_link_set_rx_format(struct xprt_link *l, enum xprt_format fmt);

/* The helper read the libxc segment itself (see
 * xprt_reader_libxc_consumed); call before xprt_link_attach. */
int xprt_link_libxc_consumed(struct xprt_link *l, bool at_checkpoint);

/*
 * Exact reads: read from the socket only the bytes of the next item (no
 * read-ahead), so that after a record the rest of the stream is still in
 * the kernel and the fd can be handed to a helper that reads it itself.
 * Costs two reads per record; off by default.
 */
void xprt_link_set_exact_reads(struct xprt_link *l, bool on);

/* Stop / resume delivering records (reading stops; heartbeat rx check also
 * pauses). For flow control on the receive side. */
void xprt_link_rx_pause(struct xprt_link *l, bool pause);

/* Heartbeat parameters may change while UP (e.g. longer during a long
 * helper phase). */
void xprt_link_set_heartbeat(struct xprt_link *l, uint32_t interval_ms,
                             uint32_t misses);

/*
 * Lend the raw fd to someone else (a helper process writing or reading a
 * libxc stream itself). UP -> DETACHING: reading and heartbeats stop at
 * once; when all queued output is written, DETACHED and detach_cb(l, 0, fd,
 * leftover) runs from the loop. fd stays owned by the link (the caller may
 * dup it for a helper) and is in blocking mode while detached. leftover
 * holds bytes already read from the socket but not yet delivered (empty
 * with exact reads); the caller owns them (they belong before whatever the
 * helper reads). On a socket error while draining, detach_cb gets rc < 0
 * and the link is CLOSED (cbs.error does not fire then).
 */
typedef void (*xprt_detach_cb)(struct xprt_link *l, int rc, int fd,
                               struct colo_buf *leftover, void *arg);
int xprt_link_detach_start(struct xprt_link *l, xprt_detach_cb cb, void *arg);

/*
 * DETACHED -> UP: a new bufferevent on the same fd (non-blocking again);
 * prefix (may be NULL/0) is treated as received before anything else in the
 * socket (bytes a helper read past its own stream). Heartbeat timers
 * restart. The rx format and reader position are kept.
 */
int xprt_link_attach(struct xprt_link *l, const void *prefix, size_t len);

/* Counters for status output and tests. */
struct xprt_link_stats {
    uint64_t bytes_out, bytes_in;
    uint64_t records_out, records_in;
    uint64_t heartbeats_out, heartbeats_in;
};
void xprt_link_get_stats(const struct xprt_link *l,
                         struct xprt_link_stats *ret);

/* ---------------------------------------------------------------------- */
/* Listener                                                                 */

/*
 * accept_cb: a new link finished its handshake (state UP) and is now owned
 * by the callee, who sets its callbacks with xprt_link_set_cbs(); or rc < 0
 * and link NULL: a peer was rejected (-COLO_EAUTH) or failed its handshake
 * (-ETIMEDOUT, -COLO_EPEER_CLOSED...), for logging; the listener goes on.
 */
typedef void (*xprt_accept_cb)(struct xprt_listener *ls, struct xprt_link *l,
                               int rc, void *arg);

/*
 * Listen on host:port (host NULL or "" = all addresses, IPv6 dual-stack;
 * port 0 = ephemeral: see xprt_listener_port). Every accepted connection
 * gets cfg (copied) and runs the handshake.
 */
int xprt_listener_new(struct event_base *base, const char *host, uint16_t port,
                      const struct xprt_link_cfg *cfg, xprt_accept_cb cb,
                      void *arg, struct xprt_listener **ret);
void xprt_listener_free(struct xprt_listener *ls); /* NULL ok; callback
                                                      safe */
uint16_t xprt_listener_port(const struct xprt_listener *ls);
/* Stop accepting new connections (links in handshake continue). */
void xprt_listener_pause(struct xprt_listener *ls, bool pause);

/* Replace the callbacks (after accept). */
void xprt_link_set_cbs(struct xprt_link *l, const struct xprt_link_cbs *cbs,
                       void *arg);

/* Read a key file (raw bytes, 16..XPRT_KEY_MAX; a trailing newline is
 * stripped), for --key-file. A file that group or others may access is
 * refused (-COLO_ECONFIG), as ssh refuses such a private key; why then
 * names the file and the fix ("chmod 600 FILE"). The caller frees *ret_key
 * (explicit_bzero first). */
int xprt_key_read_file(const char *path, uint8_t **ret_key, size_t *ret_len,
                       char *why, size_t whysz);

#endif
