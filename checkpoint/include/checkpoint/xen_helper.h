/*
 * The Xen save/restore helper: libxenguest's blocking xc_domain_save /
 * xc_domain_restore run in a separate process (colo re-executed as
 * `colo __xen-helper ...`, as libxl runs libxl-save-helper), and every
 * libxc callback is bridged to the parent's libevent loop as a framed
 * message over a socketpair. docs/xen.md has the wire format.
 *
 * Channel framing (both directions, little-endian, written field by field):
 *
 *     u16 type | u16 reserved (0) | u32 length | length bytes of payload
 *
 * length <= CKPT_XEN_MSG_MAX; every type has a fixed-size head and, for
 * LOG / PROGRESS / DONE, a text tail (no NUL, <= CKPT_XEN_TEXT_MAX).
 *
 * helper -> parent
 *   LOG        u32 level (xentoollog), u32 errnoval (or ~0), text
 *   PROGRESS   u64 done, u64 total, text ("context: doing_what")
 *   CALL       u32 cb, u32 a, u64 b, u64 c, u64 d  -- blocks for a REPLY
 *   RESULTS    u64 store_gfn, u64 console_gfn      -- restore_results, no
 *                                                     reply (a void callback)
 *   DONE       i32 rc, i32 errnoval, u64 store_gfn, u64 console_gfn, text
 * parent -> helper
 *   REPLY      u32 cb, i32 value                   -- answers the one CALL
 *
 * Only this header and checkpoint/ know the helper; xenctrl.h/xenguest.h are
 * included by checkpoint/src and checkpoint/include/checkpoint/xen_seam.h
 * only.
 */
#ifndef COLO_CHECKPOINT_XEN_HELPER_H
#define COLO_CHECKPOINT_XEN_HELPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct colo_buf;

/* ---- wire format ------------------------------------------------------- */

#define CKPT_XEN_MSG_HDR_SIZE 8u
#define CKPT_XEN_TEXT_MAX     2048u
#define CKPT_XEN_MSG_MAX      (32u + CKPT_XEN_TEXT_MAX)

enum ckpt_xen_msg_type {
    CKPT_XEN_MSG_LOG = 1,
    CKPT_XEN_MSG_PROGRESS = 2,
    CKPT_XEN_MSG_CALL = 3,
    CKPT_XEN_MSG_RESULTS = 4,
    CKPT_XEN_MSG_DONE = 5,
    CKPT_XEN_MSG_REPLY = 0x81,
};

/* The bridged libxc callbacks (CALL's cb field). */
enum ckpt_xen_cb {
    CKPT_XEN_CB_SUSPEND = 1,          /* save + restore; 1 = ok */
    CKPT_XEN_CB_PRECOPY_POLICY = 2,   /* save; b iteration, c dirty_count
                                       * (as i64, -1 unknown), d written;
                                       * answer XGS_POLICY_* (-1, 0, 1) */
    CKPT_XEN_CB_POSTCOPY = 3,         /* save + restore; 1 = ok */
    CKPT_XEN_CB_CHECKPOINT = 4,       /* save: 1 another, 0 stop; restore:
                                       * XGR_CHECKPOINT_* (0 err, 1, 2) */
    CKPT_XEN_CB_WAIT_CHECKPOINT = 5,  /* 1 another, 0 stop */
    CKPT_XEN_CB_SWITCH_LOGDIRTY = 6,  /* save, HVM; a enable, b domid; 0 ok */
    CKPT_XEN_CB_STATIC_DATA_DONE = 7, /* restore; a = missing (XGR_SDD_*),
                                       * 0 ok */
    CKPT_XEN_CB_MAX = 7,
};

enum ckpt_xen_op { CKPT_XEN_OP_SAVE = 1, CKPT_XEN_OP_RESTORE = 2 };

/* Mirrors xc_stream_type_t (libxc's values). */
enum ckpt_xen_stream {
    CKPT_XEN_STREAM_PLAIN = 0,
    CKPT_XEN_STREAM_REMUS = 1,
    CKPT_XEN_STREAM_COLO = 2,
};

/* Mirrors XCFLAGS_* */
#define CKPT_XEN_SAVE_LIVE  (1u << 0)
#define CKPT_XEN_SAVE_DEBUG (1u << 1)

/* One decoded message; text borrowed from the frame (not NUL-terminated). */
struct ckpt_xen_msg {
    uint16_t type;
    uint32_t u32a, u32b;       /* LOG level/errno, CALL cb/a, REPLY cb */
    int32_t i32a, i32b;        /* DONE rc/errno, REPLY value */
    uint64_t u64a, u64b, u64c; /* CALL b/c/d, PROGRESS done/total,
                                * RESULTS/DONE store/console */
    const char *text;
    size_t text_len;
};

