/*
 * qmp: an asynchronous QMP client on a libevent event_base.
 *
 * Modelled on libxl's libxl__ev_qmp (tools/libs/light/libxl_internal.h),
 * with these differences: one client carries many commands in flight
 * (libxl: one per ev_qmp), replies are matched by id, a second client on
 * QEMU's single-client monitor is detected by a greeting deadline, and the
 * capability set (query-commands) is cached per connection.
 *
 * Wire (docs/interop/qmp-spec): QEMU sends a greeting {"QMP":{"version":
 * ..., "capabilities":[...]}}; the client sends qmp_capabilities; then
 * commands {"execute":..,"arguments":..,"id":N} are answered by
 * {"return":..,"id":N} or {"error":{"class":..,"desc":..},"id":N}; events
 * {"event":..,"data":..,"timestamp":{"seconds":..,"microseconds":..}}
 * arrive between replies. One message per line ("\r\n"). A message longer
 * than QMP_MAX_MSG bytes (not counting the line end), invalid JSON or a
 * JSON value that is not an object is a protocol error.
 *
 * ---------------------------------------------------------------------
 * State machine of struct qmp_client
 *
 *  QMP_DISCONNECTED   no fd, no timers, no commands in flight. Commands
 *                     may not be sent (qmp_send() -> -ENOTCONN).
 *                     Initial state, and the state after a connection
 *                     failed (every command and the connect/close
 *                     callbacks have been called by then).
 *  QMP_CONNECTING     holds: socket fd (non-blocking connect in
 *                     progress), write event, connect deadline timer,
 *                     connect callback. Commands sent now are queued.
 *  QMP_NEGOTIATING    holds: fd, read event, greeting deadline timer,
 *                     connect callback, the internal qmp_capabilities and
 *                     query-commands commands. Commands sent now are queued
 *                     and written once negotiation is complete.
 *  QMP_CONNECTED      holds: fd, read/write events, the queue of commands
 *                     (written in order, each with its optional fd), the
 *                     table of commands in flight, the greeting's version,
 *                     the command set from query-commands.
 *  (within a callback) any of the states above while a user callback
 *                     runs. The user may call anything from inside a
 *                     callback, including qmp_client_free(); the client
 *                     notices on return and touches nothing afterwards.
 *
 * Transitions (public functions):
 *  qmp_client_new():          -> DISCONNECTED
 *  qmp_client_connect_path(): DISCONNECTED -> CONNECTING or NEGOTIATING
 *                             (on error: DISCONNECTED, error returned,
 *                             no callback)
 *  qmp_client_connect_fd_take(): DISCONNECTED -> NEGOTIATING (on error:
 *                             DISCONNECTED, the fd is closed, no callback)
 *  greeting + capabilities + query-commands done (loop):
 *                             NEGOTIATING -> CONNECTED, connect_cb(rc=0)
 *  connection failure (loop): CONNECTING|NEGOTIATING|CONNECTED ->
 *                             DISCONNECTED; every pending command's
 *                             callback fires with the connection error,
 *                             then connect_cb(rc<0) if negotiation had not
 *                             finished, else close_cb(rc<0) (if set)
 *  qmp_client_disconnect():   any -> DISCONNECTED; no callback fires (as if
 *                             every pending command had been cancelled)
 *  qmp_send():                CONNECTING|NEGOTIATING|CONNECTED, unchanged
 *                             (on error: unchanged, no callback)
 *  qmp_cancel():              unchanged; that command's callback will not
 *                             fire
 *  qmp_client_free():         any -> freed; no callback fires afterwards,
 *                             every destroy notifier has run, every fd the
 *                             client held is closed
 *
 * Callback contracts
 *  - A user callback is never called from inside a public function: errors
 *    a function can see at once are its return value; everything else is
 *    reported from the event loop.
 *  - qmp_reply_cb fires exactly once per successfully sent command, unless
 *    the command was cancelled or the client freed/disconnected first:
 *      rc == 0                    ret = the reply's "return" value
 *      rc == -COLO_EQMP_GENERIC, -COLO_EQMP_COMMAND_NOT_FOUND,
 *            -COLO_EQMP_DEVICE_NOT_ACTIVE, -COLO_EQMP_DEVICE_NOT_FOUND,
 *            -COLO_EQMP_KVM_MISSING_CAP, -COLO_EQMP_UNKNOWN_CLASS
 *                                 QEMU said no; desc = QEMU's "desc"; the
 *                                 connection is fine
 *      rc == -ETIMEDOUT           this command's deadline expired (the
 *                                 connection stays; a late reply is dropped)
 *      rc == -COLO_EQMP_DISCONNECTED, -COLO_EQMP_PROTOCOL, -COLO_EQMP_BUSY,
 *            -ETIMEDOUT, other negative
 *                                 the connection failed; every pending
 *                                 command gets the same rc
 *    ret and desc are borrowed for the duration of the callback (use
 *    json_incref / strdup to keep them). ret is NULL when rc != 0.
 *  - connect_cb fires exactly once per connect call that returned 0:
 *    rc == 0 when CONNECTED, or the connection error (-COLO_EQMP_BUSY when
 *    no greeting arrived within the greeting deadline: another client
 *    holds QEMU's monitor).
 *  - close_cb fires at most once per connection, when a CONNECTED client
 *    loses its connection, after every pending command's callback.
 *  - event_cb fires for every event received while NEGOTIATING (after the
 *    greeting) or CONNECTED. Events before the greeting are dropped with a
 *    debug line (QEMU never sends them; the spec says the greeting is first).
 *
 * Protocol decisions
 *  - A reply with an unknown id (e.g. one whose command timed out or was
 *    cancelled) is dropped. A "return" without an id is dropped with a
 *    warning (colo always sends ids).
 *  - An "error" without an id means QEMU failed to parse one of colo's
 *    commands; which one is unknowable, so the connection is no longer
 *    trustworthy: it fails with -COLO_EQMP_PROTOCOL (logged with desc).
 *  - A message that is neither greeting, reply nor event is a protocol
 *    error.
 * ---------------------------------------------------------------------
 */
