/*
 * fuzz-nbd: colo's NBD server connection (transport/nbd.h), fed what a
 * client sends after the greeting, whole and split in two. Invariants: the
 * same verdict for both splits; every WRITE, WRITE_ZEROES and READ the
 * callbacks see lies inside its export, and a WRITE's data is readable.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "transport/nbd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define EXPORT_SIZE (1u << 20)

static int on_write(void *arg, unsigned idx, uint64_t off, const uint8_t *d,
                    uint32_t len, uint16_t flags)
{
    (void)arg;
    (void)flags;
    if (idx > 1 || off + len > EXPORT_SIZE || len > XPRT_NBD_MAX_PAYLOAD)
        __builtin_trap();
    if (len)
        (void)memchr(d, 0x5a, len); /* the data must be readable */
    return 0;
}

static int on_zeroes(void *arg, unsigned idx, uint64_t off, uint32_t len,
                     uint16_t flags)
{
    (void)arg;
    (void)flags;
    if (idx > 1 || off + len > EXPORT_SIZE)
        __builtin_trap();
    return 0;
}

static int on_read(void *arg, unsigned idx, uint64_t off, uint8_t *out,
                   uint32_t len)
{
    (void)arg;
    if (idx > 1 || off + len > EXPORT_SIZE)
        __builtin_trap();
    memset(out, 0xA5, len);
    return 0;
}

static const struct xprt_nbd_cbs cbs = {
    .write = on_write,
    .write_zeroes = on_zeroes,
    .read = on_read,
};

static int run(const uint8_t *data, size_t size, size_t split)
{
    struct xprt_nbd_export ex[2] = {
        {"disk0", EXPORT_SIZE, false},
        {"ro", EXPORT_SIZE, true},
    };
    struct xprt_nbd_conn *c;
    struct colo_buf out;
    int rc;

    colo_buf_init(&out, 0);
    if (xprt_nbd_conn_new(ex, 2, &cbs, NULL, &out, &c) < 0)
        __builtin_trap();
    rc = xprt_nbd_conn_feed(c, data, split);
    if (rc == 0)
        rc = xprt_nbd_conn_feed(c, data + split, size - split);
    xprt_nbd_conn_free(c);
    colo_buf_dispose(&out);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int whole, half;

    whole = run(data, size, size);
    half = run(data, size, size / 2);
    if (whole != half)
        __builtin_trap();
    return 0;
}
