/*
 * colo's NBD server connection (transport/nbd.h), driven byte by byte by a
 * scripted client: the fixed newstyle handshake, the commands QEMU sends,
 * and every refusal (caps, bad magic, bad flags, out of bounds). QEMU's own
 * NBD client against it: checkpoint.disk.
 */
#include "transport/nbd.h"

#include "common/error.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#define IHAVEOPT    0x49484156454f5054ull
#define REPLY_MAGIC 0x0003e889045565a9ull

static uint8_t wb[8192];
static int writes, zeroes;
static uint64_t w_off;
static uint32_t w_len;

static int on_write(void *arg, unsigned idx, uint64_t off, const uint8_t *d,
                    uint32_t len, uint16_t flags)
{
    writes++;
    w_off = off;
    w_len = len;
    memcpy(wb, d, len < sizeof(wb) ? len : sizeof(wb));
    return 0;
}

static int on_zeroes(void *arg, unsigned idx, uint64_t off, uint32_t len,
                     uint16_t flags)
{
    zeroes++;
    return 0;
}

static const struct xprt_nbd_cbs cbs = {.write = on_write,
                                        .write_zeroes = on_zeroes};
static const struct xprt_nbd_export ex[] = {{"d0", 1 << 20, false},
                                            {"ro", 4096, true}};

static size_t put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
    return 8;
}

static size_t put32(uint8_t *p, uint32_t v)
{
    colo_put_be32(p, v);
    return 4;
}

static size_t put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return 2;
}

static size_t opt(uint8_t *p, uint32_t o, const void *d, uint32_t len)
{
    size_t n = put64(p, IHAVEOPT);

    n += put32(p + n, o);
    n += put32(p + n, len);
    if (len)
        memcpy(p + n, d, len);
    return n + len;
}

static size_t go(uint8_t *p, const char *name)
{
    uint8_t d[64];
    size_t n = put32(d, (uint32_t)strlen(name));

    memcpy(d + n, name, strlen(name));
    n += strlen(name);
    n += put16(d + n, 1);
    n += put16(d + n, 3); /* NBD_INFO_BLOCK_SIZE */
    return opt(p, 7, d, (uint32_t)n);
}

static size_t req(uint8_t *p, uint16_t type, uint64_t handle, uint64_t off,
                  uint32_t len)
{
    size_t n = put32(p, 0x25609513);

    n += put16(p + n, 0);
    n += put16(p + n, type);
    n += put64(p + n, handle);
    n += put64(p + n, off);
    n += put32(p + n, len);
    return n;
}

/* Feed one byte at a time; the verdict of the last byte. */
static int feed_bytes(struct xprt_nbd_conn *c, const uint8_t *d, size_t n)
{
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++)
        rc = xprt_nbd_conn_feed(c, d + i, 1);
    return rc;
}

/* The simple reply for handle at out[at..]: its error. */
static uint32_t reply_err(const struct colo_buf *out, size_t at, uint64_t h)
{
    uint64_t got = 0;

    cr_assert_geq(out->len, at + 16);
    cr_assert_eq(colo_get_be32(out->data + at), 0x67446698u);
    for (int i = 0; i < 8; i++)
        got = (got << 8) | out->data[at + 8 + i];
    cr_assert_eq(got, h);
    return colo_get_be32(out->data + at + 4);
}

Test(nbd, qemu_session)
{
    struct xprt_nbd_conn *c;
    struct colo_buf out;
    uint8_t in[16384];
    size_t n = 0, at;

    colo_buf_init(&out, 0);
    cr_assert_eq(xprt_nbd_conn_new(ex, 2, &cbs, NULL, &out, &c), 0);
    cr_assert_eq(out.len, 18); /* NBDMAGIC IHAVEOPT flags */
    cr_assert(memcmp(out.data, "NBDMAGICIHAVEOPT", 16) == 0);
    cr_assert_eq(out.data[17], 3); /* FIXED_NEWSTYLE | NO_ZEROES */
    n += put32(in, 3);
    n += opt(in + n, 8, NULL, 0); /* STRUCTURED_REPLY: unsupported */
    n += go(in + n, "nope");      /* unknown export */
    n += go(in + n, "d0");
    cr_assert_eq(feed_bytes(c, in, n), 0);
    cr_assert_eq(xprt_nbd_conn_phase(c), XPRT_NBD_TRANSMISSION);
    cr_assert_eq(xprt_nbd_conn_export(c), 0);
    at = 18;
    cr_assert_eq(colo_get_be32(out.data + at + 12), 0x80000001u); /* UNSUP */
    at += 20;
    cr_assert_eq(colo_get_be32(out.data + at + 12), 0x80000006u); /* UNKNOWN */
    at += 20;
    cr_assert_eq(colo_get_be32(out.data + at + 12), 3u); /* INFO export */
    cr_assert_eq(colo_get_be32(out.data + at + 16), 12u);
    at += 20 + 12;
    cr_assert_eq(colo_get_be32(out.data + at + 12), 3u); /* INFO block */
    cr_assert_eq(colo_get_be32(out.data + at + 20 + 10), XPRT_NBD_MAX_PAYLOAD);
    at += 20 + 14;
    cr_assert_eq(colo_get_be32(out.data + at + 12), 1u); /* ACK */
    at += 20;
    cr_assert_eq(out.len, at);

    /* WRITE, WRITE past the end (data consumed), WRITE_ZEROES, READ (no
     * read callback: EIO), FLUSH, an unknown command, then DISC. */
    n = req(in, 1, 11, 4096, 512);
    memset(in + n, 0x5a, 512);
    n += 512;
    n += req(in + n, 1, 12, (1 << 20) - 256, 512);
    memset(in + n, 0x77, 512);
    n += 512;
    n += req(in + n, 6, 13, 0, 8192);
    n += req(in + n, 0, 14, 0, 4096);
    n += req(in + n, 3, 15, 0, 0);
    n += req(in + n, 9, 16, 0, 0);
    cr_assert_eq(feed_bytes(c, in, n), 0);
    cr_assert_eq(writes, 1);
    cr_assert_eq(w_off, 4096);
    cr_assert_eq(w_len, 512);
    cr_assert_eq(wb[0], 0x5a);
    cr_assert_eq(zeroes, 1);
    cr_assert_eq(reply_err(&out, at, 11), 0);
    cr_assert_eq(reply_err(&out, at + 16, 12), ENOSPC);
    cr_assert_eq(reply_err(&out, at + 32, 13), 0);
    cr_assert_eq(reply_err(&out, at + 48, 14), EIO);
    cr_assert_eq(reply_err(&out, at + 64, 15), 0);
    cr_assert_eq(reply_err(&out, at + 80, 16), EINVAL);
    n = req(in, 2, 17, 0, 0);
    cr_assert_eq(xprt_nbd_conn_feed(c, in, n), 1);
    cr_assert_eq(xprt_nbd_conn_phase(c), XPRT_NBD_CLOSED);
    xprt_nbd_conn_free(c);
    colo_buf_dispose(&out);
}

