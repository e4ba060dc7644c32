#include "common/error.h"

#include <errno.h>
#include <string.h>

struct colo_err_desc {
    const char *name;
    const char *msg;
};

static const struct colo_err_desc colo_errs[COLO_EMAX - COLO_EBASE] = {
    [COLO_EQMP_GENERIC - COLO_EBASE] = {"EQMP_GENERIC",
                                        "QEMU rejected the command"},
    [COLO_EQMP_COMMAND_NOT_FOUND -
        COLO_EBASE] = {"EQMP_COMMAND_NOT_FOUND",
                       "QEMU does not know this command"},
    [COLO_EQMP_DEVICE_NOT_ACTIVE -
        COLO_EBASE] = {"EQMP_DEVICE_NOT_ACTIVE", "QEMU device is not active"},
    [COLO_EQMP_DEVICE_NOT_FOUND -
        COLO_EBASE] = {"EQMP_DEVICE_NOT_FOUND", "QEMU device not found"},
    [COLO_EQMP_KVM_MISSING_CAP -
        COLO_EBASE] = {"EQMP_KVM_MISSING_CAP",
                       "KVM lacks a capability QEMU needs"},
    [COLO_EQMP_UNKNOWN_CLASS -
        COLO_EBASE] = {"EQMP_UNKNOWN_CLASS",
                       "QEMU returned an error of unknown class"},
    [COLO_EQMP_DISCONNECTED -
        COLO_EBASE] = {"EQMP_DISCONNECTED", "QMP connection lost"},
    [COLO_EQMP_PROTOCOL - COLO_EBASE] = {"EQMP_PROTOCOL", "QMP protocol error"},
    [COLO_EQMP_BUSY -
        COLO_EBASE] = {"EQMP_BUSY",
                       "QMP monitor busy: another client is connected"},
    [COLO_ESTREAM_TRUNCATED -
        COLO_EBASE] = {"ESTREAM_TRUNCATED",
                       "stream truncated in the middle of a record"},
    [COLO_ESTREAM_CORRUPT -
        COLO_EBASE] = {"ESTREAM_CORRUPT", "stream is corrupt"},
    [COLO_ESTREAM_TOO_BIG -
        COLO_EBASE] = {"ESTREAM_TOO_BIG", "stream record over its size cap"},
    [COLO_ESTREAM_UNSUPPORTED -
        COLO_EBASE] = {"ESTREAM_UNSUPPORTED",
                       "stream version or feature not supported"},
    [COLO_EAUTH - COLO_EBASE] = {"EAUTH", "peer failed authentication"},
    [COLO_EPEER_GONE -
        COLO_EBASE] = {"EPEER_GONE", "peer missed its heartbeats"},
    [COLO_EPEER_CLOSED -
        COLO_EBASE] = {"EPEER_CLOSED", "peer closed the connection"},
    [COLO_EPEER_REJECTED -
        COLO_EBASE] = {"EPEER_REJECTED", "peer rejected the request"},
    [COLO_ECONFIG - COLO_EBASE] = {"ECONFIG", "invalid configuration"},
    [COLO_EQEMU_DIED - COLO_EBASE] = {"EQEMU_DIED", "QEMU exited"},
    [COLO_EXEN - COLO_EBASE] = {"EXEN", "Xen operation failed"},
    [COLO_EHELPER - COLO_EBASE] = {"EHELPER", "helper process failed"},
    [COLO_EFAULT_INJECTED -
        COLO_EBASE] = {"EFAULT_INJECTED", "injected fault (COLO_FAULT)"},
    [COLO_ECANCELLED - COLO_EBASE] = {"ECANCELLED", "cancelled"},
    [COLO_EINTERNAL - COLO_EBASE] = {"EINTERNAL", "internal error (a bug)"},
};

static const struct colo_err_desc *colo_err_lookup(int rc)
{
    int e = -rc;

    if (e < COLO_EBASE || e >= COLO_EMAX)
        return NULL;
    return &colo_errs[e - COLO_EBASE];
}

const char *colo_strerror(int rc)
{
    const struct colo_err_desc *d;

    if (rc >= 0)
        return "success";
    d = colo_err_lookup(rc);
    if (d)
        return d->msg ? d->msg : "unknown colo error";
    if (-rc >= COLO_EBASE)
        return "unknown colo error";
    return strerror(-rc);
}

const char *colo_errname(int rc)
{
    const struct colo_err_desc *d;

    if (rc >= 0)
        return "OK";
    d = colo_err_lookup(rc);
    if (d)
        return d->name ? d->name : "EUNKNOWN";
    if (-rc >= COLO_EBASE)
        return "EUNKNOWN";
    return strerrorname_np(-rc) ? strerrorname_np(-rc) : "EUNKNOWN";
}

int colo_err_is_qmp_class(int rc)
{
    return rc <= -COLO_EQMP_GENERIC && rc >= -COLO_EQMP_UNKNOWN_CLASS;
}