/* Append one encoded frame to out (text longer than CKPT_XEN_TEXT_MAX is
 * cut). Fields unused by the type are ignored. -EINVAL for unknown type. */
int ckpt_xen_msg_encode(struct colo_buf *out, const struct ckpt_xen_msg *m);

/*
 * Decode the frame at p[0..len). Returns its total size (> 0), 0 if more
 * bytes are needed, or -COLO_ESTREAM_CORRUPT (reserved != 0, unknown type,
 * payload size wrong for its type) / -COLO_ESTREAM_TOO_BIG (length over
 * CKPT_XEN_MSG_MAX, reported from the 8 header bytes alone).
 */
ssize_t ckpt_xen_msg_decode(const uint8_t *p, size_t len,
                            struct ckpt_xen_msg *ret);

const char *ckpt_xen_cb_name(uint32_t cb);

/* ---- parent side: the async helper object ------------------------------ */

struct ckpt_xen_helper;

struct ckpt_xen_call {
    enum ckpt_xen_cb cb;
    uint32_t a;
    uint64_t b, c, d;
};

struct ckpt_xen_result {
    int helper_rc;      /* DONE's rc (0 ok, -1 libxc failure) */
    int helper_errno;   /* DONE's errnoval */
    bool got_done;      /* a DONE message arrived */
    int exit_status;    /* -1 if killed by a signal */
    int term_signal;    /* 0 if it exited */
    uint64_t store_gfn; /* restore: from DONE (or RESULTS) */
    uint64_t console_gfn;
    char error[512]; /* human reason when rc < 0 */
};

/* call/log/progress/restore_results must not free h (they run inside the
 * channel reader); done may. */
struct ckpt_xen_helper_owner {
    /* A value callback: answer with ckpt_xen_helper_reply() exactly once,
     * now or later from the loop. Required. */
    void (*call)(struct ckpt_xen_helper *h, const struct ckpt_xen_call *c,
                 void *opaque);
    /* Optional: libxc log lines and progress. */
    void (*log)(struct ckpt_xen_helper *h, int level, const char *line,
                void *opaque);
    void (*progress)(struct ckpt_xen_helper *h, uint64_t done, uint64_t total,
                     const char *what, void *opaque);
    /* Optional: restore_results (void callback, no answer). */
    void (*restore_results)(struct ckpt_xen_helper *h, uint64_t store_gfn,
                            uint64_t console_gfn, void *opaque);
    /*
     * Required; exactly once per start, always from the loop, last thing
     * the object does (the owner may free h inside). rc: 0 the helper
     * reported success and exited 0; -COLO_EXEN libxc failed (res->error);
     * -COLO_EHELPER the helper crashed, exited without DONE or spoke
     * garbage on the channel; -COLO_ECANCELLED after cancel.
     */
    void (*done)(struct ckpt_xen_helper *h, int rc,
                 const struct ckpt_xen_result *res, void *opaque);
};

struct ckpt_xen_helper_params {
    const char *exe;             /* NULL: /proc/self/exe */
    const char *const *exe_args; /* words before the op; NULL: the one word
                                  * "__xen-helper" */
    enum ckpt_xen_op op;
    enum ckpt_xen_stream stream;
    uint32_t domid;
    int io_fd;   /* borrowed; the helper gets a copy */
    int back_fd; /* COLO back channel (save: recv_fd, restore: send_back);
                  * -1 if none */
    uint32_t save_flags; /* CKPT_XEN_SAVE_* */
    uint32_t store_evtchn, store_domid, console_evtchn, console_domid;
};

/*
 * States (h->state), what each holds, and the transitions:
 *
 *   IDLE      nothing. -> start/attach -> RUNNING (on error: IDLE)
 *   RUNNING   helper pid + pidfd, channel fd read event, inactivity timer
 *             (if set_timeout). A CALL -> CALLING
 *             (owner->call). EOF, a channel error or DONE stay here until
 *             both the channel is closed and the pid is reaped -> FINISHED.
 *   CALLING   like RUNNING, the owner owes one reply.
 *             reply: CALLING -> RUNNING.
 *   CANCELLED helper SIGKILLed, io_fd shut down (socket) so any write the
 *             helper still makes fails; waiting for the pid.
 *   FINISHED  done() called (deferred through the loop); -> start again
 *             allowed after free/new only.
 *
 *   cancel:   RUNNING|CALLING -> CANCELLED -> done(-COLO_ECANCELLED).
 *             No-op in IDLE/FINISHED.
 *   free:     any state; kills and reaps a live helper, never calls done.
 *
 * The owner who cancels is responsible for the guest (resume a suspended
 * domain): the helper is dead, libxc's cleanup did not run.
 */
