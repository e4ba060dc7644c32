/*
 * The asynchronous QMP client. See qmp/qmp.h for the state machine and the
 * callback contracts; this file keeps them.
 *
 * Re-entrancy: every user callback is called through user_enter() /
 * user_leave(). qmp_client_free() inside a callback drops everything at
 * once (no further callback can fire) and leaves only the struct, which
 * the outermost user_leave() frees. Every caller of user_leave() returns
 * at once when it says the client is gone.
 */
#include "qmp/qmp.h"

#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#define QMP_DEFAULT_GREETING_MS 5000
#define QMP_READ_CHUNK          (64 * 1024)
#define QMP_IOV_MAX             64
#define QMP_MAX_HOOKS           8

struct qmp_cmd {
    TAILQ_ENTRY(qmp_cmd) link;
    struct qmp_client *c;
    uint64_t id;
    char *buf;
    size_t len;
    size_t off;
    int fd; /* our dup of the fd to pass; -1 once sent */
    qmp_reply_cb cb;
    void *arg;
    qmp_destroy_fn destroy;
    struct event *timer;
    bool internal;
    bool abandoned; /* partly written, its callback already done */
    int where;      /* which list holds it */
};

TAILQ_HEAD(qmp_cmd_list, qmp_cmd);

enum { IN_NONE = 0, IN_HELD, IN_OUT, IN_FLIGHT, IN_FAILING };

struct qmp_client {
    struct event_base *base;
    struct qmp_client_opts opts;
    char *name;
    enum qmp_state state;
    int fd;
    bool fake;
    struct event *ev_read;
    struct event *ev_write;
    struct event *ev_timer;
    struct event *ev_defer;
    int deferred_rc;

    struct qmp_cmd_list held;    /* sent before CONNECTED */
    struct qmp_cmd_list outq;    /* to write, in order */
    struct qmp_cmd_list flight;  /* written, awaiting the reply */
    struct qmp_cmd_list failing; /* connection lost, callbacks due */
    unsigned gen;                /* bumped when a connection ends */
    uint64_t next_id;

    char *rbuf;
    size_t rlen;
    size_t rcap;

    bool greeted;
    bool socket_up; /* connect() completed */
    struct qmp_version ver;
    json_t *commands; /* name -> true, from query-commands */

    qmp_connect_cb connect_cb;
    void *connect_arg;
    qmp_close_cb close_cb;
    void *close_arg;
    qmp_event_cb event_cb;
    void *event_arg;
    struct {
        int id;
        qmp_hook_cb cb;
        void *arg;
        qmp_destroy_fn destroy;
    } hooks[QMP_MAX_HOOKS];
    int next_hook_id;

    int depth;
    bool dead;
    int last_error;
};

static int conn_flush(struct qmp_client *c);
static void conn_fail(struct qmp_client *c, int rc);
static void hooks_drop(struct qmp_client *c);

/* ------------------------------------------------------------------ */
/* Re-entrancy guard */

static void client_release(struct qmp_client *c)
{
    event_free(c->ev_read);
    event_free(c->ev_write);
    event_free(c->ev_timer);
    event_free(c->ev_defer);
    free(c->name);
    free(c);
}

static void user_enter(struct qmp_client *c)
{
    c->depth++;
}

/* Returns false when the client was freed inside the callback: the caller
 * must return at once without touching c. */
static bool user_leave(struct qmp_client *c)
{
    c->depth--;
    if (!c->dead)
        return true;
    if (c->depth == 0)
        client_release(c);
    return false;
}

/* ------------------------------------------------------------------ */
/* Commands */

static struct qmp_cmd_list *cmd_list(struct qmp_client *c, int where)
{
    switch (where) {
    case IN_HELD:
        return &c->held;
    case IN_OUT:
        return &c->outq;
    case IN_FLIGHT:
        return &c->flight;
    case IN_FAILING:
        return &c->failing;
    }
    return NULL;
}

static void cmd_unlink(struct qmp_cmd *cmd)
{
    struct qmp_cmd_list *l = cmd_list(cmd->c, cmd->where);

    if (l)
        TAILQ_REMOVE(l, cmd, link);
    cmd->where = IN_NONE;
}

static void cmd_link(struct qmp_cmd *cmd, int where)
{
    TAILQ_INSERT_TAIL(cmd_list(cmd->c, where), cmd, link);
    cmd->where = where;
}

/* Unlinked command: run its destroy notifier, free it. */
static void cmd_free(struct qmp_cmd *cmd)
{
    if (cmd->timer)
        event_free(cmd->timer);
    if (cmd->destroy)
        cmd->destroy(cmd->arg);
    colo_close(&cmd->fd);
    free(cmd->buf);
    free(cmd);
}

/* Finish an unlinked command: callback, then destroy. Returns false if
 * the client is gone. */
