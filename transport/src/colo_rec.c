/*
 * colo's own records: codecs with caps.
 */
#include "transport/colo_rec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "transport/record.h"

void xprt_colo_hdr_encode(uint8_t out[XPRT_COLO_HDR_SIZE])
{
    uint64_t v = XPRT_COLO_IDENT;

    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
    colo_put_be32(out + 8, XPRT_COLO_VERSION);
    colo_put_be32(out + 12, 0);
}

int xprt_colo_hdr_check(const uint8_t in[XPRT_COLO_HDR_SIZE])
{
    uint8_t want[XPRT_COLO_HDR_SIZE];

    xprt_colo_hdr_encode(want);
    if (memcmp(in, want, 8))
        return -COLO_ESTREAM_CORRUPT;
    if (colo_get_be32(in + 8) != XPRT_COLO_VERSION)
        return -COLO_ESTREAM_UNSUPPORTED;
    if (colo_get_be32(in + 12) != 0)
        return -COLO_ESTREAM_UNSUPPORTED;
    return 0;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    colo_put_le64(p, v);
}

/* ---- HELLO ------------------------------------------------------------ */

#define HELLO_FIXED 32u

static bool page_size_ok(uint32_t ps)
{
    return ps >= (1u << XPRT_COLO_PAGE_SHIFT_MIN) &&
           ps <= (1u << XPRT_COLO_PAGE_SHIFT_MAX) && !(ps & (ps - 1));
}

int xprt_colo_hello_write(struct colo_buf *out, const struct xprt_colo_hello *h)
{
    uint8_t b[HELLO_FIXED + XPRT_COLO_NAME_MAX];
    size_t nl = strnlen(h->vm_name, sizeof(h->vm_name));

    if (nl > XPRT_COLO_NAME_MAX || !page_size_ok(h->page_size) ||
        h->role > XPRT_ROLE_SAVEFILE)
        return -EINVAL;
    colo_put_le32(b, h->version ? h->version : XPRT_COLO_VERSION);
    colo_put_le32(b + 4, h->role);
    colo_put_le32(b + 8, h->page_size);
    colo_put_le32(b + 12, h->flags);
    put_le64(b + 16, h->ram_size);
    colo_put_le32(b + 24, (uint32_t)nl);
    colo_put_le32(b + 28, 0);
    memcpy(b + HELLO_FIXED, h->vm_name, nl);
    return xprt_rec_write_buf(out, XPRT_COLO_HELLO, b, HELLO_FIXED + nl);
}

int xprt_colo_hello_decode(const uint8_t *body, size_t len,
                           struct xprt_colo_hello *ret)
{
    uint32_t nl;

    memset(ret, 0, sizeof(*ret));
    if (len < HELLO_FIXED)
        return -COLO_ESTREAM_CORRUPT;
    ret->version = colo_get_le32(body);
    ret->role = colo_get_le32(body + 4);
    ret->page_size = colo_get_le32(body + 8);
    ret->flags = colo_get_le32(body + 12);
    ret->ram_size = colo_get_le64(body + 16);
    nl = colo_get_le32(body + 24);
    if (ret->version != XPRT_COLO_VERSION)
        return -COLO_ESTREAM_UNSUPPORTED;
    if (nl > XPRT_COLO_NAME_MAX)
        return -COLO_ESTREAM_TOO_BIG;
    if (len != HELLO_FIXED + nl || colo_get_le32(body + 28) ||
        ret->role > XPRT_ROLE_SAVEFILE || !page_size_ok(ret->page_size))
        return -COLO_ESTREAM_CORRUPT;
    if (memchr(body + HELLO_FIXED, '\0', nl))
        return -COLO_ESTREAM_CORRUPT;
    memcpy(ret->vm_name, body + HELLO_FIXED, nl);
    ret->vm_name[nl] = '\0';
    return 0;
}

/* ---- VM_CONFIG -------------------------------------------------------- */

int xprt_colo_config_write(struct colo_buf *out, const char *json, size_t len)
{
    if (!len || len > XPRT_COLO_CONFIG_MAX || memchr(json, '\0', len))
        return -EINVAL;
    return xprt_rec_write_buf(out, XPRT_COLO_VM_CONFIG, json, len);
}

int xprt_colo_config_decode(const uint8_t *body, size_t len,
                            const char **ret_json, size_t *ret_len)
{
    if (len > XPRT_COLO_CONFIG_MAX)
        return -COLO_ESTREAM_TOO_BIG;
    if (!len || memchr(body, '\0', len))
        return -COLO_ESTREAM_CORRUPT;
    *ret_json = (const char *)body;
    *ret_len = len;
    return 0;
}

