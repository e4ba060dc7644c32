#include "orch.h"

#include "common/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

int orch_exit_code(int rc)
{
    if (rc >= 0)
        return ORCH_EXIT_OK;
    switch (-rc) {
    case COLO_ECONFIG:
        return ORCH_EXIT_CONFIG;
    case COLO_EAUTH:
    case COLO_EPEER_GONE:
    case COLO_EPEER_CLOSED:
    case COLO_EPEER_REJECTED:
    case ECONNREFUSED:
    case ECONNRESET:
    case EHOSTUNREACH:
    case ENETUNREACH:
        return ORCH_EXIT_PEER;
    case COLO_EQEMU_DIED:
    case COLO_EQMP_DISCONNECTED:
    case COLO_EQMP_PROTOCOL:
    case COLO_EQMP_BUSY:
        return ORCH_EXIT_QEMU;
    case COLO_ESTREAM_TRUNCATED:
    case COLO_ESTREAM_CORRUPT:
    case COLO_ESTREAM_TOO_BIG:
    case COLO_ESTREAM_UNSUPPORTED:
        return ORCH_EXIT_STREAM;
    default:
        if (colo_err_is_qmp_class(rc))
            return ORCH_EXIT_QEMU;
        return ORCH_EXIT_FAIL;
    }
}

int orch_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "colo: %s%s", cmd ? cmd : "", cmd ? ": " : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'colo %s--help'.\n", cmd ? "COMMAND " : "");
    return ORCH_EXIT_USAGE;
}
