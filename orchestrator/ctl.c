#include "ctl.h"

#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct orch_ctl_server {
    struct event_base *base;
    struct evconnlistener *listener;
    char *path;
    orch_ctl_handler_fn *handler;
    void *arg;
    struct orch_ctl_req *reqs; /* live requests, to detach on free */
};

/* One connection = one request. */
struct orch_ctl_req {
    struct orch_ctl_server *srv; /* NULL once the server is gone */
    struct bufferevent *bev;     /* NULL once the client is gone */
    bool dispatched;             /* handler called: owner must finish */
    bool finished;               /* final line queued */
    struct orch_ctl_req *next;
};

static void req_unlink(struct orch_ctl_req *req)
{
    struct orch_ctl_req **pp;

    if (!req->srv)
        return;
    for (pp = &req->srv->reqs; *pp; pp = &(*pp)->next) {
        if (*pp == req) {
            *pp = req->next;
            break;
        }
    }
    req->srv = NULL;
}

static void req_drop_conn(struct orch_ctl_req *req)
{
    if (req->bev) {
        bufferevent_free(req->bev);
        req->bev = NULL;
    }
}

/* Free req when neither side needs it any more. */
static void req_maybe_free(struct orch_ctl_req *req)
{
    if (req->dispatched && !req->finished)
        return; /* the owner still holds it */
    if (req->bev)
        return; /* still flushing */
    req_unlink(req);
    free(req);
}

static void send_line(struct orch_ctl_req *req, json_t *obj)
{
    char *s;

    if (!req->bev)
        return;
    s = json_dumps(obj, JSON_COMPACT);
    if (!s)
        return;
    evbuffer_add(bufferevent_get_output(req->bev), s, strlen(s));
    evbuffer_add(bufferevent_get_output(req->bev), "\n", 1);
    free(s);
}

static void flushed_cb(struct bufferevent *bev, void *arg)
{
    struct orch_ctl_req *req = arg;

    if (req->finished &&
        evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        req_drop_conn(req);
        req_maybe_free(req);
    }
}

void orch_ctl_req_event(struct orch_ctl_req *req, json_t *ev)
{
    if (!req->finished)
        send_line(req, ev);
}

void orch_ctl_req_finish(struct orch_ctl_req *req, int rc, const char *msg,
                         json_t *result)
{
    json_t *fin = result;

    if (req->finished) {
        json_decref(result);
        return;
    }
    if (rc < 0) {
        json_decref(result);
        fin =
            json_pack("{s:b, s:s, s:s}", "ok", 0, "error",
                      msg ? msg : colo_strerror(rc), "code", colo_errname(rc));
    } else {
        if (!fin)
            fin = json_object();
        json_object_set_new(fin, "ok", json_true());
    }
    send_line(req, fin);
    json_decref(fin);
    req->finished = true;
    if (req->bev) {
        bufferevent_disable(req->bev, EV_READ);
        bufferevent_setcb(req->bev, NULL, flushed_cb, NULL, req);
        flushed_cb(req->bev, req);
    } else {
        req_maybe_free(req);
    }
}

bool orch_ctl_req_gone(const struct orch_ctl_req *req)
{
    return req->bev == NULL;
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct orch_ctl_req *req = arg;

    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        req_drop_conn(req);
        req_maybe_free(req);
    }
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct orch_ctl_req *req = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len;
    char *line;
    json_t *obj = NULL, *cmd;
    const char *why = NULL;
    int rc;

    if (req->dispatched)
        return; /* one request per connection; ignore extra bytes */
    line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
    if (!line) {
        if (evbuffer_get_length(in) > ORCH_CTL_MAX_LINE) {
            req->dispatched = true;
            orch_ctl_req_finish(req, -COLO_EPEER_REJECTED,
                                "request line too long", NULL);
        }
        return;
    }
    req->dispatched = true;
    rc = orch_ctl_parse_request(line, len, &obj, &why);
    free(line);
    if (rc < 0 || !req->srv) {
        orch_ctl_req_finish(req, -COLO_EPEER_REJECTED,
                            rc < 0 ? why : "colo is stopping", NULL);
        json_decref(obj);
        return;
    }
    cmd = json_object_get(obj, "cmd");
    /* The handler may finish req (and free it) before returning. */
    req->srv->handler(req, json_string_value(cmd), obj, req->srv->arg);
    json_decref(obj);
}

