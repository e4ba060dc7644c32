/*
 * NBD server connection: fixed newstyle handshake and simple replies
 * (transport/nbd.h).
 */
#include "transport/nbd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

#define NBDMAGIC      0x4e42444d41474943ull
#define IHAVEOPT      0x49484156454f5054ull
#define REPLY_MAGIC   0x0003e889045565a9ull
#define REQUEST_MAGIC 0x25609513u
#define SIMPLE_MAGIC  0x67446698u

#define HS_FIXED_NEWSTYLE (1u << 0)
#define HS_NO_ZEROES      (1u << 1)

#define OPT_EXPORT_NAME 1u
#define OPT_ABORT       2u
#define OPT_LIST        3u
#define OPT_INFO        6u
#define OPT_GO          7u

#define REP_ACK         1u
#define REP_SERVER      2u
#define REP_INFO        3u
#define REP_ERR_UNSUP   0x80000001u
#define REP_ERR_INVALID 0x80000003u
#define REP_ERR_UNKNOWN 0x80000006u

#define INFO_EXPORT     0u
#define INFO_BLOCK_SIZE 3u

#define TF_HAS_FLAGS         (1u << 0)
#define TF_READ_ONLY         (1u << 1)
#define TF_SEND_FLUSH        (1u << 2)
#define TF_SEND_FUA          (1u << 3)
#define TF_SEND_WRITE_ZEROES (1u << 6)

#define OPT_HEAD 16u
#define REQ_HEAD 28u

struct xprt_nbd_conn {
    struct xprt_nbd_export ex[XPRT_NBD_MAX_EXPORTS];
    size_t nex;
    struct xprt_nbd_cbs cbs;
    void *arg;
    struct colo_buf *out;
    struct colo_buf in; /* gathered input, parsed from in_off */
    size_t in_off;
    enum xprt_nbd_phase phase;
    bool no_zeroes;
    int export_idx;
    uint8_t *rbuf; /* READ payloads */
    size_t rbuf_cap;
};

static void be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void be64(uint8_t *p, uint64_t v)
{
    colo_put_be32(p, (uint32_t)(v >> 32));
    colo_put_be32(p + 4, (uint32_t)v);
}

static uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint64_t get_be64(const uint8_t *p)
{
    return ((uint64_t)colo_get_be32(p) << 32) | colo_get_be32(p + 4);
}

static int opt_reply(struct xprt_nbd_conn *c, uint32_t opt, uint32_t type,
                     const void *data, uint32_t len)
{
    uint8_t h[20];
    int rc;

    be64(h, REPLY_MAGIC);
    colo_put_be32(h + 8, opt);
    colo_put_be32(h + 12, type);
    colo_put_be32(h + 16, len);
    rc = colo_buf_append(c->out, h, sizeof(h));
    if (rc >= 0 && len)
        rc = colo_buf_append(c->out, data, len);
    return rc;
}

static uint16_t tflags(const struct xprt_nbd_conn *c, unsigned idx)
{
    uint16_t f =
        TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA | TF_SEND_WRITE_ZEROES;

    if (c->ex[idx].read_only)
        f |= TF_READ_ONLY;
    return f;
}

static int find_export(const struct xprt_nbd_conn *c, const uint8_t *name,
                       size_t len)
{
    for (size_t i = 0; i < c->nex; i++)
        if (strlen(c->ex[i].name) == len && !memcmp(c->ex[i].name, name, len))
            return (int)i;
    return -1;
}

/* EXPORT_NAME: the old-style answer, or close for an unknown name. */
static int opt_export_name(struct xprt_nbd_conn *c, const uint8_t *d,
                           uint32_t len)
{
    uint8_t b[10 + 124] = {0};
    int idx = find_export(c, d, len);

    if (idx < 0) {
        c->phase = XPRT_NBD_CLOSED;
        return 1;
    }
    be64(b, c->ex[idx].size);
    be16(b + 8, tflags(c, (unsigned)idx));
    c->export_idx = idx;
    c->phase = XPRT_NBD_TRANSMISSION;
    return colo_buf_append(c->out, b, c->no_zeroes ? 10 : sizeof(b));
}

