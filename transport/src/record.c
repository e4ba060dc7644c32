/*
 * Record framing: writers and the incremental, layer-aware reader.
 */
#include "transport/record.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/error.h"
#include "common/fd.h"
#include "transport/colo_rec.h"
#include "transport/xen_stream.h"

/* ---------------------------------------------------------------------- */
/* Writers                                                                  */

static const uint8_t zero_pad[XPRT_REC_ALIGN];

void xprt_rec_hdr_encode(uint8_t out[XPRT_REC_HDR_SIZE], uint32_t type,
                         uint32_t len)
{
    colo_put_le32(out, type);
    colo_put_le32(out + 4, len);
}

static int iov_total(const struct iovec *iov, int n, uint32_t *ret_len)
{
    uint64_t total = 0;

    if (n < 0 || (n > 0 && !iov))
        return -EINVAL;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    if (total > XPRT_REC_MAX_DEFAULT)
        return -COLO_ESTREAM_TOO_BIG;
    *ret_len = (uint32_t)total;
    return 0;
}

int xprt_rec_writev_evbuf(struct evbuffer *out, uint32_t type,
                          const struct iovec *iov, int n)
{
    uint8_t hdr[XPRT_REC_HDR_SIZE];
    uint32_t len;
    size_t before;
    int rc;

    rc = iov_total(iov, n, &len);
    if (rc < 0)
        return rc;
    xprt_rec_hdr_encode(hdr, type, len);
    before = evbuffer_get_length(out);
    if (evbuffer_expand(out, XPRT_REC_HDR_SIZE + xprt_rec_padded_len(len)))
        return -ENOMEM;
    if (evbuffer_add(out, hdr, sizeof(hdr)))
        goto fail;
    for (int i = 0; i < n; i++)
        if (iov[i].iov_len &&
            evbuffer_add(out, iov[i].iov_base, iov[i].iov_len))
            goto fail;
    if (xprt_rec_padded_len(len) != len &&
        evbuffer_add(out, zero_pad, xprt_rec_padded_len(len) - len))
        goto fail;
    return 0;
fail:
    /* Take back what we added: evbuffer has no truncate, so this only
     * happens on allocation failure after expand succeeded (not really). */
    (void)before;
    return -ENOMEM;
}

int xprt_rec_write_evbuf(struct evbuffer *out, uint32_t type, const void *body,
                         size_t len)
{
    struct iovec iov = {.iov_base = (void *)body, .iov_len = len};

    return xprt_rec_writev_evbuf(out, type, &iov, len ? 1 : 0);
}

int xprt_rec_writev_buf(struct colo_buf *out, uint32_t type,
                        const struct iovec *iov, int n)
{
    uint8_t hdr[XPRT_REC_HDR_SIZE];
    uint32_t len;
    size_t before = out->len;
    int rc;

    rc = iov_total(iov, n, &len);
    if (rc < 0)
        return rc;
    rc = colo_buf_reserve(out, XPRT_REC_HDR_SIZE + xprt_rec_padded_len(len));
    if (rc < 0)
        return rc;
    xprt_rec_hdr_encode(hdr, type, len);
    rc = colo_buf_append(out, hdr, sizeof(hdr));
    for (int i = 0; rc >= 0 && i < n; i++)
        rc = colo_buf_append(out, iov[i].iov_base, iov[i].iov_len);
    if (rc >= 0)
        rc = colo_buf_append(out, zero_pad, xprt_rec_padded_len(len) - len);
    if (rc < 0)
        out->len = before;
    return rc < 0 ? rc : 0;
}

int xprt_rec_write_buf(struct colo_buf *out, uint32_t type, const void *body,
                       size_t len)
{
    struct iovec iov = {.iov_base = (void *)body, .iov_len = len};

    return xprt_rec_writev_buf(out, type, &iov, len ? 1 : 0);
}