/* ---- RAM_PAGES -------------------------------------------------------- */

size_t xprt_ram_pages_body_len(uint32_t count, uint32_t page_shift)
{
    return XPRT_RAM_PAGES_HEAD_SIZE(count) + ((size_t)count << page_shift);
}

int xprt_ram_pages_head_encode(uint8_t *out, uint32_t count,
                               uint32_t page_shift, const uint64_t *pfns)
{
    if (!count || count > XPRT_COLO_RAM_PAGES_MAX ||
        page_shift < XPRT_COLO_PAGE_SHIFT_MIN ||
        page_shift > XPRT_COLO_PAGE_SHIFT_MAX)
        return -EINVAL;
    if (xprt_ram_pages_body_len(count, page_shift) > XPRT_REC_MAX_DEFAULT)
        return -COLO_ESTREAM_TOO_BIG;
    colo_put_le32(out, count);
    colo_put_le32(out + 4, page_shift);
    for (uint32_t i = 0; i < count; i++)
        put_le64(out + 8 + 8 * (size_t)i, pfns[i]);
    return 0;
}

int xprt_ram_pages_iov(uint8_t *head, uint32_t count, uint32_t page_shift,
                       const uint64_t *pfns, const void *const *pages,
                       struct iovec *iov)
{
    size_t psz = (size_t)1 << page_shift;
    int rc = xprt_ram_pages_head_encode(head, count, page_shift, pfns);
    int n = 1;

    if (rc < 0)
        return rc;
    iov[0].iov_base = head;
    iov[0].iov_len = XPRT_RAM_PAGES_HEAD_SIZE(count);
    for (uint32_t i = 0; i < count; i++) {
        struct iovec *last = &iov[n - 1];

        if (n > 1 && (const uint8_t *)last->iov_base + last->iov_len ==
                         (const uint8_t *)pages[i]) {
            last->iov_len += psz;
            continue;
        }
        iov[n].iov_base = (void *)pages[i];
        iov[n].iov_len = psz;
        n++;
    }
    return n;
}

int xprt_ram_pages_write(struct colo_buf *out, uint32_t count,
                         uint32_t page_shift, const uint64_t *pfns,
                         const void *const *pages)
{
    uint8_t *head;
    struct iovec *iov;
    int rc;

    if (!count || count > XPRT_COLO_RAM_PAGES_MAX)
        return -EINVAL;
    head = malloc(XPRT_RAM_PAGES_HEAD_SIZE(count));
    iov = calloc(count + 1, sizeof(*iov));
    if (!head || !iov) {
        rc = -ENOMEM;
        goto out;
    }
    rc = xprt_ram_pages_iov(head, count, page_shift, pfns, pages, iov);
    if (rc < 0)
        goto out;
    rc = xprt_rec_writev_buf(out, XPRT_COLO_RAM_PAGES, iov, rc);
out:
    free(head);
    free(iov);
    return rc;
}

int xprt_ram_pages_decode(const uint8_t *body, size_t len, uint32_t max_count,
                          uint32_t expect_shift,
                          struct xprt_ram_pages_view *ret)
{
    if (!max_count || max_count > XPRT_COLO_RAM_PAGES_MAX)
        max_count = XPRT_COLO_RAM_PAGES_MAX;
    memset(ret, 0, sizeof(*ret));
    if (len < 8)
        return -COLO_ESTREAM_CORRUPT;
    ret->count = colo_get_le32(body);
    ret->page_shift = colo_get_le32(body + 4);
    if (ret->count > max_count)
        return -COLO_ESTREAM_TOO_BIG;
    if (!ret->count || ret->page_shift < XPRT_COLO_PAGE_SHIFT_MIN ||
        ret->page_shift > XPRT_COLO_PAGE_SHIFT_MAX ||
        (expect_shift && ret->page_shift != expect_shift))
        return -COLO_ESTREAM_CORRUPT;
    if (len != xprt_ram_pages_body_len(ret->count, ret->page_shift))
        return -COLO_ESTREAM_CORRUPT;
    ret->pfns_le = body + 8;
    ret->data = body + XPRT_RAM_PAGES_HEAD_SIZE(ret->count);
    return 0;
}

uint64_t xprt_ram_pages_pfn(const struct xprt_ram_pages_view *v, uint32_t i)
{
    return colo_get_le64(v->pfns_le + 8 * (size_t)i);
}

/* ---- DEVICE_STATE ----------------------------------------------------- */

void xprt_devstate_head_encode(uint8_t out[XPRT_DEVSTATE_HEAD_SIZE],
                               uint32_t format)
{
    colo_put_le32(out, format);
    colo_put_le32(out + 4, 0);
}