/* INFO / GO: u32 name_len, name, u16 n, u16 info[n]. */
static int opt_info_go(struct xprt_nbd_conn *c, uint32_t opt, const uint8_t *d,
                       uint32_t len)
{
    uint32_t nl;
    uint16_t n;
    bool want_bs = false;
    uint8_t b[18];
    int idx, rc;

    if (len < 6)
        return opt_reply(c, opt, REP_ERR_INVALID, NULL, 0);
    nl = colo_get_be32(d);
    if (nl > XPRT_NBD_MAX_NAME || (uint64_t)nl + 6 > len)
        return opt_reply(c, opt, REP_ERR_INVALID, NULL, 0);
    n = get_be16(d + 4 + nl);
    if ((uint64_t)4 + nl + 2 + 2ull * n != len)
        return opt_reply(c, opt, REP_ERR_INVALID, NULL, 0);
    for (uint16_t i = 0; i < n; i++)
        if (get_be16(d + 6 + nl + 2u * i) == INFO_BLOCK_SIZE)
            want_bs = true;
    idx = find_export(c, d + 4, nl);
    if (idx < 0)
        return opt_reply(c, opt, REP_ERR_UNKNOWN, NULL, 0);
    be16(b, INFO_EXPORT);
    be64(b + 2, c->ex[idx].size);
    be16(b + 10, tflags(c, (unsigned)idx));
    rc = opt_reply(c, opt, REP_INFO, b, 12);
    if (rc >= 0 && want_bs) {
        be16(b, INFO_BLOCK_SIZE);
        colo_put_be32(b + 2, 1);
        colo_put_be32(b + 6, 4096);
        colo_put_be32(b + 10, XPRT_NBD_MAX_PAYLOAD);
        rc = opt_reply(c, opt, REP_INFO, b, 14);
    }
    if (rc >= 0)
        rc = opt_reply(c, opt, REP_ACK, NULL, 0);
    if (rc >= 0 && opt == OPT_GO) {
        c->export_idx = idx;
        c->phase = XPRT_NBD_TRANSMISSION;
    }
    return rc;
}

static int opt_list(struct xprt_nbd_conn *c, uint32_t len)
{
    uint8_t b[4 + XPRT_NBD_MAX_NAME];
    int rc = 0;

    if (len)
        return opt_reply(c, OPT_LIST, REP_ERR_INVALID, NULL, 0);
    for (size_t i = 0; i < c->nex && rc >= 0; i++) {
        uint32_t nl = (uint32_t)strlen(c->ex[i].name);

        colo_put_be32(b, nl);
        memcpy(b + 4, c->ex[i].name, nl);
        rc = opt_reply(c, OPT_LIST, REP_SERVER, b, 4 + nl);
    }
    if (rc >= 0)
        rc = opt_reply(c, OPT_LIST, REP_ACK, NULL, 0);
    return rc;
}

/* One option, whole. Returns < 0, 0 or 1 (closed). */
static int do_option(struct xprt_nbd_conn *c, uint32_t opt, const uint8_t *d,
                     uint32_t len)
{
    switch (opt) {
    case OPT_EXPORT_NAME:
        return opt_export_name(c, d, len);
    case OPT_ABORT:
        opt_reply(c, opt, REP_ACK, NULL, 0);
        c->phase = XPRT_NBD_CLOSED;
        return 1;
    case OPT_LIST:
        return opt_list(c, len);
    case OPT_INFO:
    case OPT_GO:
        return opt_info_go(c, opt, d, len);
    default:
        return opt_reply(c, opt, REP_ERR_UNSUP, NULL, 0);
    }
}

static uint32_t nbd_errno(int rc)
{
    switch (-rc) {
    case EPERM:
    case EIO:
    case ENOMEM:
    case EINVAL:
    case ENOSPC:
    case EOVERFLOW:
    case ENOTSUP:
    case ESHUTDOWN:
        return (uint32_t)-rc;
    default:
        return EIO;
    }
}

static int simple_reply(struct xprt_nbd_conn *c, uint64_t handle, int rc,
                        const uint8_t *data, uint32_t len)
{
    uint8_t h[16];
    int r;

    colo_put_be32(h, SIMPLE_MAGIC);
    colo_put_be32(h + 4, rc < 0 ? nbd_errno(rc) : 0);
    be64(h + 8, handle);
    r = colo_buf_append(c->out, h, sizeof(h));
    if (r >= 0 && rc >= 0 && len)
        r = colo_buf_append(c->out, data, len);
    return r;
}