static bool cmd_finish(struct qmp_cmd *cmd, int rc, json_t *ret,
                       const char *desc)
{
    struct qmp_client *c = cmd->c;
    qmp_reply_cb cb = cmd->cb;
    void *arg = cmd->arg;
    qmp_destroy_fn destroy = cmd->destroy;
    bool alive;

    cmd->destroy = NULL;
    cmd_free(cmd);
    user_enter(c);
    if (cb)
        cb(c, rc, rc == 0 ? ret : NULL, desc, arg);
    if (destroy)
        destroy(arg);
    alive = user_leave(c);
    return alive;
}

static void cmd_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qmp_cmd *cmd = arg;
    struct qmp_client *c = cmd->c;

    (void)fd;
    (void)what;
    colo_warn("qmp[%s]: command id %llu timed out", c->name,
              (unsigned long long)cmd->id);
    if (cmd->where == IN_OUT && cmd->off > 0) {
        /* Partly written: the rest must still go out to keep the stream
         * intact; the reply will be dropped as an unknown id. */
        qmp_reply_cb cb = cmd->cb;
        void *carg = cmd->arg;
        qmp_destroy_fn destroy = cmd->destroy;

        cmd->cb = NULL;
        cmd->destroy = NULL;
        cmd->abandoned = true;
        user_enter(c);
        if (cb)
            cb(c, -ETIMEDOUT, NULL, NULL, carg);
        if (destroy)
            destroy(carg);
        user_leave(c);
        return;
    }
    cmd_unlink(cmd);
    cmd_finish(cmd, -ETIMEDOUT, NULL, NULL);
}

static struct qmp_cmd *cmd_new(struct qmp_client *c, const char *name,
                               json_t *args, int fd, uint32_t timeout_ms)
{
    struct qmp_cmd *cmd = calloc(1, sizeof(*cmd));
    json_t *o = NULL;
    char *s = NULL;
    size_t n;

    if (!cmd)
        return NULL;
    cmd->c = c;
    cmd->fd = -1;
    cmd->id = c->next_id++;
    o = json_pack("{s:s, s:I}", "execute", name, "id", (json_int_t)cmd->id);
    if (!o)
        goto fail;
    if (args && json_object_set(o, "arguments", args) < 0)
        goto fail;
    s = json_dumps(o, JSON_COMPACT);
    if (!s)
        goto fail;
    n = strlen(s);
    cmd->buf = malloc(n + 2);
    if (!cmd->buf)
        goto fail;
    memcpy(cmd->buf, s, n);
    cmd->buf[n] = '\r';
    cmd->buf[n + 1] = '\n';
    cmd->len = n + 2;
    if (fd >= 0) {
        cmd->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (cmd->fd < 0)
            goto fail;
    }
    if (timeout_ms == 0)
        timeout_ms = c->opts.default_cmd_timeout_ms;
    if (timeout_ms > 0) {
        struct timeval tv = colo_ms_to_tv(timeout_ms);

        cmd->timer = evtimer_new(c->base, cmd_timer_cb, cmd);
        if (!cmd->timer || evtimer_add(cmd->timer, &tv) < 0)
            goto fail;
    }
    free(s);
    json_decref(o);
    return cmd;
fail:
    free(s);
    json_decref(o);
    cmd_free(cmd);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Connection teardown */

/* End the connection's I/O; commands stay where they are. */
static void conn_teardown(struct qmp_client *c)
{
    event_del(c->ev_read);
    event_del(c->ev_write);
    event_del(c->ev_timer);
    event_del(c->ev_defer);
    colo_close(&c->fd);
    c->rlen = 0;
    c->greeted = false;
    c->socket_up = false;
    c->deferred_rc = 0;
    json_decref(c->commands);
    c->commands = NULL;
    c->state = QMP_DISCONNECTED;
    c->gen++;
}

/* Drop every command without a callback; close the socket. */
static void conn_drop(struct qmp_client *c)
{
    struct qmp_cmd_list *lists[] = {&c->held, &c->outq, &c->flight,
                                    &c->failing};
    struct qmp_cmd *cmd;

    for (size_t i = 0; i < 4; i++) {
        while ((cmd = TAILQ_FIRST(lists[i]))) {
            cmd_unlink(cmd);
            cmd_free(cmd);
        }
    }
    conn_teardown(c);
}

static void move_all(struct qmp_client *c, struct qmp_cmd_list *from)
{
    struct qmp_cmd *cmd;

    while ((cmd = TAILQ_FIRST(from))) {
        cmd_unlink(cmd);
        cmd_link(cmd, IN_FAILING);
    }
}

/* Call every hook; false if the client is gone. */
static bool hooks_call(struct qmp_client *c, int rc, const char *event,
                       json_t *data)
{
    for (int i = 0; i < QMP_MAX_HOOKS; i++) {
        int id = c->hooks[i].id;

        void *arg = c->hooks[i].arg;
        qmp_destroy_fn destroy = c->hooks[i].destroy;

        if (id <= 0)
            continue;
        if (rc < 0) {
            c->hooks[i].id = 0; /* a hook hears of a failure once */
            c->hooks[i].destroy = NULL;
        }
        user_enter(c);
        c->hooks[i].cb(c, rc, event, data, arg);
        if (rc < 0 && destroy)
            destroy(arg);
        if (!user_leave(c))
            return false;
    }
    return true;
}

/* The connection failed: every pending command fails with rc, then the
 * connect or close callback. Loop context only. */
static void conn_fail(struct qmp_client *c, int rc)
{
    enum qmp_state was = c->state;
    qmp_connect_cb ccb = c->connect_cb;
    struct qmp_cmd *cmd;
    unsigned gen;

    if (was == QMP_DISCONNECTED)
        return;
    c->last_error = rc;
    c->connect_cb = NULL;
    colo_debug("qmp[%s]: connection failed: %s", c->name, colo_strerror(rc));
    /* Stop I/O first: no event of this connection may fire again. */
    conn_teardown(c);
    gen = c->gen;
    move_all(c, &c->flight);
    move_all(c, &c->outq);
    move_all(c, &c->held);
    while ((cmd = TAILQ_FIRST(&c->failing))) {
        cmd_unlink(cmd);
        if (cmd->internal || cmd->abandoned) {
            cmd_free(cmd);
            continue;
        }
        if (!cmd_finish(cmd, rc, NULL, NULL))
            return;
    }
    if (gen != c->gen)
        return; /* a callback disconnected or reconnected: it decided */
    if (!hooks_call(c, rc, NULL, NULL))
        return;
    if (gen != c->gen)
        return;
    if (was != QMP_CONNECTED) {
        if (ccb) {
            user_enter(c);
            ccb(c, rc, c->connect_arg);
            user_leave(c);
        }
    } else if (c->close_cb) {
        user_enter(c);
        c->close_cb(c, rc, c->close_arg);
        user_leave(c);
    }
}

static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qmp_client *c = arg;

    (void)fd;
    (void)what;
    if (c->deferred_rc < 0)
        conn_fail(c, c->deferred_rc);
}

