/*
 * fuzz-xlheader: xl save-file header parser. Every prefix of the input must
 * give "need more" (0) or the same error as the whole, and a parsed config
 * must lie inside the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "transport/xen_stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct xprt_xl_hdr h;
    ssize_t whole = xprt_xl_hdr_parse(data, size, 1u << 16, &h);

    if (whole > 0) {
        if ((size_t)whole > size)
            __builtin_trap();
        if (h.config &&
            ((const uint8_t *)h.config < data ||
             (const uint8_t *)h.config + h.config_len > data + size))
            __builtin_trap();
        if (h.config)
            (void)memchr(h.config, '{', h.config_len);
    }
    /* A prefix never succeeds where the whole failed. */
    if (size > 1) {
        ssize_t part = xprt_xl_hdr_parse(data, size / 2, 1u << 16, &h);

        if (whole < 0 && part > 0)
            __builtin_trap();
    }
    return 0;
}
