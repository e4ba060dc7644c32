/*
 * Private to checkpoint/src/xen/job.c, save.c, restore.c, remus.c and
 * colo.c: the job object and the steps the files call in each other.
 */
#ifndef COLO_CHECKPOINT_XEN_JOB_PRIV_H
#define COLO_CHECKPOINT_XEN_JOB_PRIV_H

#include "checkpoint/xen_job.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <xenctrl.h>
#include <xenguest.h>

#include "checkpoint/xen_dm.h"
#include "checkpoint/xen_helper.h"
#include "libxl_rec.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "qmp/devstate.h"
#include "qmp/qmp.h"
#include "transport/colo_rec.h"
#include "transport/record.h"
#include "transport/xen_stream.h"

#define SUSPEND_TIMEOUT_MS  60000
#define PRECOPY_MAX_ROUNDS  5 /* libxc's simple_precopy_policy */
#define PRECOPY_DIRTY_FLOOR 50
#define REMUS_INTERVAL_MS   200
#define REMUS_ACK_MS        10000
#define REMUS_FAILOVER_MS   5000

enum job_kind { JOB_SAVE, JOB_RESTORE };

struct ckpt_xen_job {
    enum job_kind kind;
    struct event_base *base;
    struct ckpt_xen_dom *d;
    struct ckpt_xen_job_common c;
    struct ckpt_xen_helper *h;
    struct event *ev_done;
    int fd;
    uint32_t domid;
    bool started, finished, cancelled;
    /* save */
    struct ckpt_xen_save_params sp;
    bool suspended;
    /* restore */
    struct ckpt_xen_restore_params rp;
    char *json;
    bool created;
    uint64_t store_gfn, console_gfn;
    bool have_results;
    /* checkpointed streams */
    int stream;
    uint64_t ckpts;
    bool stop_req, target_lost, failed_over, ended_by_source;
    bool quiet_libxc; /* we ended the stream: libxc's complaints are noise */
    struct event *ev_interval;
    uint64_t last_pause_us;
    /* COLO */
    bool svm_running;  /* save: the secondary has resumed once */
    bool dom_finished; /* restore: xenstore, console, introduce done */
    uint64_t span_pfn; /* COLO restore: ckpt_xen_dom_dirty_span's page */
    enum { SVM_NONE, SVM_RESUMED, SVM_SUSPENDED } svm;
    struct event *ev_wait; /* restore: the source's CHECKPOINT_NEW */
    /* HVM: the device model */
    bool hvm;
    struct qmp_client *dm;   /* save: its QMP */
    bool dm_keep;            /* Remus: one connection for all checkpoints */
    struct qmp_saver *saver; /* ... and one memfd/fdset for the states */
    enum dm_op {
        DM_OP_NONE,
        DM_OP_SAVE,
        DM_OP_LOGDIRTY_ON,
        DM_OP_LOGDIRTY_OFF,
        DM_OP_CONT
    } dm_op;
    uint8_t *emu; /* its state (EMULATOR_CONTEXT payload) */
    size_t emu_len;
    char *emu_xs; /* its xenstore keys (EMULATOR_XENSTORE_DATA) */
    size_t emu_xs_len;
    uint8_t *emu_next; /* restore, Remus: a checkpoint's, until its END */
    size_t emu_next_len;
    char *emu_xs_next;
    size_t emu_xs_next_len;
    struct ckpt_xen_dm_start *dms; /* restore: starting it */
    /* result */
    int rc;
    char why[768];
    uint64_t t_stop_ns, downtime_ms;
};

unsigned ckpt_xj_colo_ack_ms(const struct ckpt_xen_job *j);
void ckpt_xj_colo_p_checkpoint(struct ckpt_xen_job *j);
void ckpt_xj_colo_p_lost(struct ckpt_xen_job *j, const char *step,
                         const char *why);
void ckpt_xj_colo_p_new(struct ckpt_xen_job *j);
void ckpt_xj_colo_p_resume(struct ckpt_xen_job *j);
void ckpt_xj_colo_p_wait(struct ckpt_xen_job *j);
int ckpt_xj_colo_s_failover(struct ckpt_xen_job *j);
int ckpt_xj_colo_s_resume(struct ckpt_xen_job *j);
void ckpt_xj_colo_s_suspend(struct ckpt_xen_job *j);
void ckpt_xj_colo_s_wait(struct ckpt_xen_job *j);
void ckpt_xj_dm_drop(struct ckpt_xen_job *j);
void ckpt_xj_dm_run(struct ckpt_xen_job *j, enum dm_op op);
void ckpt_xj_dm_started(int rc, const char *why, void *opaque);
const char *ckpt_xj_emulator_why(const struct ckpt_xen_job *j);
unsigned ckpt_xj_failover_ms(const struct ckpt_xen_job *j);
void ckpt_xj_interval_fire(evutil_socket_t fd, short what, void *arg);
void ckpt_xj_job_end(struct ckpt_xen_job *j, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ckpt_xj_on_done(struct ckpt_xen_helper *h, int rc,
                     const struct ckpt_xen_result *res, void *opaque);
int ckpt_xj_precopy_policy(const struct ckpt_xen_call *c);
int ckpt_xj_read_tail(struct ckpt_xen_job *j);
void ckpt_xj_remus_checkpoint(struct ckpt_xen_job *j);
int ckpt_xj_restore_checkpoint(struct ckpt_xen_job *j);
void ckpt_xj_restore_complete(struct ckpt_xen_job *j);
void ckpt_xj_save_suspended(struct ckpt_xen_dom *d, int rc, void *opaque);
int ckpt_xj_take_emulator(struct ckpt_xen_job *j, uint32_t type, uint8_t *body,
                          uint32_t len, bool next);

#endif