/* Fail later, from the loop (used where a callback may not run). */
static void conn_fail_deferred(struct qmp_client *c, int rc)
{
    if (c->deferred_rc == 0)
        c->deferred_rc = rc;
    event_active(c->ev_defer, EV_TIMEOUT, 1);
}

/* ------------------------------------------------------------------ */
/* Writing */

/* Write as much of the out queue as the socket takes. 0 or a connection
 * error (the caller fails the connection). */
static int conn_flush(struct qmp_client *c)
{
    while (!TAILQ_EMPTY(&c->outq)) {
        struct iovec iov[QMP_IOV_MAX];
        struct qmp_cmd *cmd = TAILQ_FIRST(&c->outq);
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int))];
        } cm;
        struct msghdr msg = {0};
        int niov = 0;
        bool with_fd = cmd->fd >= 0 && cmd->off == 0;
        ssize_t n;

        for (struct qmp_cmd *k = cmd; k && niov < QMP_IOV_MAX;
             k = TAILQ_NEXT(k, link)) {
            if (k != cmd && k->fd >= 0)
                break; /* its fd must ride on its own first byte */
            iov[niov].iov_base = k->buf + k->off;
            iov[niov].iov_len = k->len - k->off;
            niov++;
        }
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)niov;
        if (with_fd) {
            struct cmsghdr *h;

            memset(&cm, 0, sizeof(cm));
            msg.msg_control = cm.buf;
            msg.msg_controllen = sizeof(cm.buf);
            h = CMSG_FIRSTHDR(&msg);
            h->cmsg_level = SOL_SOCKET;
            h->cmsg_type = SCM_RIGHTS;
            h->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(h), &cmd->fd, sizeof(int));
        }
        if (c->fake) {
            n = 0;
            for (int i = 0; i < niov; i++)
                n += (ssize_t)iov[i].iov_len;
        } else {
            n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                event_add(c->ev_write, NULL);
                return 0;
            }
            colo_debug("qmp[%s]: sendmsg: %s", c->name, strerror(errno));
            return -COLO_EQMP_DISCONNECTED;
        }
        if (with_fd && n > 0)
            colo_close(&cmd->fd); /* QEMU has it now */
        while (n > 0) {
            size_t left;

            cmd = TAILQ_FIRST(&c->outq);
            left = cmd->len - cmd->off;
            if ((size_t)n < left) {
                cmd->off += (size_t)n;
                break;
            }
            n -= (ssize_t)left;
            cmd->off = cmd->len;
            cmd_unlink(cmd);
            if (cmd->abandoned) {
                cmd_free(cmd);
            } else {
                cmd_link(cmd, IN_FLIGHT);
            }
        }
    }
    event_del(c->ev_write);
    return 0;
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qmp_client *c = arg;
    int rc;

    (void)fd;
    (void)what;
    rc = conn_flush(c);
    if (rc < 0)
        conn_fail(c, rc);
}

