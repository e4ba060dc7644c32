/*
 * Xen stream headers (libxl v2, libxc image/domain) and xl's save header.
 */
#include "transport/xen_stream.h"

#include <errno.h>
#include <string.h>

#include "common/error.h"
#include "transport/record.h"

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    colo_put_be32(p, v);
}

void xprt_libxl_hdr_encode(uint8_t out[XPRT_LIBXL_HDR_SIZE])
{
    put_be64(out, XPRT_LIBXL_IDENT);
    put_be32(out + 8, XPRT_LIBXL_VERSION);
    put_be32(out + 12, 0); /* little-endian records, not legacy */
}

int xprt_libxl_hdr_check(const uint8_t in[XPRT_LIBXL_HDR_SIZE],
                         uint32_t *ret_options)
{
    uint32_t opt = colo_get_be32(in + 12);

    if (get_be64(in) != XPRT_LIBXL_IDENT)
        return -COLO_ESTREAM_CORRUPT;
    if (colo_get_be32(in + 8) != XPRT_LIBXL_VERSION)
        return -COLO_ESTREAM_UNSUPPORTED;
    if (opt & ~(XPRT_LIBXL_OPT_BIG_ENDIAN | XPRT_LIBXL_OPT_LEGACY))
        return -COLO_ESTREAM_CORRUPT;
    if (opt & XPRT_LIBXL_OPT_BIG_ENDIAN)
        return -COLO_ESTREAM_UNSUPPORTED;
    if (ret_options)
        *ret_options = opt;
    return 0;
}

void xprt_libxc_ihdr_encode(uint8_t out[XPRT_LIBXC_IHDR_SIZE], uint32_t version)
{
    memset(out, 0, XPRT_LIBXC_IHDR_SIZE);
    put_be64(out, XPRT_LIBXC_MARKER);
    put_be32(out + 8, XPRT_LIBXC_IDENT);
    put_be32(out + 12, version);
    put_be16(out + 16, 0); /* little-endian */
}

int xprt_libxc_ihdr_check(const uint8_t in[XPRT_LIBXC_IHDR_SIZE],
                          uint32_t *ret_version)
{
    uint32_t version = colo_get_be32(in + 12);
    uint16_t opt = get_be16(in + 16);

    if (get_be64(in) != XPRT_LIBXC_MARKER ||
        colo_get_be32(in + 8) != XPRT_LIBXC_IDENT)
        return -COLO_ESTREAM_CORRUPT;
    if (version < 2 || version > 3)
        return -COLO_ESTREAM_UNSUPPORTED;
    if (opt & ~1u)
        return -COLO_ESTREAM_CORRUPT;
    if (opt & 1u)
        return -COLO_ESTREAM_UNSUPPORTED;
    if (get_be16(in + 18) || colo_get_be32(in + 20))
        return -COLO_ESTREAM_CORRUPT;
    if (ret_version)
        *ret_version = version;
    return 0;
}

void xprt_libxc_dhdr_encode(uint8_t out[XPRT_LIBXC_DHDR_SIZE],
                            const struct xprt_libxc_dhdr *d)
{
    colo_put_le32(out, d->type);
    put_le16(out + 4, d->page_shift);
    put_le16(out + 6, 0);
    colo_put_le32(out + 8, d->xen_major);
    colo_put_le32(out + 12, d->xen_minor);
}

int xprt_libxc_dhdr_decode(const uint8_t in[XPRT_LIBXC_DHDR_SIZE],
                           struct xprt_libxc_dhdr *ret)
{
    ret->type = colo_get_le32(in);
    ret->page_shift = get_le16(in + 4);
    ret->xen_major = colo_get_le32(in + 8);
    ret->xen_minor = colo_get_le32(in + 12);
    if (ret->type < XPRT_LIBXC_DOM_X86_PV || ret->type > XPRT_LIBXC_DOM_ARM)
        return -COLO_ESTREAM_UNSUPPORTED;
    if (get_le16(in + 6))
        return -COLO_ESTREAM_CORRUPT;
    if (ret->page_shift < 12 || ret->page_shift > 21)
        return -COLO_ESTREAM_CORRUPT;
    return 0;
}

int xprt_emulator_hdr_decode(const uint8_t *body, size_t len, uint32_t *ret_id,
                             uint32_t *ret_index)
{
    if (len < 8)
        return -COLO_ESTREAM_CORRUPT;
    *ret_id = colo_get_le32(body);
    *ret_index = colo_get_le32(body + 4);
    return 0;
}

void xprt_emulator_hdr_encode(uint8_t out[8], uint32_t id, uint32_t index)
{
    colo_put_le32(out, id);
    colo_put_le32(out + 4, index);
}

void xprt_ckpt_state_encode(uint8_t out[4], uint32_t id)
{
    colo_put_le32(out, id);
}

int xprt_ckpt_state_decode(const uint8_t *body, size_t len, uint32_t *ret_id)
{
    if (len != 4)
        return -COLO_ESTREAM_CORRUPT;
    *ret_id = colo_get_le32(body);
    if (*ret_id > XPRT_CKPT_SVM_RESUMED)
        return -COLO_ESTREAM_CORRUPT;
    return 0;
}

