/*
 * fuzz-ctl: the control socket's request parser. Whatever a local client
 * sends, a line is either refused with a reason or becomes an object with
 * a "cmd" string; nothing crashes, nothing leaks, over-long lines are
 * refused.
 */
#include "ctl.h"

#include "common/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;

    while (p <= end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        json_t *req = NULL;
        const char *why = NULL;
        int rc = orch_ctl_parse_request(p, len, &req, &why);

        if (rc == 0) {
            if (!json_is_string(json_object_get(req, "cmd")))
                abort();
        } else if (rc != -COLO_EPEER_REJECTED || !why || req) {
            abort();
        }
        json_decref(req);
        if (!nl)
            break;
        p = nl + 1;
    }
    return 0;
}