int orch_ctl_parse_request(const char *line, size_t len, json_t **ret_req,
                           const char **ret_why)
{
    json_error_t jerr;
    json_t *obj;

    *ret_req = NULL;
    if (len > ORCH_CTL_MAX_LINE) {
        *ret_why = "request line too long";
        return -COLO_EPEER_REJECTED;
    }
    obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj || !json_is_object(obj)) {
        json_decref(obj);
        *ret_why = "request is not a JSON object";
        return -COLO_EPEER_REJECTED;
    }
    if (!json_is_string(json_object_get(obj, "cmd"))) {
        json_decref(obj);
        *ret_why = "request has no \"cmd\" string";
        return -COLO_EPEER_REJECTED;
    }
    *ret_req = obj;
    return 0;
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int socklen, void *arg)
{
    struct orch_ctl_server *s = arg;
    struct orch_ctl_req *req;

    (void)l;
    (void)sa;
    (void)socklen;
    req = calloc(1, sizeof(*req));
    if (!req) {
        close(fd);
        return;
    }
    req->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!req->bev) {
        close(fd);
        free(req);
        return;
    }
    req->srv = s;
    req->next = s->reqs;
    s->reqs = req;
    bufferevent_setcb(req->bev, conn_read_cb, NULL, conn_event_cb, req);
    bufferevent_setwatermark(req->bev, EV_READ, 0, ORCH_CTL_MAX_LINE + 2);
    bufferevent_enable(req->bev, EV_READ | EV_WRITE);
}