int xprt_devstate_write(struct colo_buf *out, uint32_t format, const void *blob,
                        size_t len)
{
    uint8_t head[XPRT_DEVSTATE_HEAD_SIZE];
    struct iovec iov[2] = {{head, sizeof(head)}, {(void *)blob, len}};

    xprt_devstate_head_encode(head, format);
    return xprt_rec_writev_buf(out, XPRT_COLO_DEVICE_STATE, iov, 2);
}

int xprt_devstate_decode(const uint8_t *body, size_t len, uint32_t *ret_format,
                         const uint8_t **ret_blob, size_t *ret_len)
{
    if (len < XPRT_DEVSTATE_HEAD_SIZE || colo_get_le32(body + 4))
        return -COLO_ESTREAM_CORRUPT;
    *ret_format = colo_get_le32(body);
    if (*ret_format != XPRT_DEVSTATE_QEMU_XEN_SAVE)
        return -COLO_ESTREAM_UNSUPPORTED;
    *ret_blob = body + XPRT_DEVSTATE_HEAD_SIZE;
    *ret_len = len - XPRT_DEVSTATE_HEAD_SIZE;
    return 0;
}

/* ---- CHECKPOINT_BEGIN / END / ACK -------------------------------------- */

void xprt_ckpt_begin_encode(uint8_t out[16], uint64_t n, uint32_t flags)
{
    put_le64(out, n);
    colo_put_le32(out + 8, flags);
    colo_put_le32(out + 12, 0);
}

void xprt_ckpt_end_encode(uint8_t out[16], uint64_t n)
{
    put_le64(out, n);
    put_le64(out + 8, 0);
}

void xprt_ack_encode(uint8_t out[16], uint64_t n, int32_t status)
{
    put_le64(out, n);
    colo_put_le32(out + 8, (uint32_t)status);
    colo_put_le32(out + 12, 0);
}

int xprt_ckpt_begin_write(struct colo_buf *out, uint64_t n, uint32_t flags)
{
    uint8_t b[16];

    xprt_ckpt_begin_encode(b, n, flags);
    return xprt_rec_write_buf(out, XPRT_COLO_CHECKPOINT_BEGIN, b, sizeof(b));
}

int xprt_ckpt_begin_decode(const uint8_t *body, size_t len, uint64_t *ret_n,
                           uint32_t *ret_flags)
{
    if (len != XPRT_CKPT_BODY_SIZE || colo_get_le32(body + 12))
        return -COLO_ESTREAM_CORRUPT;
    *ret_n = colo_get_le64(body);
    *ret_flags = colo_get_le32(body + 8);
    if (*ret_flags & ~XPRT_CKPT_FLAG_FULL)
        return -COLO_ESTREAM_UNSUPPORTED;
    return 0;
}

int xprt_ckpt_end_write(struct colo_buf *out, uint64_t n)
{
    uint8_t b[16];

    xprt_ckpt_end_encode(b, n);
    return xprt_rec_write_buf(out, XPRT_COLO_CHECKPOINT_END, b, sizeof(b));
}

int xprt_ckpt_end_decode(const uint8_t *body, size_t len, uint64_t *ret_n)
{
    if (len != XPRT_CKPT_BODY_SIZE || colo_get_le64(body + 8))
        return -COLO_ESTREAM_CORRUPT;
    *ret_n = colo_get_le64(body);
    return 0;
}

void xprt_handover_encode(uint8_t out[16], uint64_t n, uint32_t step)
{
    put_le64(out, n);
    colo_put_le32(out + 8, step);
    colo_put_le32(out + 12, 0);
}

int xprt_handover_decode(const uint8_t *body, size_t len, uint64_t *ret_n,
                         uint32_t *ret_step)
{
    if (len != XPRT_CKPT_BODY_SIZE || colo_get_le32(body + 12))
        return -COLO_ESTREAM_CORRUPT;
    *ret_n = colo_get_le64(body);
    *ret_step = colo_get_le32(body + 8);
    if (*ret_step != XPRT_HANDOVER_READY && *ret_step != XPRT_HANDOVER_GO)
        return -COLO_ESTREAM_CORRUPT;
    return 0;
}

int xprt_ack_write(struct colo_buf *out, uint64_t n, int32_t status)
{
    uint8_t b[16];

    xprt_ack_encode(b, n, status);
    return xprt_rec_write_buf(out, XPRT_COLO_ACK, b, sizeof(b));
}