int xprt_rec_writev_fd(int fd, uint32_t type, const struct iovec *iov, int n)
{
    uint8_t hdr[XPRT_REC_HDR_SIZE];
    uint32_t len;
    int rc;

    rc = iov_total(iov, n, &len);
    if (rc < 0)
        return rc;
    xprt_rec_hdr_encode(hdr, type, len);
    rc = colo_write_all(fd, hdr, sizeof(hdr));
    for (int i = 0; rc >= 0 && i < n; i++)
        if (iov[i].iov_len)
            rc = colo_write_all(fd, iov[i].iov_base, iov[i].iov_len);
    if (rc >= 0 && xprt_rec_padded_len(len) != len)
        rc = colo_write_all(fd, zero_pad, xprt_rec_padded_len(len) - len);
    return rc < 0 ? rc : 0;
}

int xprt_rec_write_fd(int fd, uint32_t type, const void *body, size_t len)
{
    struct iovec iov = {.iov_base = (void *)body, .iov_len = len};

    return xprt_rec_writev_fd(fd, type, &iov, len ? 1 : 0);
}

/* ---------------------------------------------------------------------- */
/* Reader                                                                   */

/* What the next item is. */
enum {
    ST_AUTO = 0,
    ST_XL_HDR,
    ST_LIBXL_HDR,
    ST_LIBXC_IHDR,
    ST_LIBXC_DHDR,
    ST_COLO_HDR,
    ST_RECORD, /* a record of layer rec_layer() */
    ST_DONE,   /* after END: nothing more may follow */
};

/* libxc segment inside a libxl stream. */
enum {
    XC_NOT_STARTED = 0,
    XC_ACTIVE,     /* libxc owns the next record */
    XC_CHECKPOINT, /* libxc handed over at CHECKPOINT; libxl owns until
                      CHECKPOINT_END */
    XC_DONE,       /* libxc END seen */
};

static enum xprt_layer rec_layer(const struct xprt_reader *r)
{
    switch (r->fmt_cur) {
    case XPRT_FMT_LIBXL:
    case XPRT_FMT_XL:
        return r->libxc_state == XC_ACTIVE ? XPRT_LAYER_LIBXC
                                           : XPRT_LAYER_LIBXL;
    case XPRT_FMT_LIBXC:
        return XPRT_LAYER_LIBXC;
    case XPRT_FMT_COLO:
        return XPRT_LAYER_COLO;
    default:
        return XPRT_LAYER_NONE;
    }
}

static int start_state(enum xprt_format fmt)
{
    switch (fmt) {
    case XPRT_FMT_AUTO:
        return ST_AUTO;
    case XPRT_FMT_XL:
        return ST_XL_HDR;
    case XPRT_FMT_LIBXL:
        return ST_LIBXL_HDR;
    case XPRT_FMT_LIBXC:
        return ST_LIBXC_IHDR;
    case XPRT_FMT_COLO:
        return ST_COLO_HDR;
    default:
        return ST_RECORD;
    }
}

void xprt_reader_init(struct xprt_reader *r, enum xprt_format fmt,
                      uint32_t max_record)
{
    memset(r, 0, sizeof(*r));
    r->fmt = fmt;
    r->fmt_cur = fmt;
    r->max_record = max_record ? max_record : XPRT_REC_MAX_DEFAULT;
    r->state = start_state(fmt);
    if (fmt == XPRT_FMT_LIBXC)
        r->libxc_state = XC_ACTIVE;
    /* The gather buffer never holds more than one item. */
    colo_buf_init(&r->gather, XPRT_REC_HDR_SIZE +
                                  xprt_rec_padded_len(r->max_record) +
                                  XPRT_XL_FIXED_SIZE + XPRT_XL_OPT_MAX_DEFAULT);
}

void xprt_reader_dispose(struct xprt_reader *r)
{
    colo_buf_dispose(&r->gather);
}

static int fail(struct xprt_reader *r, int rc, uint64_t off, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));

static int fail(struct xprt_reader *r, int rc, uint64_t off, const char *fmt,
                ...)
{
    char reason[128];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (r->state == ST_RECORD || r->state == ST_DONE)
        snprintf(r->why, sizeof(r->why),
                 "at offset %llu, record #%llu (%s): %s",
                 (unsigned long long)off, (unsigned long long)r->index,
                 xprt_layer_name(rec_layer(r)), reason);
    else
        snprintf(r->why, sizeof(r->why), "at offset %llu, header: %s",
                 (unsigned long long)off, reason);
    r->err = rc;
    return rc;
}