static bool in_bounds(const struct xprt_nbd_conn *c, uint64_t off, uint32_t len)
{
    uint64_t size = c->ex[c->export_idx].size;

    return off <= size && len <= size - off;
}

static int do_read(struct xprt_nbd_conn *c, uint64_t handle, uint64_t off,
                   uint32_t len)
{
    unsigned idx = (unsigned)c->export_idx;
    int rc;

    if (!len || len > XPRT_NBD_MAX_PAYLOAD || !in_bounds(c, off, len))
        return simple_reply(c, handle, -EINVAL, NULL, 0);
    if (!c->cbs.read)
        return simple_reply(c, handle, -EIO, NULL, 0);
    if (len > c->rbuf_cap) {
        uint8_t *nb = realloc(c->rbuf, len);

        if (!nb)
            return simple_reply(c, handle, -ENOMEM, NULL, 0);
        c->rbuf = nb;
        c->rbuf_cap = len;
    }
    rc = c->cbs.read(c->arg, idx, off, c->rbuf, len);
    return simple_reply(c, handle, rc, c->rbuf, len);
}

/* One request (with its WRITE data). Returns < 0, 0 or 1 (DISC). */
static int do_request(struct xprt_nbd_conn *c, const uint8_t *h,
                      const uint8_t *data)
{
    uint16_t flags = get_be16(h + 4), type = get_be16(h + 6);
    uint64_t handle = get_be64(h + 8), off = get_be64(h + 16);
    uint32_t len = colo_get_be32(h + 24);
    unsigned idx = (unsigned)c->export_idx;
    bool ro = c->ex[idx].read_only;
    int rc;

    switch (type) {
    case XPRT_NBD_CMD_READ:
        if (flags & ~XPRT_NBD_CMD_FLAG_FUA)
            return simple_reply(c, handle, -EINVAL, NULL, 0);
        return do_read(c, handle, off, len);
    case XPRT_NBD_CMD_WRITE:
        if ((flags & ~XPRT_NBD_CMD_FLAG_FUA) || !len)
            rc = -EINVAL;
        else if (ro)
            rc = -EPERM;
        else if (!in_bounds(c, off, len))
            rc = -ENOSPC;
        else
            rc = c->cbs.write ? c->cbs.write(c->arg, idx, off, data, len, flags)
                              : -EIO;
        return simple_reply(c, handle, rc, NULL, 0);
    case XPRT_NBD_CMD_WRITE_ZEROES:
        if ((flags & ~(XPRT_NBD_CMD_FLAG_FUA | XPRT_NBD_CMD_FLAG_NO_HOLE)) ||
            !len)
            rc = -EINVAL;
        else if (ro)
            rc = -EPERM;
        else if (!in_bounds(c, off, len))
            rc = -ENOSPC;
        else
            rc = c->cbs.write_zeroes
                     ? c->cbs.write_zeroes(c->arg, idx, off, len, flags)
                     : -EIO;
        return simple_reply(c, handle, rc, NULL, 0);
    case XPRT_NBD_CMD_FLUSH:
        if (flags || off || len)
            rc = -EINVAL;
        else
            rc = c->cbs.flush ? c->cbs.flush(c->arg, idx) : 0;
        return simple_reply(c, handle, rc, NULL, 0);
    case XPRT_NBD_CMD_DISC:
        c->phase = XPRT_NBD_CLOSED;
        return 1;
    default:
        return simple_reply(c, handle, -EINVAL, NULL, 0);
    }
}