enum ckpt_xen_helper_state {
    CKPT_XEN_H_IDLE = 0,
    CKPT_XEN_H_RUNNING,
    CKPT_XEN_H_CALLING,
    CKPT_XEN_H_CANCELLED,
    CKPT_XEN_H_FINISHED,
};

struct ckpt_xen_helper *
ckpt_xen_helper_new(struct event_base *base,
                    const struct ckpt_xen_helper_owner *owner, void *opaque);
void ckpt_xen_helper_free(struct ckpt_xen_helper *h); /* NULL ok */

/* Fork + exec the helper. Synchronous errors by return value (no done). */
int ckpt_xen_helper_start(struct ckpt_xen_helper *h,
                          const struct ckpt_xen_helper_params *p);
/* Adopt an already running helper (tests, or a caller that spawned it):
 * chan_fd is consumed, pid must be our child. */
int ckpt_xen_helper_attach(struct ckpt_xen_helper *h, int chan_fd_take,
                           pid_t pid, int io_fd);
/* Answer the pending CALL. -EBUSY if none is pending, -EPIPE if the
 * helper is gone (done follows from the loop). */
int ckpt_xen_helper_reply(struct ckpt_xen_helper *h, int value);
void ckpt_xen_helper_cancel(struct ckpt_xen_helper *h);
/* Inactivity deadline (call before start/attach; 0 = none, the default):
 * in RUNNING, a helper that sends no frame for ms is killed and done gets
 * -COLO_EHELPER ("silent for N ms"). The clock stops in CALLING (the owner
 * is the one who is late then) and restarts at each frame and reply. */
void ckpt_xen_helper_set_timeout(struct ckpt_xen_helper *h, int ms);

enum ckpt_xen_helper_state
ckpt_xen_helper_state(const struct ckpt_xen_helper *h);
pid_t ckpt_xen_helper_pid(const struct ckpt_xen_helper *h);

/* The helper's argv after exe and exe_args (all decimal; fds are
 * inherited, -1 for none):
 *   save    CHAN IO DOMID FLAGS STREAM BACK
 *   restore CHAN IO DOMID STORE_EVTCHN STORE_DOMID CONSOLE_EVTCHN
 *           CONSOLE_DOMID STREAM BACK */

/* ---- helper side ------------------------------------------------------- */

struct ckpt_xen_guest_ops; /* xen_seam.h */

/* The real libxenguest table. */
const struct ckpt_xen_guest_ops *ckpt_xen_real_ops(void);
/* A fake libxc that writes/reads real libxc-format streams and drives the
 * callbacks in libxc's order (checkpoint/src/xen/fakexc.c); for tests. */
const struct ckpt_xen_guest_ops *ckpt_xen_fake_ops(void);

/*
 * Helper mode main. argv[0] is "save" or "restore" followed by the numbers
 * above. Returns the process exit status: 0 success, 1 libxc failure (DONE
 * sent), 2 usage, 3 channel lost.
 */
int ckpt_xen_helper_main(int argc, char **argv,
                         const struct ckpt_xen_guest_ops *ops);

/* ---- the libxl layer around libxc's stream (libxl_stream_write.c) ------ */

/* libxl v2 header + LIBXC_CONTEXT record: libxc's stream follows. */
int ckpt_xen_stream_begin(int fd);
/* After libxc's CHECKPOINT (the checkpoint callback): EMULATOR_CONTEXT
 * (if emu != NULL) then CHECKPOINT_END. */
int ckpt_xen_stream_checkpoint_end(int fd, const void *emu, size_t emu_len);
/* EMULATOR_XENSTORE_DATA (an HVM device model's xenstore keys, before
 * its EMULATOR_CONTEXT). */
int ckpt_xen_stream_emulator_xenstore(int fd, const void *data, size_t len);
/* After the helper finished a plain stream: EMULATOR_CONTEXT (if emu) and
 * libxl END. */
int ckpt_xen_stream_end(int fd, const void *emu, size_t emu_len);

/* Open the real Xen interface and close it again: 0 if a hypervisor is
 * there, -COLO_EXEN with "no Xen hypervisor: ..." in why otherwise. */
int ckpt_xen_probe(char *why, size_t whysz);

#endif
