/*
 * A minimal NBD server connection (the protocol only: bytes in, bytes out),
 * for colo's disk write tee: QEMU's quorum drive gets an `nbd` child that
 * connects to colo, and every guest write reaches colo through it
 * (docs/protocol.md "Disk replication").
 *
 * Implements the fixed newstyle handshake
 * (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md) and
 * the commands QEMU 7.2's client sends, with simple replies only:
 *   handshake: server greeting (NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE |
 *     NO_ZEROES), client flags (FIXED_NEWSTYLE required, NO_ZEROES
 *     honoured, unknown bits refused), then options:
 *     EXPORT_NAME, ABORT, LIST, INFO, GO (NBD_INFO_EXPORT, and
 *     NBD_INFO_BLOCK_SIZE when asked: min 1, preferred 4096, max
 *     XPRT_NBD_MAX_PAYLOAD); every other option (STRUCTURED_REPLY,
 *     STARTTLS, the meta-context options, unknown ones) is answered
 *     NBD_REP_ERR_UNSUP, so QEMU falls back to simple replies.
 *   transmission: READ, WRITE (FUA), FLUSH, WRITE_ZEROES (FUA, NO_HOLE),
 *     DISC; anything else gets EINVAL. Export flags: HAS_FLAGS,
 *     SEND_FLUSH, SEND_FUA, SEND_WRITE_ZEROES (+ READ_ONLY).
 * Caps: an option's data <= XPRT_NBD_MAX_OPTION (longer: the connection
 *   is refused, -COLO_ESTREAM_TOO_BIG); a READ or WRITE payload <=
 *   XPRT_NBD_MAX_PAYLOAD (a WRITE over it cannot be skipped safely: the
 *   connection ends with -COLO_ESTREAM_TOO_BIG; a READ over it gets
 *   EINVAL); at most XPRT_NBD_MAX_EXPORTS exports, names <= 4096 octets.
 *   Requests past the end of the export get ENOSPC (WRITE, WRITE_ZEROES)
 *   or EINVAL (READ), zero-length ones EINVAL; a WRITE's data is always
 *   consumed first.
 *
 * States: Greeting sent (waiting for the client's 4 flag octets) ->
 *   Options -> Transmission -> Closed. xprt_nbd_conn_feed() returns 0
 *   (more, please), 1 (closed cleanly: ABORT, DISC, an unknown
 *   EXPORT_NAME) or < 0 (protocol error: bad magic, flags, a cap). After
 *   1 or < 0 the caller flushes the output and closes the socket.
 *
 * Callbacks run from inside feed(), one per command, in order; they return
 * 0 or -errno, which becomes the reply's NBD error (EPERM, EIO, ENOMEM,
 * EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN; anything else EIO).
 * Replies are appended to the output buffer given at creation.
 */
#ifndef COLO_TRANSPORT_NBD_H
#define COLO_TRANSPORT_NBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define XPRT_NBD_MAX_EXPORTS 64u
#define XPRT_NBD_MAX_NAME    4096u
#define XPRT_NBD_MAX_OPTION  (XPRT_NBD_MAX_NAME + 4u + 2u + 2u * 64u)
#define XPRT_NBD_MAX_PAYLOAD (32u << 20) /* QEMU's NBD_MAX_BUFFER_SIZE */

/* Wire constants (proto.md). */
#define XPRT_NBD_CMD_READ         0u
#define XPRT_NBD_CMD_WRITE        1u
#define XPRT_NBD_CMD_DISC         2u
#define XPRT_NBD_CMD_FLUSH        3u
#define XPRT_NBD_CMD_TRIM         4u
#define XPRT_NBD_CMD_WRITE_ZEROES 6u
#define XPRT_NBD_CMD_FLAG_FUA     (1u << 0)
#define XPRT_NBD_CMD_FLAG_NO_HOLE (1u << 1)

struct xprt_nbd_export {
    const char *name; /* borrowed for the connection's life */
    uint64_t size;
    bool read_only;
};

struct xprt_nbd_cbs {
    int (*write)(void *arg, unsigned export_idx, uint64_t offset,
                 const uint8_t *data, uint32_t len, uint16_t flags);
    int (*write_zeroes)(void *arg, unsigned export_idx, uint64_t offset,
                        uint32_t len, uint16_t flags);
    int (*flush)(void *arg, unsigned export_idx);
    /* NULL: every READ gets EIO. */
    int (*read)(void *arg, unsigned export_idx, uint64_t offset, uint8_t *out,
                uint32_t len);
};

enum xprt_nbd_phase {
    XPRT_NBD_GREETING = 0,
    XPRT_NBD_OPTIONS,
    XPRT_NBD_TRANSMISSION,
    XPRT_NBD_CLOSED,
};

struct xprt_nbd_conn;

/* The greeting is appended to out at once. exports and cbs are copied
 * (the names are borrowed). out is borrowed and must outlive c. */
int xprt_nbd_conn_new(const struct xprt_nbd_export *exports, size_t n,
                      const struct xprt_nbd_cbs *cbs, void *arg,
                      struct colo_buf *out, struct xprt_nbd_conn **ret);
void xprt_nbd_conn_free(struct xprt_nbd_conn *c); /* accepts NULL */
int xprt_nbd_conn_feed(struct xprt_nbd_conn *c, const uint8_t *data,
                       size_t len);
enum xprt_nbd_phase xprt_nbd_conn_phase(const struct xprt_nbd_conn *c);
/* The export chosen by GO / EXPORT_NAME (-1 before). */
int xprt_nbd_conn_export(const struct xprt_nbd_conn *c);

#endif
