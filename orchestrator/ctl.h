/*
 * The control socket: one unix socket per VM, <state-dir>/<vm>.sock, owned
 * by the colo process that runs the VM (start, receive, standby). Short-
 * lived `colo status|failover|stop|migrate|protect VM` clients talk to it.
 *
 * Protocol: newline-delimited JSON objects, one request per connection.
 *   request:   {"cmd": "status", ...arguments}
 *   progress:  {"event": "checkpoint", ...}        zero or more
 *   final:     {"ok": true, ...result}  or
 *              {"ok": false, "error": "text", "code": "ECONFIG"}
 * The final line carries "ok"; the server closes after it. A request line
 * over ORCH_CTL_MAX_LINE bytes, bad JSON or a non-object gets a final error
 * and the connection is closed; nothing in it is acted on.
 *
 * Server states (struct orch_ctl_server):
 *   Idle      - not listening.                       holds nothing
 *   Listening - accepting connections.               listener, socket path
 *   orch_ctl_server_start: Idle -> Listening (on error: Idle)
 *   orch_ctl_server_free:  any -> gone (unlinks the socket, drops clients
 *                          without calling the handler again)
 *
 * Each request becomes a struct orch_ctl_req handed to the handler; the
 * handler answers, now or later from the loop, with orch_ctl_req_event()
 * (any number) and exactly one orch_ctl_req_finish(). A client that goes
 * away early is noticed; the request stays valid until finished, and the
 * owner learns through orch_ctl_req_gone().
 */
#ifndef COLO_ORCH_CTL_H
#define COLO_ORCH_CTL_H

#include <jansson.h>
#include <stdbool.h>

struct event_base;
struct orch_ctl_server;
struct orch_ctl_req;

#define ORCH_CTL_MAX_LINE (64 * 1024)

typedef void orch_ctl_handler_fn(struct orch_ctl_req *req, const char *cmd,
                                 json_t *args, void *arg);

/* Where control sockets live: --state-dir, else $COLO_STATE_DIR, else
 * /run/colo as root, else $XDG_RUNTIME_DIR/colo, else /tmp/colo-$UID.
 * Creates it (0700). Returns 0 and a static-lifetime-free string. */
int orch_state_dir(const char *override, char **ret_dir);
/* <dir>/<vm>.sock, checked to fit sun_path. */
int orch_ctl_path(const char *dir, const char *vm, char **ret_path);

int orch_ctl_server_start(struct event_base *base, const char *path,
                          orch_ctl_handler_fn *handler, void *arg,
                          struct orch_ctl_server **ret);
void orch_ctl_server_free(struct orch_ctl_server *s);
/* Connections still open (requests being answered or flushed). */
unsigned orch_ctl_server_busy(const struct orch_ctl_server *s);

/* Parse one request line (without its newline): 0 and *ret_req (a JSON
 * object with a "cmd" string; caller decrefs), or -COLO_EPEER_REJECTED and
 * *ret_why (static text). Pure: the server and the fuzz target use it. */
int orch_ctl_parse_request(const char *line, size_t len, json_t **ret_req,
                           const char **ret_why);

/* Send a progress line. Borrows ev. */
void orch_ctl_req_event(struct orch_ctl_req *req, json_t *ev);
/* Send the final line and release req. result is consumed (may be NULL).
 * rc < 0 sends {"ok":false,...} with msg (or colo_strerror(rc)). */
void orch_ctl_req_finish(struct orch_ctl_req *req, int rc, const char *msg,
                         json_t *result);
bool orch_ctl_req_gone(const struct orch_ctl_req *req);

/* Client (blocking, for the short-lived CLI commands). Sends the request
 * (borrowed), calls on_line for each progress line, returns the final
 * object (caller decrefs) or NULL with a message in *ret_err (malloc'd).
 * timeout_ms bounds the whole exchange; 0 = none (long jobs). */
typedef void orch_ctl_line_fn(json_t *line, void *arg);
json_t *orch_ctl_call(const char *path, json_t *request, int timeout_ms,
                      orch_ctl_line_fn *on_line, void *arg, char **ret_err);

#endif
