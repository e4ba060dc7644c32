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
#include <stddef.h>
#include <stdint.h>

#include "checkpoint/xen_dom.h"

struct event_base;
struct ckpt_xen_job;

typedef void ckpt_xen_job_done(struct ckpt_xen_job *j, int rc, const char *why,
                               void *opaque);
typedef void ckpt_xen_job_progress(struct ckpt_xen_job *j, uint64_t done,
                                   uint64_t total, const char *what,
                                   void *opaque);

/* Checkpointed streams: checkpoint n was acknowledged by the target
 * (save) or committed and acknowledged (restore); pause_us is the guest's
 * pause for it (save side). */
typedef void ckpt_xen_job_checkpoint(struct ckpt_xen_job *j, uint64_t n,
                                     uint64_t pause_us, void *opaque);

struct ckpt_xen_job_common {
    const char *helper_exe;              /* NULL: this program */
    const char *const *helper_args;      /* NULL: "__xen-helper" */
    ckpt_xen_job_done *done;             /* required */
    ckpt_xen_job_progress *progress;     /* optional */
    ckpt_xen_job_checkpoint *checkpoint; /* optional */
    void *opaque;
};

/*
 * Remus (stream REMUS), the primary: after the live first round the guest
 * is suspended, its dirty pages sent, it is resumed in place (postcopy),
 * then libxl's CHECKPOINT_END goes out and the target's ACK(n) is awaited
 * (ack_timeout_ms; the first one waits longer: the target commits the
 * whole image). Then, after interval_ms, the next checkpoint. No ACK: the
 * target is lost; checkpointing stops and the guest runs on unprotected
 * (done(0), ckpt_xen_job_target_lost() true). max_checkpoints reached or
 * ckpt_xen_job_stop(): the last checkpoint carries an ERROR(-ECANCELLED)
 * record before its CHECKPOINT_END, so the target discards instead of
 * taking over; done(0).
 *
 * The target (restore, stream REMUS): at each libxc checkpoint the libxl
 * records up to CHECKPOINT_END are read, ACK(n) sent back on the same
 * socket. From then on a silent source (failover_timeout_ms) or a broken
 * stream means failover: libxc completes the domain from the last complete
 * checkpoint and done(0) comes with the domain created and PAUSED (the
 * owner decides whether to run it: a tie-breaker). The source's ERROR
 * (-ECANCELLED) ends it: the half-made domain is destroyed and done gets
 * -COLO_ECANCELLED.
 */

/*
 * COLO (stream COLO), libxl_colo_save.c / libxl_colo_restore.c's protocol
 * with the back channel on the same socket: the secondary's copy RUNS
 * between checkpoints and is reset to the primary's state at each one
 * (both sides' dirty pages are sent). Per checkpoint the secondary sends
 * libxl CHECKPOINT_STATE records SVM_SUSPENDED, SVM_READY, SVM_RESUMED and
 * libxc its dirty pfns; the primary sends CHECKPOINT_END after libxc's
 * pages and CHECKPOINT_NEW after the interval. A checkpoint counts on
 * SVM_RESUMED (primary) or once libxc applied it (secondary). A planned
 * end sends ERROR(-ECANCELLED) in place of CHECKPOINT_NEW: the secondary
 * destroys its copy, done(-COLO_ECANCELLED) there. The primary silent
 * (failover_timeout_ms) or gone: done(0) with the copy PAUSED (and
 * log-dirty off), as for Remus. The secondary gone: the primary's guest
 * runs on, done(0), ckpt_xen_job_target_lost().
 * PVH only (-ENOTSUP otherwise): a PV copy's pinned page tables cannot be
 * overwritten by the next checkpoint (libxc: "Mapping pfn ... failed with
 * -16"; libxl refuses COLO for PV too), and an HVM copy would need its
 * device model's state reloaded at every checkpoint.
 *
 * HVM (PLAIN and REMUS): the device model's state (xen_dm.h) is taken
 * after the guest suspended (QMP stop + xen-save-devices-state) and
 * written as EMULATOR_XENSTORE_DATA / EMULATOR_CONTEXT before END or
 * CHECKPOINT_END; QEMU's log-dirty follows switch_qemu_logdirty. A
 * restore starts the device model with the last committed state before
 * the domain is unpaused (a Remus standby: at failover).
 */

struct ckpt_xen_save_params {
    uint32_t domid;
    int fd;                 /* borrowed, blocking */
    bool live;              /* precopy while the guest runs */
    bool keep_running;      /* resume in place after the save (xl save -c) */
    bool leave_suspended;   /* neither: the caller destroys or resumes it
                             * (migration, after the target has it) */
    int suspend_timeout_ms; /* 0: 60 s (libxl's) */
    /* Checkpointed streams (Remus, COLO) */
    int stream;               /* enum ckpt_xen_stream; 0 = PLAIN */
    unsigned interval_ms;     /* between checkpoints; 0: 200 */
    unsigned ack_timeout_ms;  /* 0: 10000 (the first: 10 x) */
    uint64_t max_checkpoints; /* 0: until stopped */
};

struct ckpt_xen_restore_params {
    int fd;                        /* borrowed, blocking */
    struct ckpt_xen_newdom newdom; /* copied */
    const char *config_json;       /* copied; NULL: none recorded */
    bool paused;                   /* leave it paused */
    int stream;                    /* enum ckpt_xen_stream; 0 = PLAIN */
    unsigned failover_timeout_ms;  /* REMUS/COLO: silent source; 0: 5000 */
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
/* Remus primary: make the next checkpoint the last (clean end). */
void ckpt_xen_job_stop(struct ckpt_xen_job *j);
/* Remus: checkpoints acknowledged / committed so far. */
uint64_t ckpt_xen_job_checkpoints(const struct ckpt_xen_job *j);
/* Remus primary: checkpointing stopped because the target went silent. */
bool ckpt_xen_job_target_lost(const struct ckpt_xen_job *j);
/* Remus target: the job ended in a failover (done(0), domain paused). */
bool ckpt_xen_job_failed_over(const struct ckpt_xen_job *j);
void ckpt_xen_job_free(struct ckpt_xen_job *j); /* NULL ok; no done */

/* Raw colo records on a detached (blocking) link socket: ACK(v) and
 * ERROR; read_ack skips heartbeats, waits up to ms, and turns an ERROR
 * into -COLO_EPEER_REJECTED with its text in why. */
int ckpt_xen_send_ack(int fd, uint64_t v);
int ckpt_xen_send_error(int fd, int code, const char *text);
int ckpt_xen_read_ack(int fd, int ms, uint64_t *v, char *why, size_t whysz);

#endif
