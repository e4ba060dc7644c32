#include "netutil.h"

#include "common/error.h"
#include "common/fd.h"
#include "common/timeutil.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int orch_parse_hostport(const char *s, uint16_t def_port, char **ret_host,
                        uint16_t *ret_port)
{
    const char *host = s, *port = NULL;
    size_t hlen;
    char *end;
    long p;

    if (!s || !*s)
        return -EINVAL;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');

        if (!rb)
            return -EINVAL;
        host = s + 1;
        hlen = (size_t)(rb - host);
        if (rb[1] == ':')
            port = rb + 2;
        else if (rb[1])
            return -EINVAL;
    } else {
        const char *c = strchr(s, ':');

        if (c && strchr(c + 1, ':')) {
            hlen = strlen(s); /* a bare IPv6 address */
        } else {
            hlen = c ? (size_t)(c - s) : strlen(s);
            port = c ? c + 1 : NULL;
        }
    }
    if (hlen == 0)
        return -EINVAL;
    *ret_port = def_port;
    if (port) {
        errno = 0;
        p = strtol(port, &end, 10);
        if (errno || end == port || *end || p < 0 || p > 65535)
            return -EINVAL;
        *ret_port = (uint16_t)p;
    }
    *ret_host = strndup(host, hlen);
    return *ret_host ? 0 : -ENOMEM;
}

/* ---- connect ---- */

struct orch_connect {
    struct event *ev;
    struct event *timer;
    int fd;
    orch_connect_fn *cb;
    void *arg;
};

static void connect_finish(struct orch_connect *c, int fd_or_rc)
{
    orch_connect_fn *cb = c->cb;
    void *arg = c->arg;

    if (fd_or_rc >= 0)
        c->fd = -1; /* handed over */
    orch_connect_cancel(c);
    cb(arg, fd_or_rc);
}

static void connect_ready(evutil_socket_t fd, short what, void *arg)
{
    struct orch_connect *c = arg;
    int err = 0, one = 1;
    socklen_t len = sizeof(err);

    if (what & EV_TIMEOUT) {
        connect_finish(c, -ETIMEDOUT);
        return;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        connect_finish(c, -err);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    colo_fd_set_nonblock(fd, 0);
    connect_finish(c, fd);
}

int orch_connect_start(struct event_base *base, const char *host, uint16_t port,
                       unsigned timeout_ms, orch_connect_fn *cb, void *arg,
                       struct orch_connect **ret)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_ADDRCONFIG};
    struct addrinfo *ai = NULL;
    struct orch_connect *c = NULL;
    struct timeval tv = colo_ms_to_tv(timeout_ms ? timeout_ms : 10000);
    char portstr[8];
    int rc;

    snprintf(portstr, sizeof(portstr), "%u", port);
    rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0)
        return -EHOSTUNREACH;
    c = calloc(1, sizeof(*c));
    if (!c) {
        rc = -ENOMEM;
        goto out;
    }
    c->cb = cb;
    c->arg = arg;
    c->fd =
        socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        rc = -errno;
        goto out;
    }
    if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 &&
        errno != EINPROGRESS) {
        rc = -errno;
        goto out;
    }
    c->ev = event_new(base, c->fd, EV_WRITE, connect_ready, c);
    if (!c->ev || event_add(c->ev, &tv) < 0) {
        rc = -ENOMEM;
        goto out;
    }
    *ret = c;
    c = NULL;
    rc = 0;
out:
    if (c)
        orch_connect_cancel(c);
    freeaddrinfo(ai);
    return rc;
}

void orch_connect_cancel(struct orch_connect *c)
{
    if (!c)
        return;
    if (c->ev)
        event_free(c->ev);
    colo_close(&c->fd);
    free(c);
}

/* ---- pid watch ---- */

struct orch_pidwatch {
    struct event *ev;
    int pidfd;
    orch_pidwatch_fn *cb;
    void *arg;
};

static void pidwatch_ready(evutil_socket_t fd, short what, void *arg)
{
    struct orch_pidwatch *w = arg;

    event_del(w->ev);
    w->cb(w->arg);
}

int orch_pidwatch_start(struct event_base *base, int pid, orch_pidwatch_fn *cb,
                        void *arg, struct orch_pidwatch **ret)
{
    struct orch_pidwatch *w = calloc(1, sizeof(*w));

    if (!w)
        return -ENOMEM;
    w->cb = cb;
    w->arg = arg;
    w->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (w->pidfd < 0) {
        int rc = -errno;

        free(w);
        return rc;
    }
    colo_fd_set_cloexec(w->pidfd, 1);
    w->ev = event_new(base, w->pidfd, EV_READ, pidwatch_ready, w);
    if (!w->ev || event_add(w->ev, NULL) < 0) {
        orch_pidwatch_free(w);
        return -ENOMEM;
    }
    *ret = w;
    return 0;
}

void orch_pidwatch_free(struct orch_pidwatch *w)
{
    if (!w)
        return;
    if (w->ev)
        event_free(w->ev);
    colo_close(&w->pidfd);
    free(w);
}

/* ---- child ---- */

struct orch_child {
    pid_t pid;
    struct orch_pidwatch *watch;
    struct event *timer;
    orch_child_fn *cb;
    void *arg;
};

static void child_finish(struct orch_child *c, int status_or_rc)
{
    orch_child_fn *cb = c->cb;
    void *arg = c->arg;

    orch_child_cancel(c);
    cb(arg, status_or_rc);
}

static void child_exited(void *arg)
{
    struct orch_child *c = arg;
    int st = 0;

    if (waitpid(c->pid, &st, 0) == c->pid)
        c->pid = -1;
    child_finish(c, st);
}

static void child_timeout(evutil_socket_t fd, short what, void *arg)
{
    child_finish(arg, -ETIMEDOUT);
}

int orch_child_start(struct event_base *base, const char *cmd,
                     unsigned timeout_ms, orch_child_fn *cb, void *arg,
                     struct orch_child **ret)
{
    struct orch_child *c = calloc(1, sizeof(*c));
    struct timeval tv = colo_ms_to_tv(timeout_ms ? timeout_ms : 10000);
    int rc;

    if (!c)
        return -ENOMEM;
    c->cb = cb;
    c->arg = arg;
    c->pid = fork();
    if (c->pid < 0) {
        rc = -errno;
        free(c);
        return rc;
    }
    if (c->pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    rc = orch_pidwatch_start(base, c->pid, child_exited, c, &c->watch);
    if (rc < 0)
        goto fail;
    c->timer = evtimer_new(base, child_timeout, c);
    if (!c->timer || evtimer_add(c->timer, &tv) < 0) {
        rc = -ENOMEM;
        goto fail;
    }
    *ret = c;
    return 0;
fail:
    orch_child_cancel(c);
    return rc;
}

void orch_child_cancel(struct orch_child *c)
{
    if (!c)
        return;
    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
    }
    orch_pidwatch_free(c->watch);
    if (c->timer)
        event_free(c->timer);
    free(c);
}
