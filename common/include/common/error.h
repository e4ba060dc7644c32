/*
 * colo's one error vocabulary.
 *
 * Every function that can fail returns int: >= 0 on success, a negative
 * value on failure. A negative value is either -errno (the operating system
 * said no) or -COLO_E* (colo, a peer or QEMU said no). The COLO_E* values
 * start above every errno so the two ranges never collide.
 *
 * Keep apart "QEMU rejected the command" (COLO_EQMP_* classes: the
 * connection is fine) from "the connection failed" (COLO_EQMP_DISCONNECTED,
 * COLO_EQMP_PROTOCOL, -ETIMEDOUT ...), mirroring libxl's ERROR_QMP_*.
 */
#ifndef COLO_COMMON_ERROR_H
#define COLO_COMMON_ERROR_H

enum colo_error {
    COLO_EBASE = 4096,

    /* QEMU answered with an error reply; the QMP connection is healthy. */
    COLO_EQMP_GENERIC = COLO_EBASE, /* GenericError */
    COLO_EQMP_COMMAND_NOT_FOUND,    /* CommandNotFound */
    COLO_EQMP_DEVICE_NOT_ACTIVE,    /* DeviceNotActive */
    COLO_EQMP_DEVICE_NOT_FOUND,     /* DeviceNotFound */
    COLO_EQMP_KVM_MISSING_CAP,      /* KVMMissingCap */
    COLO_EQMP_UNKNOWN_CLASS,        /* an error class colo does not know */

    /* The QMP connection itself failed: every pending command fails. */
    COLO_EQMP_DISCONNECTED, /* EOF or socket error */
    COLO_EQMP_PROTOCOL,     /* bad JSON, oversized or bad message */
    COLO_EQMP_BUSY,         /* another client holds the monitor */

    /* Streams and records. */
    COLO_ESTREAM_TRUNCATED,   /* EOF in the middle of a record */
    COLO_ESTREAM_CORRUPT,     /* bad magic, padding, order, ... */
    COLO_ESTREAM_TOO_BIG,     /* a length over its cap */
    COLO_ESTREAM_UNSUPPORTED, /* version or mandatory feature */

    /* Links between hosts. */
    COLO_EAUTH,          /* the peer failed authentication */
    COLO_EPEER_GONE,     /* missed heartbeats */
    COLO_EPEER_CLOSED,   /* the peer closed the link (EOF) */
    COLO_EPEER_REJECTED, /* the peer said no to a request */

    /* Everything else. */
    COLO_ECONFIG,         /* invalid configuration */
    COLO_EQEMU_DIED,      /* the QEMU process exited */
    COLO_EXEN,            /* a libxc/libxl-level failure */
    COLO_EHELPER,         /* a helper process failed */
    COLO_EFAULT_INJECTED, /* a COLO_FAULT point fired */
    COLO_ECANCELLED,      /* cancelled by its owner */
    COLO_EINTERNAL,       /* a bug: an impossible state */

    COLO_EMAX
};

/* A static, human-readable message for any return code (rc <= 0). */
const char *colo_strerror(int rc);

/* A short stable name ("EQMP_GENERIC", "ENOENT"...) for JSON output. */
const char *colo_errname(int rc);

/* True for the QMP error classes: QEMU said no, the link is fine. */
int colo_err_is_qmp_class(int rc);

#endif