int xprt_reader_error(const struct xprt_reader *r)
{
    return r->err;
}

const char *xprt_reader_why(const struct xprt_reader *r)
{
    return r->why;
}

enum xprt_layer xprt_reader_next_layer(const struct xprt_reader *r)
{
    switch (r->state) {
    case ST_XL_HDR:
        return XPRT_LAYER_XL;
    case ST_LIBXL_HDR:
        return XPRT_LAYER_LIBXL;
    case ST_LIBXC_IHDR:
    case ST_LIBXC_DHDR:
        return XPRT_LAYER_LIBXC;
    case ST_COLO_HDR:
        return XPRT_LAYER_COLO;
    case ST_RECORD:
        return rec_layer(r);
    default:
        return XPRT_LAYER_NONE;
    }
}

int xprt_reader_set_format(struct xprt_reader *r, enum xprt_format fmt)
{
    if (r->gather.len)
        return -EBUSY;
    r->fmt = fmt;
    r->fmt_cur = fmt;
    r->state = start_state(fmt);
    r->ended = false;
    r->libxc_state = fmt == XPRT_FMT_LIBXC ? XC_ACTIVE : XC_NOT_STARTED;
    return 0;
}

/* Size of the next item given peeked bytes (see the header); no state
 * change. Errors set nothing: the caller turns them into fail(). */
static ssize_t next_size(const struct xprt_reader *r, const uint8_t *p,
                         size_t n, const char **ret_why)
{
    uint32_t len;

    switch (r->state) {
    case ST_AUTO:
        return 8;
    case ST_XL_HDR: {
        uint32_t opt;

        if (n < XPRT_XL_FIXED_SIZE)
            return XPRT_XL_FIXED_SIZE;
        opt = colo_get_le32(p + 44);
        if (colo_get_le32(p + 32) != XPRT_XL_BYTEORDER)
            opt = colo_get_be32(p + 44);
        if (opt > XPRT_XL_OPT_MAX_DEFAULT) {
            *ret_why = "xl optional data over the cap";
            return -COLO_ESTREAM_TOO_BIG;
        }
        return XPRT_XL_FIXED_SIZE + opt;
    }
    case ST_LIBXL_HDR:
    case ST_COLO_HDR:
    case ST_LIBXC_DHDR:
        return 16;
    case ST_LIBXC_IHDR:
        return XPRT_LIBXC_IHDR_SIZE;
    case ST_DONE:
        *ret_why = "data after the END record";
        return -COLO_ESTREAM_CORRUPT;
    default:
        if (n < XPRT_REC_HDR_SIZE)
            return XPRT_REC_HDR_SIZE;
        len = colo_get_le32(p + 4);
        if (len > r->max_record) {
            *ret_why = "record length over the cap";
            return -COLO_ESTREAM_TOO_BIG;
        }
        return (ssize_t)(XPRT_REC_HDR_SIZE + xprt_rec_padded_len(len));
    }
}