int xprt_libxc_min_stream(struct colo_buf *out)
{
    uint8_t ih[XPRT_LIBXC_IHDR_SIZE], dh[XPRT_LIBXC_DHDR_SIZE];
    struct xprt_libxc_dhdr d = {.type = XPRT_LIBXC_DOM_X86_HVM,
                                .page_shift = 12,
                                .xen_major = 4,
                                .xen_minor = 17};
    size_t before = out->len;
    int rc;

    xprt_libxc_ihdr_encode(ih, XPRT_LIBXC_VERSION);
    xprt_libxc_dhdr_encode(dh, &d);
    rc = colo_buf_append(out, ih, sizeof(ih));
    if (rc >= 0)
        rc = colo_buf_append(out, dh, sizeof(dh));
    if (rc >= 0)
        rc = xprt_rec_write_buf(out, XPRT_LIBXC_END, NULL, 0);
    if (rc < 0)
        out->len = before;
    return rc < 0 ? rc : 0;
}

/* ---------------------------------------------------------------------- */
/* xl save header                                                          */

int xprt_xl_hdr_write(struct colo_buf *out, const char *json, size_t json_len)
{
    uint8_t fixed[XPRT_XL_FIXED_SIZE], lenbuf[4];
    uint32_t mandatory = XPRT_XL_MANDATORY_STREAMV2, opt_len = 0;
    size_t before = out->len;
    const uint8_t nul = 0;
    int rc;

    if (json) {
        if (json_len + 1 + 4 > XPRT_XL_OPT_MAX_DEFAULT)
            return -COLO_ESTREAM_TOO_BIG;
        mandatory |= XPRT_XL_MANDATORY_JSON;
        opt_len = (uint32_t)(4 + json_len + 1);
    }
    memcpy(fixed, XPRT_XL_MAGIC, XPRT_XL_MAGIC_SIZE);
    colo_put_le32(fixed + 32, XPRT_XL_BYTEORDER);
    colo_put_le32(fixed + 36, mandatory);
    colo_put_le32(fixed + 40, 0);
    colo_put_le32(fixed + 44, opt_len);
    rc = colo_buf_append(out, fixed, sizeof(fixed));
    if (rc >= 0 && json) {
        colo_put_le32(lenbuf, (uint32_t)(json_len + 1));
        rc = colo_buf_append(out, lenbuf, 4);
        if (rc >= 0)
            rc = colo_buf_append(out, json, json_len);
        if (rc >= 0)
            rc = colo_buf_append(out, &nul, 1);
    }
    if (rc < 0)
        out->len = before;
    return rc < 0 ? rc : 0;
}

ssize_t xprt_xl_hdr_parse(const uint8_t *p, size_t len, uint32_t max_opt,
                          struct xprt_xl_hdr *ret)
{
    uint32_t (*get32)(const uint8_t *) = colo_get_le32;
    uint32_t cfg_len;

    if (!max_opt)
        max_opt = XPRT_XL_OPT_MAX_DEFAULT;
    memset(ret, 0, sizeof(*ret));
    if (len < XPRT_XL_MAGIC_SIZE + 4) {
        /* Reject a wrong magic as soon as we can see it. */
        size_t n = len < XPRT_XL_MAGIC_SIZE ? len : XPRT_XL_MAGIC_SIZE;

        if (memcmp(p, XPRT_XL_MAGIC, n))
            return -COLO_ESTREAM_CORRUPT;
        return 0;
    }
    if (memcmp(p, XPRT_XL_MAGIC, XPRT_XL_MAGIC_SIZE))
        return -COLO_ESTREAM_CORRUPT;
    if (colo_get_le32(p + 32) != XPRT_XL_BYTEORDER) {
        if (colo_get_be32(p + 32) != XPRT_XL_BYTEORDER)
            return -COLO_ESTREAM_CORRUPT;
        get32 = colo_get_be32;
        ret->swapped = true;
    }
    if (len < XPRT_XL_FIXED_SIZE)
        return 0;
    ret->mandatory_flags = get32(p + 36);
    ret->optional_flags = get32(p + 40);
    ret->optional_data_len = get32(p + 44);
    if (ret->mandatory_flags & ~XPRT_XL_MANDATORY_KNOWN)
        return -COLO_ESTREAM_UNSUPPORTED;
    if (!(ret->mandatory_flags & XPRT_XL_MANDATORY_STREAMV2))
        return -COLO_ESTREAM_UNSUPPORTED;
    if (ret->optional_data_len > max_opt)
        return -COLO_ESTREAM_TOO_BIG;
    if (len < XPRT_XL_FIXED_SIZE + (size_t)ret->optional_data_len)
        return 0;
    if (ret->mandatory_flags & XPRT_XL_MANDATORY_JSON) {
        const uint8_t *opt = p + XPRT_XL_FIXED_SIZE;

        if (ret->optional_data_len < 4)
            return -COLO_ESTREAM_CORRUPT;
        cfg_len = get32(opt);
        if (cfg_len > ret->optional_data_len - 4)
            return -COLO_ESTREAM_CORRUPT;
        ret->config = (const char *)opt + 4;
        ret->config_len = cfg_len;
        /* xl counts the trailing NUL; JSON itself has none. */
        if (cfg_len && ret->config[cfg_len - 1] == '\0')
            ret->config_len--;
        if (memchr(ret->config, '\0', ret->config_len))
            return -COLO_ESTREAM_CORRUPT;
    }
    return (ssize_t)(XPRT_XL_FIXED_SIZE + ret->optional_data_len);
}
