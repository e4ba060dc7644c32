/*
 * Whole-domain Xen save and restore on the loop: the libxl v2 stream
 * around libxc's (libxl_stream_write.c / libxl_stream_read.c), the
 * libxenguest helper (xen_helper.h) and the domain operations
 * (xen_dom.h) joined into one asynchronous job. The stream goes to or
 * comes from any blocking fd: a save file (after the xl header, which the
 * caller writes) or a TCP link (migration).
 *
 * Save, in execution order:
 *   1. libxl header + LIBXC_CONTEXT written
 *   2. helper started: xc_domain_save (live unless told otherwise)
 *        precopy_policy -> colo's policy (libxc's: stop after 5 rounds or
 *                          under 50 dirty pages)
 *        suspend        -> ckpt_xen_dom_suspend_start, deadline
 *        switch_qemu_logdirty -> ok (PV/PVH: no device model)
 *   3. helper done -> libxl END written
 *   4. the domain is destroyed (or resumed in place: keep_running)
 *   On failure after the guest suspended it is resumed in place, so a
 *   failed save never loses the running guest.
 *
 * Restore, in execution order:
 *   1. libxl header + LIBXC_CONTEXT read (blocking reads on fd)
 *   2. the empty domain created (ckpt_xen_dom_create)
 *   3. helper started: xc_domain_restore; restore_results -> gfns
 *   4. libxl records up to END read (PV/PVH carry none)
 *   5. xenstore nodes + introduce (ckpt_xen_dom_finish), unpause
 *   On failure the half-made domain is destroyed.
 *
 * States: IDLE -> start -> RUNNING -> done(rc) -> FINISHED. cancel kills
 * the helper; the rules above still apply (resume / destroy), then done
 * gets -COLO_ECANCELLED. done fires exactly once per successful start,
 * from the loop, as the job's last act (the owner may free it inside).
 */
#ifndef COLO_CHECKPOINT_XEN_JOB_H
#define COLO_CHECKPOINT_XEN_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include "checkpoint/xen_dom.h"

struct event_base;
struct ckpt_xen_job;

typedef void ckpt_xen_job_done(struct ckpt_xen_job *j, int rc, const char *why,
                               void *opaque);
typedef void ckpt_xen_job_progress(struct ckpt_xen_job *j, uint64_t done,
                                   uint64_t total, const char *what,
                                   void *opaque);

struct ckpt_xen_job_common {
    const char *helper_exe;          /* NULL: this program */
    const char *const *helper_args;  /* NULL: "__xen-helper" */
    ckpt_xen_job_done *done;         /* required */
    ckpt_xen_job_progress *progress; /* optional */
    void *opaque;
};

struct ckpt_xen_save_params {
    uint32_t domid;
    int fd;                 /* borrowed, blocking */
    bool live;              /* precopy while the guest runs */
    bool keep_running;      /* resume in place after the save (xl save -c) */
    bool leave_suspended;   /* neither: the caller destroys or resumes it
                             * (migration, after the target has it) */
    int suspend_timeout_ms; /* 0: 60 s (libxl's) */
};

struct ckpt_xen_restore_params {
    int fd;                        /* borrowed, blocking */
    struct ckpt_xen_newdom newdom; /* copied */
    const char *config_json;       /* copied; NULL: none recorded */
    bool paused;                   /* leave it paused */
};

int ckpt_xen_save_start(struct ckpt_xen_job **ret, struct event_base *base,
                        struct ckpt_xen_dom *d,
                        const struct ckpt_xen_save_params *p,
                        const struct ckpt_xen_job_common *c);
int ckpt_xen_restore_start(struct ckpt_xen_job **ret, struct event_base *base,
                           struct ckpt_xen_dom *d,
                           const struct ckpt_xen_restore_params *p,
                           const struct ckpt_xen_job_common *c);
/* The restored domain (valid once done(0) ran). */
uint32_t ckpt_xen_job_domid(const struct ckpt_xen_job *j);
/* Milliseconds the guest was suspended (save) or paused (restore). */
uint64_t ckpt_xen_job_downtime_ms(const struct ckpt_xen_job *j);
void ckpt_xen_job_cancel(struct ckpt_xen_job *j);
void ckpt_xen_job_free(struct ckpt_xen_job *j); /* NULL ok; no done */

#endif