ssize_t xprt_reader_next_size(const struct xprt_reader *r, const void *peek,
                              size_t peek_len)
{
    const char *why = NULL;

    if (r->err)
        return r->err;
    return next_size(r, peek, peek_len, &why);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Type policy per layer: 0 ok, or an error with a reason. */
static int check_type(struct xprt_reader *r, enum xprt_layer layer,
                      uint32_t type, const uint8_t *body, uint32_t len,
                      uint64_t off)
{
    uint32_t id;

    switch (layer) {
    case XPRT_LAYER_LIBXL:
        if (type > XPRT_LIBXL_REC_KNOWN_MAX && !(type & XPRT_REC_OPTIONAL))
            return fail(r, -COLO_ESTREAM_UNSUPPORTED, off,
                        "unknown mandatory libxl record type 0x%x", type);
        if ((type == XPRT_LIBXL_END || type == XPRT_LIBXL_LIBXC_CONTEXT ||
             type == XPRT_LIBXL_CHECKPOINT_END) &&
            len != 0)
            return fail(r, -COLO_ESTREAM_CORRUPT, off,
                        "%s record with a body of %u bytes",
                        xprt_rec_type_name(layer, type), len);
        if (type == XPRT_LIBXL_CHECKPOINT_STATE &&
            xprt_ckpt_state_decode(body, len, &id) < 0)
            return fail(r, -COLO_ESTREAM_CORRUPT, off,
                        "CHECKPOINT_STATE body of %u bytes", len);
        if ((type == XPRT_LIBXL_EMULATOR_CONTEXT ||
             type == XPRT_LIBXL_EMULATOR_XENSTORE_DATA) &&
            len < 8)
            return fail(r, -COLO_ESTREAM_CORRUPT, off,
                        "emulator record shorter than its sub-header");
        return 0;
    case XPRT_LAYER_LIBXC:
        if (type > XPRT_LIBXC_REC_KNOWN_MAX && !(type & XPRT_REC_OPTIONAL))
            return fail(r, -COLO_ESTREAM_UNSUPPORTED, off,
                        "unknown mandatory libxc record type 0x%x", type);
        if ((type == XPRT_LIBXC_END || type == XPRT_LIBXC_CHECKPOINT) &&
            len != 0)
            return fail(r, -COLO_ESTREAM_CORRUPT, off,
                        "libxc %s record with a body of %u bytes",
                        xprt_rec_type_name(layer, type), len);
        return 0;
    case XPRT_LAYER_COLO: {
        int rc;

        if (type == XPRT_COLO_END) {
            if (len)
                return fail(r, -COLO_ESTREAM_CORRUPT, off,
                            "END record with a body");
            return 0;
        }
        if (!xprt_is_colo_type(type)) {
            if (type & XPRT_REC_OPTIONAL)
                return 0;
            return fail(r, -COLO_ESTREAM_UNSUPPORTED, off,
                        "non-colo mandatory record type 0x%x", type);
        }
        if (type >= XPRT_COLO_LINK_FIRST)
            return fail(r, -COLO_ESTREAM_CORRUPT, off,
                        "link handshake record 0x%x inside a stream", type);
        rc = xprt_colo_rec_check(type, body, len);
        if (rc < 0)
            return fail(r, rc, off, "bad %s record (%s)",
                        xprt_rec_type_name(layer, type), colo_strerror(rc));
        return 0;
    }
    default:
        return 0;
    }
}

/* A complete item of `size` bytes at p: validate, fill *it, move on. */
static int process(struct xprt_reader *r, const uint8_t *p, size_t size,
                   struct xprt_item *it)
{
    uint64_t off = r->offset;
    int rc;

    memset(it, 0, sizeof(*it));
    it->offset = off;
    it->index = r->index;
    it->body = p;
    it->length = (uint32_t)size;
    it->kind = XPRT_ITEM_HEADER;

    switch (r->state) {
    case ST_AUTO: {
        static const uint8_t libxl_id[8] = {'L', 'i', 'b', 'x',
                                            'l', 'F', 'm', 't'};
        static const uint8_t colo_id[8] = {'C', 'o', 'l', 'o',
                                           'S', 't', 'r', 'm'};
        static const uint8_t xl_id[8] = {'X', 'e', 'n', ' ',
                                         's', 'a', 'v', 'e'};

        /* Decide only: the 8 bytes are not consumed. */
        if (!memcmp(p, libxl_id, 8))
            r->fmt_cur = XPRT_FMT_LIBXL;
        else if (!memcmp(p, colo_id, 8))
            r->fmt_cur = XPRT_FMT_COLO;
        else if (!memcmp(p, xl_id, 8))
            r->fmt_cur = XPRT_FMT_XL;
        else if (colo_get_be32(p) == 0xffffffffu &&
                 colo_get_be32(p + 4) == 0xffffffffu) {
            r->fmt_cur = XPRT_FMT_LIBXC;
            r->libxc_state = XC_ACTIVE;
        } else
            return fail(r, -COLO_ESTREAM_CORRUPT, off,
                        "unknown stream magic (not xl, libxl, libxc or colo)");
        r->state = start_state(r->fmt_cur);
        it->kind = XPRT_ITEM_NONE;
        return 0; /* consumed nothing */
    }
    case ST_XL_HDR: {
        struct xprt_xl_hdr h;
        ssize_t n = xprt_xl_hdr_parse(p, size, 0, &h);

        if (n < 0)
            return fail(r, (int)n, off, "bad xl save header");
        it->layer = XPRT_LAYER_XL;
        it->type = XPRT_HDR_XL;
        r->state = ST_LIBXL_HDR;
        break;
    }
    case ST_LIBXL_HDR:
        rc = xprt_libxl_hdr_check(p, NULL);
        if (rc < 0)
            return fail(r, rc, off, "bad libxl stream header");
        it->layer = XPRT_LAYER_LIBXL;
        it->type = XPRT_HDR_LIBXL;
        r->state = ST_RECORD;
        break;
    case ST_COLO_HDR:
        rc = xprt_colo_hdr_check(p);
        if (rc < 0)
            return fail(r, rc, off, "bad colo stream header");
        it->layer = XPRT_LAYER_COLO;
        it->type = XPRT_HDR_COLO;
        r->state = ST_RECORD;
        break;
    case ST_LIBXC_IHDR:
        rc = xprt_libxc_ihdr_check(p, NULL);
        if (rc < 0)
            return fail(r, rc, off, "bad libxc image header");
        it->layer = XPRT_LAYER_LIBXC;
        it->type = XPRT_HDR_LIBXC_IMAGE;
        r->state = ST_LIBXC_DHDR;
        break;
    case ST_LIBXC_DHDR: {
        struct xprt_libxc_dhdr d;

        rc = xprt_libxc_dhdr_decode(p, &d);
        if (rc < 0)
            return fail(r, rc, off, "bad libxc domain header");
        it->layer = XPRT_LAYER_LIBXC;
        it->type = XPRT_HDR_LIBXC_DOMAIN;
        r->state = ST_RECORD;
        break;
    }
    default: {
        uint32_t type = colo_get_le32(p), len = colo_get_le32(p + 4);
        enum xprt_layer layer = rec_layer(r);

        if (!all_zero(p + XPRT_REC_HDR_SIZE + len,
                      size - XPRT_REC_HDR_SIZE - len))
            return fail(r, -COLO_ESTREAM_CORRUPT, off,
                        "non-zero padding after %s record",
                        xprt_rec_type_name(layer, type));
        if (r->fmt_cur == XPRT_FMT_BACKCHANNEL) {
            if (type == XPRT_LIBXL_CHECKPOINT_STATE)
                layer = XPRT_LAYER_LIBXL;
            else if (type == XPRT_LIBXC_CHECKPOINT_DIRTY_PFN_LIST)
                layer = XPRT_LAYER_LIBXC;
            else if (!(type & XPRT_REC_OPTIONAL))
                return fail(r, -COLO_ESTREAM_UNSUPPORTED, off,
                            "record type 0x%x on the COLO back channel", type);
        }
        rc = check_type(r, layer, type, p + XPRT_REC_HDR_SIZE, len, off);
        if (rc < 0)
            return rc;
        it->kind = XPRT_ITEM_RECORD;
        it->layer = layer;
        it->type = type;
        it->length = len;
        it->body = p + XPRT_REC_HDR_SIZE;
        r->index++;

        /* Layer tracking. */
        if (layer == XPRT_LAYER_LIBXL && r->fmt_cur != XPRT_FMT_BACKCHANNEL) {
            switch (type) {
            case XPRT_LIBXL_END:
                if (r->libxc_state == XC_ACTIVE ||
                    r->libxc_state == XC_CHECKPOINT) {
                    /* A checkpointed stream may end at a checkpoint. */
                }
                r->ended = true;
                r->state = ST_DONE;
                break;
            case XPRT_LIBXL_LIBXC_CONTEXT:
                if (r->libxc_state != XC_NOT_STARTED)
                    return fail(r, -COLO_ESTREAM_CORRUPT, off,
                                "second LIBXC_CONTEXT record");
                r->libxc_state = XC_ACTIVE;
                r->state = ST_LIBXC_IHDR;
                break;
            case XPRT_LIBXL_CHECKPOINT_END:
                if (r->libxc_state != XC_CHECKPOINT)
                    return fail(r, -COLO_ESTREAM_CORRUPT, off,
                                "CHECKPOINT_END outside a libxc checkpoint");
                r->libxc_state = XC_ACTIVE;
                break;
            default:
                break;
            }
        } else if (layer == XPRT_LAYER_LIBXC &&
                   r->fmt_cur != XPRT_FMT_BACKCHANNEL) {
            if (type == XPRT_LIBXC_END) {
                if (r->fmt_cur == XPRT_FMT_LIBXC) {
                    r->ended = true;
                    r->state = ST_DONE;
                }
                r->libxc_state = XC_DONE;
            } else if (type == XPRT_LIBXC_CHECKPOINT) {
                r->checkpointed = true;
                if (r->fmt_cur != XPRT_FMT_LIBXC)
                    r->libxc_state = XC_CHECKPOINT;
            }
        } else if (layer == XPRT_LAYER_COLO && type == XPRT_COLO_END) {
            r->ended = true;
            r->state = ST_DONE;
        }
        break;
    }
    }
    r->offset += size;
    return 0;
}

ssize_t xprt_reader_push(struct xprt_reader *r, const void *data, size_t len,
                         struct xprt_item *ret_item)
{
    const uint8_t *p = data;
    size_t used = 0;
    const char *why = NULL;
    ssize_t need;
    int rc;

    ret_item->kind = XPRT_ITEM_NONE;
    if (r->err)
        return r->err;
    if (r->cur_type == 1) {
        /* The previous call returned a gathered item: release it. */
        colo_buf_reset(&r->gather);
        r->cur_type = 0;
    }
    if (len == 0)
        return 0;

again:
    if (r->gather.len == 0) {
        need = next_size(r, p + used, len - used, &why);
        if (need < 0)
            return fail(r, (int)need, r->offset, "%s", why);
        if ((size_t)need <= len - used) {
            /* Whole item in the caller's bytes: no copy. */
            int st = r->state;

            rc = process(r, p + used, (size_t)need, ret_item);
            if (rc < 0)
                return rc;
            if (st == ST_AUTO)
                goto again; /* decided the format, consumed nothing */
            /* The xl header's size is only known after 48 bytes. */
            return (ssize_t)(used + (size_t)need);
        }
    }
    /* Gather: take exactly what is needed to learn more. */
    for (;;) {
        size_t take;

        need = next_size(r, r->gather.data, r->gather.len, &why);
        if (need < 0)
            return fail(r, (int)need, r->offset, "%s", why);
        if (r->gather.len >= (size_t)need) {
            int st = r->state;

            rc = process(r, r->gather.data, (size_t)need, ret_item);
            if (rc < 0)
                return rc;
            if (st == ST_AUTO)
                continue;
            r->cur_type = 1; /* release on the next push */
            return (ssize_t)used;
        }
        take = (size_t)need - r->gather.len;
        if (take > len - used)
            take = len - used;
        if (take == 0)
            return (ssize_t)used;
        rc = colo_buf_append(&r->gather, p + used, take);
        if (rc < 0)
            return fail(r, rc, r->offset, "cannot buffer the item");
        used += take;
    }
}

int xprt_reader_libxc_consumed(struct xprt_reader *r, bool at_checkpoint)
{
    bool libxc_next = r->state == ST_LIBXC_IHDR || r->state == ST_LIBXC_DHDR ||
                      (r->state == ST_RECORD && r->libxc_state == XC_ACTIVE);

    if (r->gather.len || r->err ||
        (r->fmt_cur != XPRT_FMT_LIBXL && r->fmt_cur != XPRT_FMT_XL) ||
        !libxc_next)
        return -EINVAL;
    r->state = ST_RECORD;
    if (at_checkpoint) {
        r->libxc_state = XC_CHECKPOINT;
        r->checkpointed = true;
    } else {
        r->libxc_state = XC_DONE;
    }
    return 0;
}

int xprt_reader_eof(struct xprt_reader *r)
{
    if (r->err)
        return r->err;
    if (r->cur_type == 1) {
        colo_buf_reset(&r->gather);
        r->cur_type = 0;
    }
    if (r->gather.len) {
        const char *what = "a header";

        if (r->state == ST_RECORD)
            what = r->gather.len < XPRT_REC_HDR_SIZE ? "a record header"
                                                     : "a record body";
        return fail(r, -COLO_ESTREAM_TRUNCATED, r->offset,
                    "EOF in %s (%zu bytes of it present)", what, r->gather.len);
    }
    switch (r->fmt_cur) {
    case XPRT_FMT_RECORDS:
    case XPRT_FMT_BACKCHANNEL:
        return 0;
    default:
        if (!r->ended)
            return fail(r, -COLO_ESTREAM_TRUNCATED, r->offset,
                        "stream ended without an END record");
        return 0;
    }
}

/* ---------------------------------------------------------------------- */
/* Names                                                                    */

const char *xprt_rec_type_name(enum xprt_layer layer, uint32_t type)
{
    static const char *const libxl[] = {"END",
                                        "LIBXC_CONTEXT",
                                        "EMULATOR_XENSTORE_DATA",
                                        "EMULATOR_CONTEXT",
                                        "CHECKPOINT_END",
                                        "CHECKPOINT_STATE"};
    static const char *const libxc[] = {"END",
                                        "PAGE_DATA",
                                        "X86_PV_INFO",
                                        "X86_PV_P2M_FRAMES",
                                        "X86_PV_VCPU_BASIC",
                                        "X86_PV_VCPU_EXTENDED",
                                        "X86_PV_VCPU_XSAVE",
                                        "SHARED_INFO",
                                        "X86_TSC_INFO",
                                        "HVM_CONTEXT",
                                        "HVM_PARAMS",
                                        "TOOLSTACK",
                                        "X86_PV_VCPU_MSRS",
                                        "VERIFY",
                                        "CHECKPOINT",
                                        "CHECKPOINT_DIRTY_PFN_LIST",
                                        "STATIC_DATA_END",
                                        "X86_CPUID_POLICY",
                                        "X86_MSR_POLICY"};
    static const char *const colo[] = {"END",
                                       "HELLO",
                                       "VM_CONFIG",
                                       "RAM_PAGES",
                                       "DEVICE_STATE",
                                       "CHECKPOINT_BEGIN",
                                       "CHECKPOINT_END",
                                       "ACK",
                                       "HEARTBEAT",
                                       "ERROR",
                                       "DISK_INFO",
                                       "DISK_WRITE",
                                       "HANDOVER"};

    if (layer == XPRT_LAYER_LIBXL && type <= XPRT_LIBXL_REC_KNOWN_MAX)
        return libxl[type];
    if (layer == XPRT_LAYER_LIBXC && type <= XPRT_LIBXC_REC_KNOWN_MAX)
        return libxc[type];
    if (type == 0)
        return "END";
    if (xprt_is_colo_type(type)) {
        uint32_t n = type - XPRT_COLO_REC_BASE;

        if (n < sizeof(colo) / sizeof(colo[0]))
            return colo[n];
        switch (type) {
        case XPRT_LINK_HELLO:
            return "LINK_HELLO";
        case XPRT_LINK_AUTH:
            return "LINK_AUTH";
        case XPRT_LINK_AUTH_OK:
            return "LINK_AUTH_OK";
        case XPRT_LINK_REJECT:
            return "LINK_REJECT";
        default:
            return "colo-unknown";
        }
    }
    return "unknown";
}

const char *xprt_layer_name(enum xprt_layer layer)
{
    switch (layer) {
    case XPRT_LAYER_XL:
        return "xl";
    case XPRT_LAYER_LIBXL:
        return "libxl";
    case XPRT_LAYER_LIBXC:
        return "libxc";
    case XPRT_LAYER_COLO:
        return "colo";
    default:
        return "records";
    }
}

const char *xprt_format_name(enum xprt_format fmt)
{
    switch (fmt) {
    case XPRT_FMT_RECORDS:
        return "records";
    case XPRT_FMT_BACKCHANNEL:
        return "colo-backchannel";
    case XPRT_FMT_LIBXL:
        return "libxl";
    case XPRT_FMT_LIBXC:
        return "libxc";
    case XPRT_FMT_XL:
        return "xl";
    case XPRT_FMT_COLO:
        return "colo";
    default:
        return "auto";
    }
}