/* Parse as many whole items as are gathered. */
static int parse(struct xprt_nbd_conn *c)
{
    for (;;) {
        size_t avail = c->in.len - c->in_off;
        const uint8_t *p = avail ? c->in.data + c->in_off : NULL;
        int rc;

        switch (c->phase) {
        case XPRT_NBD_GREETING: {
            uint32_t f;

            if (avail < 4)
                return 0;
            f = colo_get_be32(p);
            c->in_off += 4;
            if (!(f & HS_FIXED_NEWSTYLE) ||
                (f & ~(HS_FIXED_NEWSTYLE | HS_NO_ZEROES))) {
                c->phase = XPRT_NBD_CLOSED;
                return -COLO_ESTREAM_UNSUPPORTED;
            }
            c->no_zeroes = f & HS_NO_ZEROES;
            c->phase = XPRT_NBD_OPTIONS;
            break;
        }
        case XPRT_NBD_OPTIONS: {
            uint32_t opt, len;

            if (avail < OPT_HEAD)
                return 0;
            if (get_be64(p) != IHAVEOPT) {
                c->phase = XPRT_NBD_CLOSED;
                return -COLO_ESTREAM_CORRUPT;
            }
            opt = colo_get_be32(p + 8);
            len = colo_get_be32(p + 12);
            if (len > XPRT_NBD_MAX_OPTION) {
                c->phase = XPRT_NBD_CLOSED;
                return -COLO_ESTREAM_TOO_BIG;
            }
            if (avail < OPT_HEAD + len)
                return 0;
            c->in_off += OPT_HEAD + len;
            rc = do_option(c, opt, p + OPT_HEAD, len);
            if (rc != 0)
                return rc;
            break;
        }
        case XPRT_NBD_TRANSMISSION: {
            uint32_t len;
            size_t need = REQ_HEAD;

            if (avail < REQ_HEAD)
                return 0;
            if (colo_get_be32(p) != REQUEST_MAGIC) {
                c->phase = XPRT_NBD_CLOSED;
                return -COLO_ESTREAM_CORRUPT;
            }
            len = colo_get_be32(p + 24);
            if (get_be16(p + 6) == XPRT_NBD_CMD_WRITE) {
                if (len > XPRT_NBD_MAX_PAYLOAD) {
                    c->phase = XPRT_NBD_CLOSED;
                    return -COLO_ESTREAM_TOO_BIG;
                }
                need += len;
            }
            if (avail < need)
                return 0;
            c->in_off += need;
            rc = do_request(c, p, p + REQ_HEAD);
            if (rc != 0)
                return rc;
            break;
        }
        case XPRT_NBD_CLOSED:
            return 1;
        }
    }
}

/* Input is gathered in slices of this size, so the buffer never holds
 * more than one item plus one slice. */
#define FEED_SLICE (64u * 1024u)

int xprt_nbd_conn_feed(struct xprt_nbd_conn *c, const uint8_t *data, size_t len)
{
    int rc = 0;

    if (c->phase == XPRT_NBD_CLOSED)
        return 1;
    if (!len)
        return 0;
    do {
        size_t take = len < FEED_SLICE ? len : FEED_SLICE;

        if (take && colo_buf_append(&c->in, data, take) < 0)
            return -ENOMEM;
        data += take;
        len -= take;
        rc = parse(c);
        /* Keep only the unparsed tail. */
        if (c->in_off) {
            memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
            c->in.len -= c->in_off;
            c->in_off = 0;
        }
    } while (rc == 0 && len);
    return rc;
}

int xprt_nbd_conn_new(const struct xprt_nbd_export *exports, size_t n,
                      const struct xprt_nbd_cbs *cbs, void *arg,
                      struct colo_buf *out, struct xprt_nbd_conn **ret)
{
    struct xprt_nbd_conn *c;
    uint8_t g[18];

    *ret = NULL;
    if (!n || n > XPRT_NBD_MAX_EXPORTS || !out)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!exports[i].name || strlen(exports[i].name) > XPRT_NBD_MAX_NAME)
            return -EINVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    memcpy(c->ex, exports, n * sizeof(*exports));
    c->nex = n;
    if (cbs)
        c->cbs = *cbs;
    c->arg = arg;
    c->out = out;
    c->export_idx = -1;
    /* The largest item (a request header and a WRITE's payload) and a
     * slice. */
    colo_buf_init(&c->in, REQ_HEAD + XPRT_NBD_MAX_PAYLOAD + FEED_SLICE);
    be64(g, NBDMAGIC);
    be64(g + 8, IHAVEOPT);
    be16(g + 16, HS_FIXED_NEWSTYLE | HS_NO_ZEROES);
    if (colo_buf_append(out, g, sizeof(g)) < 0) {
        xprt_nbd_conn_free(c);
        return -ENOMEM;
    }
    *ret = c;
    return 0;
}

void xprt_nbd_conn_free(struct xprt_nbd_conn *c)
{
    if (!c)
        return;
    colo_buf_dispose(&c->in);
    free(c->rbuf);
    free(c);
}

enum xprt_nbd_phase xprt_nbd_conn_phase(const struct xprt_nbd_conn *c)
{
    return c->phase;
}

int xprt_nbd_conn_export(const struct xprt_nbd_conn *c)
{
    return c->export_idx;
}
