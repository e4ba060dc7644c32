/*
 * Numbered fault points, in the manner of CRIU_FAULT. COLO_FAULT=<n>[,<n>..]
 * in the environment makes colo_fault(n) return true at point n; the
 * caller then fails (-COLO_EFAULT_INJECTED) or dies (COLO_FAULT_ACTION=
 * "exit" makes colo_fault() _exit(99) itself), as the point documents.
 *
 * COLO_FAULT_CKPT=<n> restricts colo_fault_ckpt() points to checkpoints
 * >= n.
 *
 * Off by default; the environment is read once, and an unset variable
 * costs one branch on a cached flag.
 *
 * The point numbers are listed here so tests and docs share them.
 */
#ifndef COLO_COMMON_FAULT_H
#define COLO_COMMON_FAULT_H

#include <stdbool.h>
#include <stdint.h>

enum colo_fault_point {
    COLO_FAULT_NONE = 0,
    COLO_FAULT_BEFORE_SUSPEND = 1,
    COLO_FAULT_AFTER_SUSPEND = 2,
    COLO_FAULT_MID_PAGES = 3,
    COLO_FAULT_BEFORE_CKPT_END = 4,
    COLO_FAULT_AFTER_CKPT_END = 5,
    COLO_FAULT_BEFORE_ACK = 6,
    COLO_FAULT_AFTER_ACK = 7,
    COLO_FAULT_DEVICE_LOAD = 8,
    COLO_FAULT_FAILOVER = 9,
    COLO_FAULT_MID_DISK = 10, /* between two DISK_WRITEs of a checkpoint
                                 (or of the full disk sync) */
    /* Migrate's handover (docs/protocol.md 5.4). 11, source: the target
     * said READY (the final device state is loaded there): the link is
     * cut instead of GO; the source lives on. 12, target: the device
     * state is loaded, before READY: fail (or die). 13, target: GO
     * arrived: `cont` fails as if QEMU refused it (or the target dies
     * with GO in hand). */
    COLO_FAULT_MIGRATE_CUT = 11,
    COLO_FAULT_MIGRATE_LOADED = 12,
    COLO_FAULT_MIGRATE_CONT = 13,
    COLO_FAULT_MAX
};

bool colo_fault_enabled_slow(int point);
extern int colo_fault_armed; /* part of the log/debug configuration */

static inline bool colo_fault(int point)
{
    if (__builtin_expect(!colo_fault_armed, 1))
        return false;
    return colo_fault_enabled_slow(point);
}

/* The same at checkpoint ckpt: with COLO_FAULT_CKPT=<n> in the
 * environment the points fire only from checkpoint n on (so a point of the
 * checkpoint loop can be hit in steady state, not only at checkpoint 1). */
bool colo_fault_ckpt_slow(int point, int64_t ckpt);

static inline bool colo_fault_ckpt(int point, int64_t ckpt)
{
    if (__builtin_expect(!colo_fault_armed, 1))
        return false;
    return colo_fault_ckpt_slow(point, ckpt);
}

/* Re-read the environment (tests). */
void colo_fault_reload(void);

#endif