int xprt_ack_decode(const uint8_t *body, size_t len, uint64_t *ret_n,
                    int32_t *ret_status)
{
    if (len != XPRT_CKPT_BODY_SIZE || colo_get_le32(body + 12))
        return -COLO_ESTREAM_CORRUPT;
    *ret_n = colo_get_le64(body);
    *ret_status = (int32_t)colo_get_le32(body + 8);
    if (*ret_status > 0)
        return -COLO_ESTREAM_CORRUPT;
    return 0;
}

/* ---- ERROR ------------------------------------------------------------ */

int xprt_error_write(struct colo_buf *out, int32_t code, const char *text)
{
    uint8_t head[8];
    size_t tl = text ? strnlen(text, XPRT_COLO_ERROR_TEXT_MAX) : 0;
    struct iovec iov[2] = {{head, sizeof(head)}, {(void *)text, tl}};

    colo_put_le32(head, (uint32_t)code);
    colo_put_le32(head + 4, (uint32_t)tl);
    return xprt_rec_writev_buf(out, XPRT_COLO_ERROR, iov, tl ? 2 : 1);
}

int xprt_error_decode(const uint8_t *body, size_t len, int32_t *ret_code,
                      char *ret_text, size_t textsz)
{
    uint32_t tl;
    size_t n;

    if (len < 8)
        return -COLO_ESTREAM_CORRUPT;
    tl = colo_get_le32(body + 4);
    if (tl > XPRT_COLO_ERROR_TEXT_MAX)
        return -COLO_ESTREAM_TOO_BIG;
    if (len != 8 + (size_t)tl || memchr(body + 8, '\0', tl))
        return -COLO_ESTREAM_CORRUPT;
    *ret_code = (int32_t)colo_get_le32(body);
    if (ret_text && textsz) {
        n = tl < textsz - 1 ? tl : textsz - 1;
        memcpy(ret_text, body + 8, n);
        ret_text[n] = '\0';
    }
    return 0;
}

/* ---- generic check ---------------------------------------------------- */

/* ---- DISK_INFO, DISK_WRITE ------------------------------------------- */

#define DISK_INFO_FIXED 24u

int xprt_disk_info_write(struct colo_buf *out, const struct xprt_disk_info *d)
{
    uint8_t b[DISK_INFO_FIXED + XPRT_DISK_ID_MAX];
    size_t il = strnlen(d->id, sizeof(d->id));

    if (d->disk >= XPRT_DISK_MAX || il > XPRT_DISK_ID_MAX || d->flags ||
        d->size > XPRT_DISK_SIZE_MAX)
        return -EINVAL;
    colo_put_le32(b, d->disk);
    colo_put_le32(b + 4, 0);
    put_le64(b + 8, d->size);
    colo_put_le32(b + 16, (uint32_t)il);
    colo_put_le32(b + 20, 0);
    memcpy(b + DISK_INFO_FIXED, d->id, il);
    return xprt_rec_write_buf(out, XPRT_COLO_DISK_INFO, b,
                              DISK_INFO_FIXED + il);
}

int xprt_disk_info_decode(const uint8_t *body, size_t len,
                          struct xprt_disk_info *ret)
{
    uint32_t il;

    memset(ret, 0, sizeof(*ret));
    if (len < DISK_INFO_FIXED)
        return -COLO_ESTREAM_CORRUPT;
    ret->disk = colo_get_le32(body);
    ret->flags = colo_get_le32(body + 4);
    ret->size = colo_get_le64(body + 8);
    il = colo_get_le32(body + 16);
    if (il > XPRT_DISK_ID_MAX || ret->size > XPRT_DISK_SIZE_MAX ||
        ret->disk >= XPRT_DISK_MAX)
        return -COLO_ESTREAM_TOO_BIG;
    if (len != DISK_INFO_FIXED + il || ret->flags || colo_get_le32(body + 20) ||
        memchr(body + DISK_INFO_FIXED, '\0', il))
        return -COLO_ESTREAM_CORRUPT;
    memcpy(ret->id, body + DISK_INFO_FIXED, il);
    ret->id[il] = '\0';
    return 0;
}

void xprt_disk_write_head_encode(uint8_t out[XPRT_DISK_WRITE_HEAD_SIZE],
                                 uint32_t disk, uint32_t flags, uint64_t offset,
                                 uint32_t length)
{
    colo_put_le32(out, disk);
    colo_put_le32(out + 4, flags);
    put_le64(out + 8, offset);
    colo_put_le32(out + 16, length);
    colo_put_le32(out + 20, 0);
}

