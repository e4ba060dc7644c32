/*
 * fuzz-stream: the stream verifier (reader + layer tracking + colo record
 * codecs) over arbitrary bytes, in every format, whole and split at a
 * data-chosen point; whole and split must agree.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "transport/colo_rec.h"
#include "transport/verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run(enum xprt_format fmt, const uint8_t *d, size_t n, size_t split)
{
    struct xprt_verifier v;
    int rc;

    /* A small cap so big lengths hit the cap path quickly. */
    xprt_verifier_init(&v, fmt, 1u << 16);
    rc = xprt_verifier_push(&v, d, split);
    if (rc == 0)
        rc = xprt_verifier_push(&v, d + split, n - split);
    if (rc == 0)
        rc = xprt_verifier_finish(&v);
    xprt_verifier_dispose(&v);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum xprt_format fmts[] = {
        XPRT_FMT_AUTO,  XPRT_FMT_RECORDS, XPRT_FMT_BACKCHANNEL, XPRT_FMT_LIBXL,
        XPRT_FMT_LIBXC, XPRT_FMT_XL,      XPRT_FMT_COLO,
    };
    enum xprt_format fmt;
    size_t split;

    if (size < 1)
        return 0;
    fmt = fmts[data[0] % (sizeof(fmts) / sizeof(fmts[0]))];
    data++;
    size--;
    split = size ? (size_t)data[0] * 7919u % (size + 1) : 0;
    if (run(fmt, data, size, size) != run(fmt, data, size, split))
        __builtin_trap(); /* the split must not change the verdict */
    /* Codecs on the raw bytes as a body. */
    for (uint32_t t = XPRT_COLO_HELLO; t <= XPRT_COLO_REC_KNOWN_LAST; t++)
        (void)xprt_colo_rec_check(t, data, size);
    return 0;
}
