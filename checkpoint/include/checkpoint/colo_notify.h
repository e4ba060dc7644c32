/*
 * The notify_dev side of QEMU's colo-compare, the way Xen's COLO proxy
 * (libxl) drives it, for COLO mode's output comparison (docs/output.md).
 * A building block: colo does not wire it into COLO mode yet.
 *
 * colo connects to the unix socket of the chardev given as colo-compare's
 * notify_dev. Frames both ways are a 4-byte big-endian length and the
 * text (no vnet header). Measured on QEMU 7.2
 * (/work/shared/experiments/qemu-colo/cmp.txt):
 *   -> COLO_USERSPACE_PROXY_INIT     <- COLO_COMPARE_GET_XEN_INIT
 *   <- DO_CHECKPOINT                 on a mismatch, and again every
 *                                    expired_scan_cycle while an old
 *                                    primary packet stays unmatched
 *   -> COLO_CHECKPOINT               releases every held primary packet
 *                                    (xen-colo-do-checkpoint does not)
 * COLO_CHECKPOINT and COLO_USERSPACE_PROXY_INIT in one write: the INIT
 * reply arrives after the flush ran, so it proves the flush.
 *
 * States: Connecting -> Handshake (INIT sent) -> Ready <-> Flushing
 *         any -> Lost (lost() once) ; free() from any.
 * Debounce: divergence() is called for the first DO_CHECKPOINT only; the
 * rest are counted and ignored until ckpt_colo_notify_rearm() (after the
 * checkpoint that answers it). DO_CHECKPOINT during a flush is ignored.
 * Every callback comes from the loop; none after free().
 */
#ifndef COLO_CHECKPOINT_COLO_NOTIFY_H
#define COLO_CHECKPOINT_COLO_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct ckpt_colo_notify;

#define CKPT_COLO_NOTIFY_MAX_FRAME 256 /* cap on a frame from QEMU */

struct ckpt_colo_notify_cbs {
    void (*ready)(void *arg, int rc); /* handshake done (0) or failed */
    void (*divergence)(void *arg);    /* debounced DO_CHECKPOINT */
    void (*flushed)(void *arg, int rc);
    void (*lost)(void *arg, int rc); /* connection gone or protocol error */
};

struct ckpt_colo_notify_stats {
    uint64_t do_checkpoint; /* DO_CHECKPOINT frames received */
    uint64_t divergences;   /* divergence() calls */
    uint64_t flushes;       /* completed flushes */
};

/* Connect to path; timeout_ms bounds the handshake and each flush
 * (0: 5000). */
int ckpt_colo_notify_new(struct event_base *base, const char *path,
                         unsigned timeout_ms,
                         const struct ckpt_colo_notify_cbs *cbs, void *arg,
                         struct ckpt_colo_notify **ret);
/* Ready only: release every held packet; flushed() when done. */
int ckpt_colo_notify_flush(struct ckpt_colo_notify *n);
void ckpt_colo_notify_rearm(struct ckpt_colo_notify *n);
void ckpt_colo_notify_get_stats(const struct ckpt_colo_notify *n,
                                struct ckpt_colo_notify_stats *ret);
void ckpt_colo_notify_free(struct ckpt_colo_notify *n); /* accepts NULL */

#endif