/* Queue an unlinked command for writing. Never calls a callback. */
static void cmd_queue(struct qmp_client *c, struct qmp_cmd *cmd)
{
    int rc;

    if (c->state != QMP_CONNECTED && !cmd->internal) {
        cmd_link(cmd, IN_HELD);
        return;
    }
    cmd_link(cmd, IN_OUT);
    if (TAILQ_FIRST(&c->outq) != cmd || c->state == QMP_CONNECTING)
        return; /* the write event is already armed or will be */
    rc = conn_flush(c);
    if (rc < 0)
        conn_fail_deferred(c, rc);
}

/* ------------------------------------------------------------------ */
/* Negotiation */

static void connected(struct qmp_client *c)
{
    qmp_connect_cb cb = c->connect_cb;
    struct qmp_cmd *cmd;
    int rc;

    event_del(c->ev_timer);
    c->state = QMP_CONNECTED;
    c->connect_cb = NULL;
    colo_debug("qmp[%s]: connected to QEMU %d.%d.%d%s%s", c->name, c->ver.major,
               c->ver.minor, c->ver.micro, c->ver.package[0] ? " " : "",
               c->ver.package);
    while ((cmd = TAILQ_FIRST(&c->held))) {
        cmd_unlink(cmd);
        cmd_link(cmd, IN_OUT);
    }
    if (cb) {
        user_enter(c);
        cb(c, 0, c->connect_arg);
        if (!user_leave(c))
            return;
    }
    if (c->state != QMP_CONNECTED)
        return;
    rc = conn_flush(c);
    if (rc < 0)
        conn_fail(c, rc);
}

static void probe_reply(struct qmp_client *c, int rc, json_t *ret,
                        const char *desc, void *arg)
{
    size_t i;
    json_t *v;

    (void)arg;
    if (rc < 0) {
        colo_warn("qmp[%s]: query-commands failed: %s", c->name,
                  desc ? desc : colo_strerror(rc));
    } else if (json_is_array(ret)) {
        c->commands = json_object();
        json_array_foreach(ret, i, v)
        {
            const char *n = json_string_value(json_object_get(v, "name"));

            if (n && c->commands)
                json_object_set_new(c->commands, n, json_true());
        }
    }
    connected(c);
}

static int send_internal(struct qmp_client *c, const char *name,
                         qmp_reply_cb cb)
{
    struct qmp_cmd *cmd = cmd_new(c, name, NULL, -1, 0);

    if (!cmd)
        return -ENOMEM;
    cmd->internal = true;
    cmd->cb = cb;
    cmd->arg = c;
    cmd_queue(c, cmd);
    return 0;
}

static void caps_reply(struct qmp_client *c, int rc, json_t *ret,
                       const char *desc, void *arg)
{
    (void)ret;
    (void)arg;
    if (rc < 0) {
        colo_err("qmp[%s]: qmp_capabilities refused: %s", c->name,
                 desc ? desc : colo_strerror(rc));
        conn_fail(c, -COLO_EQMP_PROTOCOL);
        return;
    }
    if (c->opts.no_probe) {
        connected(c);
        return;
    }
    rc = send_internal(c, "query-commands", probe_reply);
    if (rc < 0)
        conn_fail(c, rc);
}