#ifndef COLO_QMP_QMP_H
#define COLO_QMP_QMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct qmp_client;

/* Cap on one received QMP message, in bytes without the line end. */
#define QMP_MAX_MSG (1024 * 1024)

enum qmp_state {
    QMP_DISCONNECTED = 0,
    QMP_CONNECTING,
    QMP_NEGOTIATING,
    QMP_CONNECTED,
};

/* QEMU's version from the greeting ("qemu":{major,minor,micro},
 * "package"). */
struct qmp_version {
    int major;
    int minor;
    int micro;
    char package[128];
};

struct qmp_client_opts {
    /* Connect + greeting deadline; expiry -> -COLO_EQMP_BUSY if the
     * socket connected but no greeting came, else -ETIMEDOUT.
     * 0: 5000 ms. */
    uint32_t greeting_timeout_ms;
    /* Deadline for commands sent with timeout_ms == 0. 0: none. */
    uint32_t default_cmd_timeout_ms;
    /* Run query-commands while negotiating (qmp_has_command()). Default
     * (false) = do probe; set true to skip. */
    bool no_probe;
    /* Name used in log lines ("qmp[name]"); copied. NULL: "qmp". */
    const char *name;
};

typedef void (*qmp_reply_cb)(struct qmp_client *c, int rc, json_t *ret,
                             const char *desc, void *arg);
typedef void (*qmp_event_cb)(struct qmp_client *c, const char *event,
                             json_t *data, int64_t ts_sec, int64_t ts_usec,
                             void *arg);
typedef void (*qmp_connect_cb)(struct qmp_client *c, int rc, void *arg);
typedef void (*qmp_close_cb)(struct qmp_client *c, int rc, void *arg);
/* Destroy notifier for a command's arg: runs exactly once when the
 * command is finished for any reason (after its callback, on cancel, on
 * disconnect or free). It is not a user callback in the sense above: it
 * must only release memory, never call into the client. */
typedef void (*qmp_destroy_fn)(void *arg);

/* opts may be NULL (defaults); it is copied. Returns NULL on ENOMEM. */
struct qmp_client *qmp_client_new(struct event_base *base,
                                  const struct qmp_client_opts *opts);
/* Accepts NULL. Safe at any time, including from inside any callback. */
void qmp_client_free(struct qmp_client *c);

void qmp_client_set_event_cb(struct qmp_client *c, qmp_event_cb cb, void *arg);
void qmp_client_set_close_cb(struct qmp_client *c, qmp_close_cb cb, void *arg);

/* Connect to a unix socket path (a leading '@' means the abstract
 * namespace). Returns 0 (connect_cb will fire) or a negative error
 * (-ENOENT, -ECONNREFUSED, -EISCONN if not DISCONNECTED...). */
int qmp_client_connect_path(struct qmp_client *c, const char *path,
                            qmp_connect_cb cb, void *arg);
/* Adopt an fd: a connected stream socket (QEMU's side not yet greeted),
 * consumed even on failure. Returns 0 (connect_cb will fire) or < 0. */
int qmp_client_connect_fd_take(struct qmp_client *c, int fd, qmp_connect_cb cb,
                               void *arg);
/* Drop the connection now; no callback fires for anything pending. */
void qmp_client_disconnect(struct qmp_client *c);

enum qmp_state qmp_client_state(const struct qmp_client *c);
/* The event_base the client runs on. */
struct event_base *qmp_client_base(const struct qmp_client *c);
/* The greeting's version; NULL before the greeting arrived. */
const struct qmp_version *qmp_client_version(const struct qmp_client *c);
/* <0, 0, >0 as v is older than, equal to, newer than major.minor.micro. */
int qmp_version_cmp(const struct qmp_version *v, int major, int minor,
                    int micro);