int orch_state_dir(const char *override, char **ret_dir)
{
    const char *env = getenv("COLO_STATE_DIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    char buf[512];

    if (override && *override)
        snprintf(buf, sizeof(buf), "%s", override);
    else if (env && *env)
        snprintf(buf, sizeof(buf), "%s", env);
    else if (geteuid() == 0)
        snprintf(buf, sizeof(buf), "/run/colo");
    else if (xdg && *xdg)
        snprintf(buf, sizeof(buf), "%s/colo", xdg);
    else
        snprintf(buf, sizeof(buf), "/tmp/colo-%u", (unsigned)geteuid());
    if (mkdir(buf, 0700) < 0 && errno != EEXIST)
        return -errno;
    *ret_dir = strdup(buf);
    return *ret_dir ? 0 : -ENOMEM;
}

int orch_ctl_path(const char *dir, const char *vm, char **ret_path)
{
    struct sockaddr_un sun;
    char *p;

    if (asprintf(&p, "%s/%s.sock", dir, vm) < 0)
        return -ENOMEM;
    if (strlen(p) >= sizeof(sun.sun_path)) {
        free(p);
        return -ENAMETOOLONG;
    }
    *ret_path = p;
    return 0;
}

int orch_ctl_server_start(struct event_base *base, const char *path,
                          orch_ctl_handler_fn *handler, void *arg,
                          struct orch_ctl_server **ret)
{
    struct orch_ctl_server *s;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd = -1, rc;

    if (strlen(path) >= sizeof(sun.sun_path))
        return -ENAMETOOLONG;
    memcpy(sun.sun_path, path, strlen(path) + 1);
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->base = base;
    s->handler = handler;
    s->arg = arg;
    s->path = strdup(path);
    if (!s->path) {
        rc = -ENOMEM;
        goto fail;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    /* A socket left by a dead owner is replaced; a live owner is not. */
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
        rc = -EADDRINUSE;
        goto fail;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        listen(fd, 16) < 0) {
        rc = -errno;
        goto fail;
    }
    s->listener =
        evconnlistener_new(base, accept_cb, s, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (!s->listener) {
        rc = -ENOMEM;
        unlink(path);
        goto fail;
    }
    *ret = s;
    return 0;
fail:
    colo_close(&fd);
    free(s->path);
    free(s);
    return rc;
}

unsigned orch_ctl_server_busy(const struct orch_ctl_server *s)
{
    unsigned n = 0;

    for (const struct orch_ctl_req *r = s ? s->reqs : NULL; r; r = r->next)
        if (r->bev && r->finished)
            n++;
    return n;
}

void orch_ctl_server_free(struct orch_ctl_server *s)
{
    if (!s)
        return;
    if (s->listener) {
        evconnlistener_free(s->listener);
        unlink(s->path);
    }
    while (s->reqs) {
        struct orch_ctl_req *req = s->reqs;

        s->reqs = req->next;
        req->srv = NULL;
        req_drop_conn(req);
        /* A dispatched, unfinished request is still the owner's. */
        if (!req->dispatched || req->finished)
            free(req);
    }
    free(s->path);
    free(s);
}

/* ---- client ---- */

static int wait_fd(int fd, short events, uint64_t deadline_ns)
{
    struct pollfd p = {.fd = fd, .events = events};
    int timeout = -1, n;

    if (deadline_ns) {
        uint64_t now = colo_now_ns();

        if (now >= deadline_ns)
            return -ETIMEDOUT;
        timeout = (int)((deadline_ns - now) / 1000000) + 1;
    }
    do {
        n = poll(&p, 1, timeout);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return n == 0 ? -ETIMEDOUT : 0;
}

json_t *orch_ctl_call(const char *path, json_t *request, int timeout_ms,
                      orch_ctl_line_fn *on_line, void *arg, char **ret_err)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    uint64_t deadline =
        timeout_ms > 0 ? colo_now_ns() + (uint64_t)timeout_ms * 1000000 : 0;
    char *req_s = NULL, *buf = NULL;
    size_t len = 0, cap = 0;
    json_t *fin = NULL;
    int fd = -1, rc;

    *ret_err = NULL;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        rc = -ENAMETOOLONG;
        goto out;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        rc = -errno;
        if (asprintf(ret_err,
                     "cannot reach %s: %s (is the VM running "
                     "under colo on this host?)",
                     path, strerror(errno)) < 0)
            *ret_err = NULL;
        goto out;
    }
    req_s = json_dumps(request, JSON_COMPACT);
    if (!req_s) {
        rc = -ENOMEM;
        goto out;
    }
    rc = colo_write_all(fd, req_s, strlen(req_s));
    if (rc == 0)
        rc = colo_write_all(fd, "\n", 1);
    if (rc < 0)
        goto out;
    for (;;) {
        char *nl;
        ssize_t n;

        while ((nl = buf ? memchr(buf, '\n', len) : NULL)) {
            json_error_t jerr;
            size_t ll = (size_t)(nl - buf);
            json_t *line = json_loadb(buf, ll, 0, &jerr);

            memmove(buf, nl + 1, len - ll - 1);
            len -= ll + 1;
            if (!json_is_object(line)) {
                json_decref(line);
                rc = -COLO_ESTREAM_CORRUPT;
                goto out;
            }
            if (json_object_get(line, "ok")) {
                fin = line;
                rc = 0;
                goto out;
            }
            if (on_line)
                on_line(line, arg);
            json_decref(line);
        }
        if (len + 4096 > cap) {
            char *nb;

            if (cap > 4 * ORCH_CTL_MAX_LINE) {
                rc = -COLO_ESTREAM_TOO_BIG;
                goto out;
            }
            nb = realloc(buf, cap + 8192);
            if (!nb) {
                rc = -ENOMEM;
                goto out;
            }
            buf = nb;
            cap += 8192;
        }
        rc = wait_fd(fd, POLLIN, deadline);
        if (rc < 0)
            goto out;
        n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -COLO_EPEER_CLOSED;
            goto out;
        }
        len += (size_t)n;
    }
out:
    if (!fin && !*ret_err &&
        asprintf(ret_err, "control request failed: %s", colo_strerror(rc)) < 0)
        *ret_err = NULL;
    free(req_s);
    free(buf);
    colo_close(&fd);
    return fin;
}