static int parse_greeting(struct qmp_client *c, json_t *qmp)
{
    json_t *ver = json_object_get(qmp, "version");
    json_t *q = json_object_get(ver, "qemu");
    const char *pkg = json_string_value(json_object_get(ver, "package"));

    if (!json_is_object(qmp))
        return -COLO_EQMP_PROTOCOL;
    memset(&c->ver, 0, sizeof(c->ver));
    c->ver.major = (int)json_integer_value(json_object_get(q, "major"));
    c->ver.minor = (int)json_integer_value(json_object_get(q, "minor"));
    c->ver.micro = (int)json_integer_value(json_object_get(q, "micro"));
    if (pkg)
        snprintf(c->ver.package, sizeof(c->ver.package), "%s", pkg);
    c->greeted = true;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Reading */

int qmp_error_class_to_rc(const char *cls)
{
    static const struct {
        const char *name;
        int rc;
    } map[] = {
        {"GenericError", -COLO_EQMP_GENERIC},
        {"CommandNotFound", -COLO_EQMP_COMMAND_NOT_FOUND},
        {"DeviceNotActive", -COLO_EQMP_DEVICE_NOT_ACTIVE},
        {"DeviceNotFound", -COLO_EQMP_DEVICE_NOT_FOUND},
        {"KVMMissingCap", -COLO_EQMP_KVM_MISSING_CAP},
    };

    for (size_t i = 0; cls && i < sizeof(map) / sizeof(map[0]); i++) {
        if (strcmp(cls, map[i].name) == 0)
            return map[i].rc;
    }
    return -COLO_EQMP_UNKNOWN_CLASS;
}

static struct qmp_cmd *flight_find(struct qmp_client *c, json_t *id)
{
    struct qmp_cmd *cmd;
    json_int_t v;

    if (!json_is_integer(id))
        return NULL;
    v = json_integer_value(id);
    TAILQ_FOREACH(cmd, &c->flight, link)
    {
        if ((json_int_t)cmd->id == v)
            return cmd;
    }
    return NULL;
}

/* One message. Returns 0, a connection error, or 1 when the client is
 * gone or disconnected (stop reading). */
static int handle_msg(struct qmp_client *c, json_t *m)
{
    json_t *v;
    bool has_ret = json_object_get(m, "return") != NULL;
    bool has_err = json_object_get(m, "error") != NULL;

    if (!c->greeted) {
        v = json_object_get(m, "QMP");
        if (v) {
            int rc = parse_greeting(c, v);

            if (rc < 0)
                return rc;
            rc = send_internal(c, "qmp_capabilities", caps_reply);
            return rc;
        }
        if (json_object_get(m, "event")) {
            colo_debug("qmp[%s]: event before the greeting dropped", c->name);
            return 0;
        }
        colo_warn("qmp[%s]: expected the QMP greeting", c->name);
        return -COLO_EQMP_PROTOCOL;
    }
    if ((v = json_object_get(m, "event"))) {
        json_t *ts = json_object_get(m, "timestamp");
        const char *ev = json_string_value(v);

        if (!ev)
            return -COLO_EQMP_PROTOCOL;
        if (!hooks_call(c, 0, ev, json_object_get(m, "data")))
            return 1;
        if (c->event_cb) {
            user_enter(c);
            c->event_cb(
                c, ev, json_object_get(m, "data"),
                (int64_t)json_integer_value(json_object_get(ts, "seconds")),
                (int64_t)json_integer_value(
                    json_object_get(ts, "microseconds")),
                c->event_arg);
            if (!user_leave(c))
                return 1;
        }
        return c->state == QMP_DISCONNECTED ? 1 : 0;
    }
    if (has_ret || has_err) {
        json_t *id = json_object_get(m, "id");
        struct qmp_cmd *cmd;
        json_t *err = json_object_get(m, "error");
        const char *desc = json_string_value(json_object_get(err, "desc"));
        int rc = 0;

        if (!id) {
            if (has_err) {
                colo_err("qmp[%s]: error without id (QEMU could not parse "
                         "a command): %s",
                         c->name, desc ? desc : "?");
                return -COLO_EQMP_PROTOCOL;
            }
            colo_warn("qmp[%s]: reply without id dropped", c->name);
            return 0;
        }
        cmd = flight_find(c, id);
        if (!cmd) {
            colo_debug("qmp[%s]: reply with unknown id dropped", c->name);
            return 0;
        }
        if (has_err) {
            rc = qmp_error_class_to_rc(
                json_string_value(json_object_get(err, "class")));
            if (!desc)
                desc = "(no description)";
        }
        cmd_unlink(cmd);
        if (!cmd_finish(cmd, rc, json_object_get(m, "return"), desc))
            return 1;
        return c->state == QMP_DISCONNECTED ? 1 : 0;
    }
    if (json_object_get(m, "QMP")) {
        colo_warn("qmp[%s]: second greeting", c->name);
        return -COLO_EQMP_PROTOCOL;
    }
    colo_warn("qmp[%s]: message is neither reply nor event", c->name);
    return -COLO_EQMP_PROTOCOL;
}

/* Take every complete line out of rbuf. 0, a connection error, or 1. */
static int process_lines(struct qmp_client *c)
{
    size_t start = 0;
    unsigned gen = c->gen;
    int rc = 0;

    while (start < c->rlen) {
        char *p = c->rbuf + start;
        char *nl = memchr(p, '\n', c->rlen - start);
        size_t len;
        json_error_t jerr;
        json_t *m;

        if (!nl) {
            /* Room for a message at the cap plus its "\r". */
            if (c->rlen - start > (size_t)QMP_MAX_MSG + 1) {
                colo_err("qmp[%s]: message over %d bytes", c->name,
                         QMP_MAX_MSG);
                rc = -COLO_EQMP_PROTOCOL;
            }
            break;
        }
        len = (size_t)(nl - p);
        start += len + 1;
        while (len > 0 &&
               (p[len - 1] == '\r' || p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0)
            continue;
        if (len > QMP_MAX_MSG) {
            colo_err("qmp[%s]: message over %d bytes", c->name, QMP_MAX_MSG);
            rc = -COLO_EQMP_PROTOCOL;
            break;
        }
        m = json_loadb(p, len, 0, &jerr);
        if (!m || !json_is_object(m)) {
            colo_err("qmp[%s]: %s", c->name,
                     m ? "message is not a JSON object" : jerr.text);
            json_decref(m);
            rc = -COLO_EQMP_PROTOCOL;
            break;
        }
        user_enter(c); /* keep c while m is handled */
        rc = handle_msg(c, m);
        json_decref(m);
        if (!user_leave(c))
            return 1;
        if (gen != c->gen)
            return 1; /* that connection is gone */
        if (rc != 0)
            break;
    }
    if (rc == 1 || c->state == QMP_DISCONNECTED)
        return 1;
    memmove(c->rbuf, c->rbuf + start, c->rlen - start);
    c->rlen -= start;
    return rc;
}

static int rbuf_reserve(struct qmp_client *c, size_t extra)
{
    size_t want = c->rlen + extra;
    char *nb;

    if (want <= c->rcap)
        return 0;
    nb = realloc(c->rbuf, want);
    if (!nb)
        return -ENOMEM;
    c->rbuf = nb;
    c->rcap = want;
    return 0;
}

static int feed(struct qmp_client *c, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        size_t n = len < QMP_READ_CHUNK ? len : QMP_READ_CHUNK;
        int rc = rbuf_reserve(c, n);

        if (rc < 0)
            return rc;
        memcpy(c->rbuf + c->rlen, p, n);
        c->rlen += n;
        p += n;
        len -= n;
        rc = process_lines(c);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qmp_client *c = arg;
    ssize_t n;
    int rc;

    (void)what;
    rc = rbuf_reserve(c, QMP_READ_CHUNK);
    if (rc < 0) {
        conn_fail(c, rc);
        return;
    }
    n = read(fd, c->rbuf + c->rlen, QMP_READ_CHUNK);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        colo_debug("qmp[%s]: read: %s", c->name, strerror(errno));
        conn_fail(c, -COLO_EQMP_DISCONNECTED);
        return;
    }
    if (n == 0) {
        if (c->rlen > 0)
            colo_warn("qmp[%s]: EOF in the middle of a message", c->name);
        if (!c->greeted)
            colo_warn("qmp[%s]: EOF before the QMP greeting", c->name);
        conn_fail(c, -COLO_EQMP_DISCONNECTED);
        return;
    }
    c->rlen += (size_t)n;
    rc = process_lines(c);
    if (rc < 0)
        conn_fail(c, rc);
}

/* ------------------------------------------------------------------ */
/* Connecting */

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qmp_client *c = arg;
    uint32_t ms = c->opts.greeting_timeout_ms;

    (void)fd;
    (void)what;
    if (c->state == QMP_NEGOTIATING && !c->greeted) {
        colo_err("qmp[%s]: no QMP greeting within %u ms: another client "
                 "probably holds QEMU's monitor (QEMU serves one client "
                 "per socket)",
                 c->name, ms);
        conn_fail(c, -COLO_EQMP_BUSY);
        return;
    }
    colo_err("qmp[%s]: %s not done within %u ms", c->name,
             c->state == QMP_CONNECTING ? "connect" : "QMP negotiation", ms);
    conn_fail(c, -ETIMEDOUT);
}

