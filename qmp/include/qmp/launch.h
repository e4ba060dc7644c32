/*
 * qmp/launch: start a QEMU process with a pre-opened QMP socket and know
 * when it is up, without sleeps or polling for a path.
 *
 * colo creates a unix stream socket, binds it (to opts->qmp_path, or to an
 * abstract address when NULL), listens, and passes the listening fd to
 * QEMU with
 *   -chardev socket,id=colo-qmp,fd=N,server=on,wait=off
 *   -mon chardev=colo-qmp,mode=control
 * appended to the caller's argv. colo connects at once (the listen backlog
 * accepts before QEMU runs its main loop), and QEMU is "up" when the
 * greeting, capability negotiation and a query-status reply have arrived
 * (status prelaunch, paused, inmigrate, running, ...).
 *
 * QEMU's stdout and stderr go through a pipe into colo's log (one line per
 * line, at info level, prefixed "qemu[name]:"); the last lines are kept for
 * error messages. The child is watched through a pidfd (pidfd_open) on the
 * loop and reaped there.
 *
 * ---------------------------------------------------------------------
 * State machine of struct qmp_qemu
 *
 *  STARTING   holds: pid, pidfd event, stderr pipe event, the client
 *             (CONNECTING/NEGOTIATING), start deadline timer, up_cb.
 *  UP         holds: pid, pidfd event, stderr pipe event, the client
 *             (CONNECTED), exit_cb (optional).
 *  EXITED     holds: exit status, stderr tail; the client is disconnected
 *             (pending commands failed with -COLO_EQMP_DISCONNECTED).
 *
 * Transitions:
 *  qmp_qemu_launch():      -> STARTING (on error: nothing started, no
 *                          callback, error returned)
 *  up (loop):              STARTING -> UP, up_cb(rc=0, status)
 *  start failure (loop):   STARTING -> EXITED (the process is killed if
 *                          still alive and reaped), up_cb(rc<0):
 *                          -COLO_EQEMU_DIED  QEMU exited; the message and
 *                                            qmp_qemu_describe_exit() give
 *                                            the exit status and the last
 *                                            stderr lines
 *                          -ETIMEDOUT        start deadline
 *                          other             QMP failure
 *  QEMU exits (loop):      UP -> EXITED; the client's pending commands
 *                          fail first, then exit_cb(-COLO_EQEMU_DIED)
 *  qmp_qemu_kill():        signal only; the exit is reported as above
 *  qmp_qemu_free():        any -> freed: SIGKILL if alive, reaped
 *                          (waitpid after SIGKILL, bounded), every fd
 *                          closed, the socket path unlinked; no callback
 *                          afterwards. Safe inside any callback.
 *  qmp_qemu_release():     UP -> freed, QEMU left running (detached
 *                          launches: opts->log_path); no callback.
 *
 * Callbacks fire exactly once each (up_cb per launch; exit_cb at most once
 * after UP), never from inside qmp_qemu_launch().
 * ---------------------------------------------------------------------
 */
#ifndef COLO_QMP_LAUNCH_H
#define COLO_QMP_LAUNCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "qmp/qmp.h"

struct qmp_qemu;

struct qmp_launch_opts {
    /* Start deadline (exec to query-status reply). 0: 30000 ms. */
    uint32_t start_timeout_ms;
    /* Bind the QMP socket here (unlinked first and on free). NULL: an
     * abstract address unique to this process. */
    const char *qmp_path;
    /* Name in log lines. NULL: "qemu". Copied. */
    const char *name;
    /* Forwarded to the client (deadlines). May be NULL. */
    const struct qmp_client_opts *client_opts;
    /* Detached: QEMU's stdout and stderr are appended to this file (not
     * piped into colo's log; the file's last lines make the stderr tail),
     * it runs in a session of its own and is not killed when colo dies,
     * so qmp_qemu_release() can leave it running (a Xen device model
     * lives as long as its domain). NULL: the default above. Copied. */
    const char *log_path;
};

/* up_cb: rc 0 with the query-status status ("prelaunch", "paused",
 * "inmigrate", "running"...; borrowed), or < 0 (see above). */
typedef void (*qmp_launch_cb)(struct qmp_qemu *q, int rc, const char *status,
                              void *arg);
/* exit_cb: after UP, when QEMU exits (rc = -COLO_EQEMU_DIED). */
typedef void (*qmp_exit_cb)(struct qmp_qemu *q, int rc, void *arg);

/*
 * argv: QEMU's argv, NULL-terminated, argv[0] the binary (searched in
 * PATH); without the QMP -chardev/-mon (added here). Borrowed.
 * opts may be NULL. *ret_q is set on success (0).
 */
int qmp_qemu_launch(struct event_base *base, char *const argv[],
                    const struct qmp_launch_opts *opts, qmp_launch_cb cb,
                    void *arg, struct qmp_qemu **ret_q);
void qmp_qemu_free(struct qmp_qemu *q);
/* Let QEMU run on without colo (start it with opts->log_path): the
 * client is freed (the monitor is free for others), the socket path is
 * kept, nothing is signalled; no callback afterwards. The caller must
 * have stopped relying on it: it is not reaped by this process. */
void qmp_qemu_release(struct qmp_qemu *q);
void qmp_qemu_set_exit_cb(struct qmp_qemu *q, qmp_exit_cb cb, void *arg);

/* The connected client (owned by q; valid until qmp_qemu_free()). */
struct qmp_client *qmp_qemu_client(struct qmp_qemu *q);
/* The pid, or -1 once reaped. */
pid_t qmp_qemu_pid(const struct qmp_qemu *q);
bool qmp_qemu_exited(const struct qmp_qemu *q);
/* waitpid status once EXITED, else -1. */
int qmp_qemu_wait_status(const struct qmp_qemu *q);
/* Send a signal (no-op once reaped). 0 or -errno. */
int qmp_qemu_kill(struct qmp_qemu *q, int sig);
/* The last stderr/stdout lines (NUL-terminated, at most 4 KiB). */
const char *qmp_qemu_stderr_tail(const struct qmp_qemu *q);
/* "exited with status 1: <last lines>" or "killed by signal 9: ..." */
const char *qmp_qemu_describe_exit(const struct qmp_qemu *q);

/*
 * The extra QEMU arguments a secondary needs to load a device-state blob
 * with the one-shot incoming loader (see qmp/devstate.h):
 *   -S -incoming defer -global migration.send-configuration=off
 *   -machine suppress-vmdesc=on
 * NULL-terminated static array.
 */
const char *const *qmp_secondary_args(void);

#endif