static int disk_write_check(uint32_t disk, uint32_t flags, uint64_t offset,
                            uint32_t length)
{
    uint32_t max = (flags & XPRT_DISK_WRITE_ZEROES) ? XPRT_DISK_ZEROES_MAX
                                                    : XPRT_DISK_WRITE_MAX;

    if (disk >= XPRT_DISK_MAX || length > max)
        return -COLO_ESTREAM_TOO_BIG;
    if (!length || (flags & ~XPRT_DISK_WRITE_ZEROES) ||
        offset > (1ull << 63) - length)
        return -COLO_ESTREAM_CORRUPT;
    return 0;
}

int xprt_disk_write_write(struct colo_buf *out, uint32_t disk, uint32_t flags,
                          uint64_t offset, const void *data, uint32_t length)
{
    uint8_t h[XPRT_DISK_WRITE_HEAD_SIZE];
    bool zeroes = flags & XPRT_DISK_WRITE_ZEROES;
    struct iovec iov[2] = {{h, sizeof(h)}, {(void *)data, zeroes ? 0 : length}};

    if (disk_write_check(disk, flags, offset, length) < 0 || (!zeroes && !data))
        return -EINVAL;
    xprt_disk_write_head_encode(h, disk, flags, offset, length);
    return xprt_rec_writev_buf(out, XPRT_COLO_DISK_WRITE, iov, zeroes ? 1 : 2);
}

int xprt_disk_write_decode(const uint8_t *body, size_t len,
                           struct xprt_disk_write_view *ret)
{
    int rc;

    memset(ret, 0, sizeof(*ret));
    if (len < XPRT_DISK_WRITE_HEAD_SIZE)
        return -COLO_ESTREAM_CORRUPT;
    ret->disk = colo_get_le32(body);
    ret->flags = colo_get_le32(body + 4);
    ret->offset = colo_get_le64(body + 8);
    ret->length = colo_get_le32(body + 16);
    rc = disk_write_check(ret->disk, ret->flags, ret->offset, ret->length);
    if (rc < 0)
        return rc;
    if (colo_get_le32(body + 20))
        return -COLO_ESTREAM_CORRUPT;
    if (ret->flags & XPRT_DISK_WRITE_ZEROES) {
        if (len != XPRT_DISK_WRITE_HEAD_SIZE)
            return -COLO_ESTREAM_CORRUPT;
        return 0;
    }
    if (len != XPRT_DISK_WRITE_HEAD_SIZE + (size_t)ret->length)
        return -COLO_ESTREAM_CORRUPT;
    ret->data = body + XPRT_DISK_WRITE_HEAD_SIZE;
    return 0;
}

int xprt_colo_rec_check(uint32_t type, const uint8_t *body, size_t len)
{
    union {
        struct xprt_colo_hello hello;
        struct xprt_ram_pages_view pages;
        struct xprt_disk_info disk;
        struct xprt_disk_write_view dw;
    } u;
    const char *json;
    const uint8_t *blob;
    size_t sz;
    uint64_t n;
    uint32_t f;
    int32_t st;

    switch (type) {
    case XPRT_COLO_HELLO:
        return xprt_colo_hello_decode(body, len, &u.hello);
    case XPRT_COLO_VM_CONFIG:
        return xprt_colo_config_decode(body, len, &json, &sz);
    case XPRT_COLO_RAM_PAGES:
        return xprt_ram_pages_decode(body, len, 0, 0, &u.pages);
    case XPRT_COLO_DEVICE_STATE:
        return xprt_devstate_decode(body, len, &f, &blob, &sz);
    case XPRT_COLO_CHECKPOINT_BEGIN:
        return xprt_ckpt_begin_decode(body, len, &n, &f);
    case XPRT_COLO_CHECKPOINT_END:
        return xprt_ckpt_end_decode(body, len, &n);
    case XPRT_COLO_ACK:
        return xprt_ack_decode(body, len, &n, &st);
    case XPRT_COLO_HEARTBEAT:
        return len == 8 ? 0 : -COLO_ESTREAM_CORRUPT;
    case XPRT_COLO_ERROR:
        return xprt_error_decode(body, len, &st, NULL, 0);
    case XPRT_COLO_DISK_INFO:
        return xprt_disk_info_decode(body, len, &u.disk);
    case XPRT_COLO_DISK_WRITE:
        return xprt_disk_write_decode(body, len, &u.dw);
    case XPRT_COLO_HANDOVER:
        return xprt_handover_decode(body, len, &n, &f);
    default:
        if (xprt_is_colo_type(type) && (type & XPRT_COLO_OPTIONAL_BIT) &&
            type < XPRT_COLO_LINK_FIRST)
            return 0;
        return -COLO_ESTREAM_UNSUPPORTED;
    }
}