static int start_negotiating(struct qmp_client *c)
{
    c->state = QMP_NEGOTIATING;
    c->socket_up = true;
    event_del(c->ev_read);
    event_del(c->ev_write);
    event_assign(c->ev_read, c->base, c->fd, EV_READ | EV_PERSIST, read_cb, c);
    event_assign(c->ev_write, c->base, c->fd, EV_WRITE, write_cb, c);
    if (event_add(c->ev_read, NULL) < 0)
        return -ENOMEM;
    return 0;
}

static void connect_done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qmp_client *c = arg;
    int err = 0;
    socklen_t l = sizeof(err);
    int rc;

    (void)what;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
        err = errno;
    if (err) {
        colo_err("qmp[%s]: connect: %s", c->name, strerror(err));
        conn_fail(c, -err);
        return;
    }
    rc = start_negotiating(c);
    if (rc < 0)
        conn_fail(c, rc);
}

static int arm_start(struct qmp_client *c, qmp_connect_cb cb, void *arg)
{
    struct timeval tv = colo_ms_to_tv(c->opts.greeting_timeout_ms);

    c->connect_cb = cb;
    c->connect_arg = arg;
    c->last_error = 0;
    c->deferred_rc = 0;
    c->rlen = 0;
    c->greeted = false;
    if (evtimer_add(c->ev_timer, &tv) < 0)
        return -ENOMEM;
    return 0;
}

