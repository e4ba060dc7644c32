#include "common/buf.h"
#include "common/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void colo_buf_init(struct colo_buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void colo_buf_dispose(struct colo_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void colo_buf_reset(struct colo_buf *b)
{
    b->len = 0;
}

int colo_buf_reserve(struct colo_buf *b, size_t extra)
{
    size_t need, ncap;
    uint8_t *nd;

    if (extra > SIZE_MAX - b->len)
        return -COLO_ESTREAM_TOO_BIG;
    need = b->len + extra;
    if (b->max && need > b->max)
        return -COLO_ESTREAM_TOO_BIG;
    if (need <= b->cap)
        return 0;
    ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    if (b->max && ncap > b->max)
        ncap = b->max;
    nd = realloc(b->data, ncap);
    if (!nd)
        return -ENOMEM;
    b->data = nd;
    b->cap = ncap;
    return 0;
}

int colo_buf_append(struct colo_buf *b, const void *p, size_t len)
{
    int rc = colo_buf_reserve(b, len);

    if (rc < 0)
        return rc;
    if (len)
        memcpy(b->data + b->len, p, len);
    b->len += len;
    return 0;
}

uint8_t *colo_buf_steal(struct colo_buf *b, size_t *ret_len)
{
    uint8_t *d = b->data;

    if (ret_len)
        *ret_len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

void colo_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void colo_put_le64(uint8_t *p, uint64_t v)
{
    colo_put_le32(p, (uint32_t)v);
    colo_put_le32(p + 4, (uint32_t)(v >> 32));
}

void colo_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

uint32_t colo_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

uint64_t colo_get_le64(const uint8_t *p)
{
    return (uint64_t)colo_get_le32(p) | (uint64_t)colo_get_le32(p + 4) << 32;
}

uint32_t colo_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}