/* 1 if QEMU offers the command, 0 if not, -ENODATA if not probed yet. */
int qmp_has_command(const struct qmp_client *c, const char *name);
/* The last connection error (0 if none), for messages. */
int qmp_client_last_error(const struct qmp_client *c);

/*
 * Send a command. args (may be NULL) is borrowed: serialised at once.
 * fd >= 0 is passed with SCM_RIGHTS on the command's first byte; it is
 * borrowed (the client dup()s it and closes its copy once written).
 * timeout_ms: 0 = opts.default_cmd_timeout_ms. ret_id (may be NULL)
 * receives the id for qmp_cancel(). Returns 0, or < 0 with no callback
 * (and destroy not called: the caller still owns arg).
 */
int qmp_send(struct qmp_client *c, const char *cmd, json_t *args, int fd,
             uint32_t timeout_ms, qmp_reply_cb cb, void *arg, uint64_t *ret_id);
/* As qmp_send() with a destroy notifier for arg (run exactly once if the
 * send succeeded; on failure the caller keeps arg). */
int qmp_send_ex(struct qmp_client *c, const char *cmd, json_t *args, int fd,
                uint32_t timeout_ms, qmp_reply_cb cb, void *arg,
                qmp_destroy_fn destroy, uint64_t *ret_id);
/* Cancel one command: its callback will not fire; its destroy notifier
 * runs now. Returns 0 or -ENOENT (unknown or finished). */
int qmp_cancel(struct qmp_client *c, uint64_t id);
/* Commands sent but not yet finished. */
size_t qmp_pending(const struct qmp_client *c);

/* Additional event listeners (for helpers such as the device-state loader
 * that wait for an event while the user owns event_cb). A hook gets every
 * event (rc == 0) while it is registered, and, if still registered when
 * the connection fails, one last call with rc < 0 and event == NULL (after
 * the pending commands' callbacks); it is then removed. destroy (may be
 * NULL) runs exactly once when the hook goes away for any reason:
 * qmp_client_remove_hook(), after that last call, qmp_client_disconnect()
 * or qmp_client_free() (those two do not call the hook itself). Returns a
 * hook id > 0, or -ENOSPC (at most 8 hooks). */
typedef void (*qmp_hook_cb)(struct qmp_client *c, int rc, const char *event,
                            json_t *data, void *arg);
int qmp_client_add_hook(struct qmp_client *c, qmp_hook_cb cb, void *arg,
                        qmp_destroy_fn destroy);
void qmp_client_remove_hook(struct qmp_client *c, int id);

/* Map a QMP error class name to its -COLO_EQMP_* code. */
int qmp_error_class_to_rc(const char *cls);

/* ------------------------------------------------------------------- */
/* Convenience commands. All follow qmp_send(): 0 or < 0, no callback on
 * error; then the callback exactly once. */

/* query-status: status is "running", "paused", "prelaunch", "inmigrate",
 * ... (borrowed for the callback); running is the "running" field. */
typedef void (*qmp_status_cb)(struct qmp_client *c, int rc, const char *status,
                              bool running, void *arg);
int qmp_query_status(struct qmp_client *c, qmp_status_cb cb, void *arg);
/* stop / cont: the reply_cb gets ret = {} on success. */
int qmp_stop(struct qmp_client *c, qmp_reply_cb cb, void *arg);
int qmp_cont(struct qmp_client *c, qmp_reply_cb cb, void *arg);

/* add-fd: pass fd (borrowed; its access mode is what QEMU will allow),
 * into fdset fdset_id (-1: QEMU picks). cb gets the fdset id and QEMU's fd
 * number, usable as "/dev/fdset/<fdset_id>". */
typedef void (*qmp_addfd_cb)(struct qmp_client *c, int rc, int fdset_id,
                             int qemu_fd, void *arg);
int qmp_add_fd(struct qmp_client *c, int fd, int fdset_id, qmp_addfd_cb cb,
               void *arg);
/* remove-fd: the whole fdset (qemu_fd < 0) or one fd of it. Note: QEMU
 * closes removed fds only while the VM runs (monitor_fdset_cleanup). */
int qmp_remove_fd(struct qmp_client *c, int fdset_id, int qemu_fd,
                  qmp_reply_cb cb, void *arg);
/* getfd / closefd: a named fd (for "fd:NAME" migration URIs). */
int qmp_getfd(struct qmp_client *c, int fd, const char *name, qmp_reply_cb cb,
              void *arg);
int qmp_closefd(struct qmp_client *c, const char *name, qmp_reply_cb cb,
                void *arg);

/* ------------------------------------------------------------------- */
/* Receive-path seam for the fuzzer and unit tests: feed bytes as if read
 * from the socket of a client in QMP_NEGOTIATING/CONNECTED state created
 * with qmp_client_new_fake(). Returns 0, or the connection error the bytes
 * caused (callbacks fire from inside this call: test use only). */
struct qmp_client *qmp_client_new_fake(struct event_base *base);
int qmp_client_feed(struct qmp_client *c, const void *buf, size_t len);

#endif
