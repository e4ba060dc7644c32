/*
 * A growable byte buffer with a hard cap. Sizes a peer controls always go
 * through a cap: colo_buf_append() fails with -COLO_ESTREAM_TOO_BIG rather
 * than grow past it.
 */
#ifndef COLO_COMMON_BUF_H
#define COLO_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

struct colo_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max; /* 0: no cap */
};

void colo_buf_init(struct colo_buf *b, size_t max);
void colo_buf_dispose(struct colo_buf *b); /* idempotent */
void colo_buf_reset(struct colo_buf *b);   /* len = 0, memory kept */
int colo_buf_reserve(struct colo_buf *b, size_t extra);
int colo_buf_append(struct colo_buf *b, const void *p, size_t len);
/* Hand the bytes to the caller (who frees them); b becomes empty. */
uint8_t *colo_buf_steal(struct colo_buf *b, size_t *ret_len);

/* Fixed-width wire integers, written and read field by field. */
void colo_put_le32(uint8_t *p, uint32_t v);
void colo_put_le64(uint8_t *p, uint64_t v);
void colo_put_be32(uint8_t *p, uint32_t v);
uint32_t colo_get_le32(const uint8_t *p);
uint64_t colo_get_le64(const uint8_t *p);
uint32_t colo_get_be32(const uint8_t *p);

#endif