static int session(const uint8_t *in, size_t n, struct colo_buf *out,
                   size_t nex)
{
    struct xprt_nbd_conn *c;
    int rc;

    colo_buf_init(out, 0);
    cr_assert_eq(xprt_nbd_conn_new(ex, nex, &cbs, NULL, out, &c), 0);
    rc = xprt_nbd_conn_feed(c, in, n);
    xprt_nbd_conn_free(c);
    return rc;
}

Test(nbd, refusals)
{
    uint8_t in[16384];
    struct colo_buf out;
    size_t n;

    /* Not fixed newstyle; unknown client flag bits. */
    put32(in, 2);
    cr_assert_eq(session(in, 4, &out, 1), -COLO_ESTREAM_UNSUPPORTED);
    colo_buf_dispose(&out);
    put32(in, 1 | 8);
    cr_assert_eq(session(in, 4, &out, 1), -COLO_ESTREAM_UNSUPPORTED);
    colo_buf_dispose(&out);
    /* An option over the cap is refused before its data arrives. */
    n = put32(in, 1);
    n += put64(in + n, IHAVEOPT);
    n += put32(in + n, 7);
    n += put32(in + n, XPRT_NBD_MAX_OPTION + 1);
    cr_assert_eq(session(in, n, &out, 1), -COLO_ESTREAM_TOO_BIG);
    colo_buf_dispose(&out);
    /* Bad option magic. */
    n = put32(in, 1);
    n += put64(in + n, 0x1122334455667788ull);
    n += put32(in + n, 7);
    n += put32(in + n, 0);
    cr_assert_eq(session(in, n, &out, 1), -COLO_ESTREAM_CORRUPT);
    colo_buf_dispose(&out);
    /* EXPORT_NAME without NO_ZEROES: size, flags and 124 zeroes; then a
     * WRITE over the payload cap ends the connection; bad request magic
     * too. */
    n = put32(in, 1);
    n += opt(in + n, 1, "d0", 2);
    n += req(in + n, 1, 1, 0, XPRT_NBD_MAX_PAYLOAD + 1);
    cr_assert_eq(session(in, n, &out, 1), -COLO_ESTREAM_TOO_BIG);
    cr_assert_eq(out.len, 18 + 8 + 2 + 124);
    colo_buf_dispose(&out);
    n = put32(in, 1);
    n += opt(in + n, 1, "d0", 2);
    n += req(in + n, 0, 1, 0, 512);
    in[n - 28] ^= 1;
    cr_assert_eq(session(in, n, &out, 1), -COLO_ESTREAM_CORRUPT);
    colo_buf_dispose(&out);
    /* An unknown EXPORT_NAME closes; ABORT closes. */
    n = put32(in, 1);
    n += opt(in + n, 1, "zz", 2);
    cr_assert_eq(session(in, n, &out, 1), 1);
    colo_buf_dispose(&out);
    n = put32(in, 1);
    n += opt(in + n, 2, NULL, 0);
    cr_assert_eq(session(in, n, &out, 1), 1);
    colo_buf_dispose(&out);
    /* A read-only export refuses writes with EPERM. */
    n = put32(in, 3);
    n += go(in + n, "ro");
    n += req(in + n, 1, 5, 0, 512);
    memset(in + n, 0, 512);
    n += 512;
    writes = 0;
    cr_assert_eq(session(in, n, &out, 2), 0);
    cr_assert_eq(writes, 0);
    cr_assert_eq(reply_err(&out, out.len - 16, 5), EPERM);
    colo_buf_dispose(&out);
}