int qmp_client_connect_path(struct qmp_client *c, const char *path,
                            qmp_connect_cb cb, void *arg)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t plen = strlen(path);
    socklen_t alen;
    int rc;

    if (c->state != QMP_DISCONNECTED)
        return -EISCONN;
    if (plen == 0 || plen >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, plen);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen +
                       (path[0] == '@' ? 0 : 1));
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    if (connect(c->fd, (struct sockaddr *)&sa, alen) < 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            colo_close(&c->fd);
            return rc;
        }
        c->state = QMP_CONNECTING;
        event_assign(c->ev_write, c->base, c->fd, EV_WRITE, connect_done_cb, c);
        if (event_add(c->ev_write, NULL) < 0) {
            rc = -ENOMEM;
            goto fail;
        }
    } else {
        rc = start_negotiating(c);
        if (rc < 0)
            goto fail;
    }
    rc = arm_start(c, cb, arg);
    if (rc < 0)
        goto fail;
    return 0;
fail:
    conn_drop(c);
    return rc;
}

int qmp_client_connect_fd_take(struct qmp_client *c, int fd, qmp_connect_cb cb,
                               void *arg)
{
    int rc;

    if (c->state != QMP_DISCONNECTED) {
        colo_close(&fd);
        return -EISCONN;
    }
    c->fd = fd;
    rc = colo_fd_set_nonblock(fd, 1);
    if (rc < 0)
        goto fail;
    rc = colo_fd_set_cloexec(fd, 1);
    if (rc < 0)
        goto fail;
    rc = start_negotiating(c);
    if (rc < 0)
        goto fail;
    rc = arm_start(c, cb, arg);
    if (rc < 0)
        goto fail;
    return 0;
fail:
    conn_drop(c);
    return rc;
}

void qmp_client_disconnect(struct qmp_client *c)
{
    if (!c)
        return;
    c->connect_cb = NULL;
    conn_drop(c);
    hooks_drop(c);
}

/* ------------------------------------------------------------------ */
/* Lifecycle */

struct qmp_client *qmp_client_new(struct event_base *base,
                                  const struct qmp_client_opts *opts)
{
    struct qmp_client *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    if (opts)
        c->opts = *opts;
    if (c->opts.greeting_timeout_ms == 0)
        c->opts.greeting_timeout_ms = QMP_DEFAULT_GREETING_MS;
    c->name = strdup(opts && opts->name ? opts->name : "qmp");
    c->opts.name = NULL;
    c->base = base;
    c->fd = -1;
    c->next_id = 1;
    TAILQ_INIT(&c->held);
    TAILQ_INIT(&c->outq);
    TAILQ_INIT(&c->flight);
    TAILQ_INIT(&c->failing);
    c->ev_read = event_new(base, -1, 0, read_cb, c);
    c->ev_write = event_new(base, -1, 0, write_cb, c);
    c->ev_timer = evtimer_new(base, timer_cb, c);
    c->ev_defer = event_new(base, -1, 0, defer_cb, c);
    if (!c->name || !c->ev_read || !c->ev_write || !c->ev_timer ||
        !c->ev_defer) {
        client_release(c);
        return NULL;
    }
    return c;
}

void qmp_client_free(struct qmp_client *c)
{
    if (!c || c->dead)
        return;
    c->connect_cb = NULL;
    c->close_cb = NULL;
    c->event_cb = NULL;
    conn_drop(c);
    hooks_drop(c);
    free(c->rbuf);
    c->rbuf = NULL;
    c->rcap = 0;
    c->dead = true;
    if (c->depth == 0)
        client_release(c);
}

void qmp_client_set_event_cb(struct qmp_client *c, qmp_event_cb cb, void *arg)
{
    c->event_cb = cb;
    c->event_arg = arg;
}

void qmp_client_set_close_cb(struct qmp_client *c, qmp_close_cb cb, void *arg)
{
    c->close_cb = cb;
    c->close_arg = arg;
}

static void hooks_drop(struct qmp_client *c)
{
    for (int i = 0; i < QMP_MAX_HOOKS; i++) {
        qmp_destroy_fn destroy = c->hooks[i].destroy;

        if (c->hooks[i].id <= 0)
            continue;
        c->hooks[i].id = 0;
        c->hooks[i].destroy = NULL;
        if (destroy)
            destroy(c->hooks[i].arg);
    }
}

int qmp_client_add_hook(struct qmp_client *c, qmp_hook_cb cb, void *arg,
                        qmp_destroy_fn destroy)
{
    for (int i = 0; i < QMP_MAX_HOOKS; i++) {
        if (c->hooks[i].id > 0)
            continue;
        if (++c->next_hook_id <= 0)
            c->next_hook_id = 1;
        c->hooks[i].id = c->next_hook_id;
        c->hooks[i].cb = cb;
        c->hooks[i].arg = arg;
        c->hooks[i].destroy = destroy;
        return c->hooks[i].id;
    }
    return -ENOSPC;
}

void qmp_client_remove_hook(struct qmp_client *c, int id)
{
    for (int i = 0; c && id > 0 && i < QMP_MAX_HOOKS; i++) {
        qmp_destroy_fn destroy = c->hooks[i].destroy;

        if (c->hooks[i].id != id)
            continue;
        c->hooks[i].id = 0;
        c->hooks[i].destroy = NULL;
        if (destroy)
            destroy(c->hooks[i].arg);
    }
}

struct event_base *qmp_client_base(const struct qmp_client *c)
{
    return c->base;
}

enum qmp_state qmp_client_state(const struct qmp_client *c)
{
    return c->state;
}

const struct qmp_version *qmp_client_version(const struct qmp_client *c)
{
    return c->greeted || c->state == QMP_CONNECTED ? &c->ver : NULL;
}

int qmp_version_cmp(const struct qmp_version *v, int major, int minor,
                    int micro)
{
    if (v->major != major)
        return v->major < major ? -1 : 1;
    if (v->minor != minor)
        return v->minor < minor ? -1 : 1;
    if (v->micro != micro)
        return v->micro < micro ? -1 : 1;
    return 0;
}

int qmp_has_command(const struct qmp_client *c, const char *name)
{
    if (!c->commands)
        return -ENODATA;
    return json_object_get(c->commands, name) ? 1 : 0;
}

int qmp_client_last_error(const struct qmp_client *c)
{
    return c->last_error;
}

/* ------------------------------------------------------------------ */
/* Sending */

int qmp_send_ex(struct qmp_client *c, const char *cmd_name, json_t *args,
                int fd, uint32_t timeout_ms, qmp_reply_cb cb, void *arg,
                qmp_destroy_fn destroy, uint64_t *ret_id)
{
    struct qmp_cmd *cmd;

    if (c->dead)
        return -EINVAL;
    if (c->state == QMP_DISCONNECTED)
        return -ENOTCONN;
    if (c->deferred_rc < 0)
        return c->deferred_rc; /* failing: its callbacks are on the way */
    if (args && !json_is_object(args))
        return -EINVAL;
    cmd = cmd_new(c, cmd_name, args, fd, timeout_ms);
    if (!cmd)
        return fd >= 0 && errno == EBADF ? -EBADF : -ENOMEM;
    cmd->cb = cb;
    cmd->arg = arg;
    cmd->destroy = destroy;
    if (ret_id)
        *ret_id = cmd->id;
    cmd_queue(c, cmd);
    return 0;
}

int qmp_send(struct qmp_client *c, const char *cmd, json_t *args, int fd,
             uint32_t timeout_ms, qmp_reply_cb cb, void *arg, uint64_t *ret_id)
{
    return qmp_send_ex(c, cmd, args, fd, timeout_ms, cb, arg, NULL, ret_id);
}

int qmp_cancel(struct qmp_client *c, uint64_t id)
{
    struct qmp_cmd_list *lists[] = {&c->held, &c->outq, &c->flight,
                                    &c->failing};
    struct qmp_cmd *cmd;

    for (size_t i = 0; i < 4; i++) {
        TAILQ_FOREACH(cmd, lists[i], link)
        {
            if (cmd->id != id || cmd->internal || cmd->abandoned)
                continue;
            if (cmd->where == IN_OUT && cmd->off > 0) {
                qmp_destroy_fn destroy = cmd->destroy;

                cmd->cb = NULL;
                cmd->destroy = NULL;
                cmd->abandoned = true;
                if (cmd->timer)
                    event_del(cmd->timer);
                if (destroy)
                    destroy(cmd->arg);
                return 0;
            }
            cmd_unlink(cmd);
            cmd_free(cmd);
            return 0;
        }
    }
    return -ENOENT;
}

size_t qmp_pending(const struct qmp_client *c)
{
    const struct qmp_cmd_list *lists[] = {&c->held, &c->outq, &c->flight,
                                          &c->failing};
    const struct qmp_cmd *cmd;
    size_t n = 0;

    for (size_t i = 0; i < 4; i++) {
        TAILQ_FOREACH(cmd, lists[i], link)
        {
            if (!cmd->internal && !cmd->abandoned)
                n++;
        }
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Fake transport for the fuzzer and unit tests */

struct qmp_client *qmp_client_new_fake(struct event_base *base)
{
    struct qmp_client_opts o = {.no_probe = true, .name = "fake"};
    struct qmp_client *c = qmp_client_new(base, &o);

    if (!c)
        return NULL;
    c->fake = true;
    c->state = QMP_NEGOTIATING;
    return c;
}

int qmp_client_feed(struct qmp_client *c, const void *buf, size_t len)
{
    int rc;

    if (c->state == QMP_DISCONNECTED)
        return c->last_error < 0 ? c->last_error : -ENOTCONN;
    user_enter(c);
    rc = feed(c, buf, len);
    if (rc < 0)
        conn_fail(c, rc);
    if (!user_leave(c))
        return -ECANCELED;
    if (c->state == QMP_DISCONNECTED)
        return c->last_error;
    return 0;
}
