/*
 * Parent side of the Xen helper: spawns `colo __xen-helper`, reads its
 * frames from the loop, hands CALLs to the owner and writes the owner's
 * REPLY back. The object finishes when the channel is closed AND the
 * process is reaped (a pidfd tells us without SIGCHLD handlers); done()
 * then fires once, from a deferred event.
 */
#include "checkpoint/xen_helper.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"

struct ckpt_xen_helper {
    struct event_base *base;
    const struct ckpt_xen_helper_owner *owner;
    void *opaque;
    enum ckpt_xen_helper_state state;
    pid_t pid;
    int pidfd;
    int chan;
    int io_fd; /* borrowed: shut down on cancel */
    struct event *ev_chan, *ev_pid, *ev_done;
    struct event *ev_quiet; /* RUNNING: helper silent too long */
    int timeout_ms;         /* 0: no inactivity deadline */
    struct colo_buf in;
    uint32_t pending_cb; /* CALLING: the cb the owner owes */
    bool chan_closed;
    bool reaped;
    int err; /* first channel error (0 none) */
    struct ckpt_xen_result res;
};

static void set_state(struct ckpt_xen_helper *h, enum ckpt_xen_helper_state s)
{
    /* Legal moves only; anything else is a bug in this file. */
    switch (s) {
    case CKPT_XEN_H_RUNNING:
        if (h->state != CKPT_XEN_H_IDLE && h->state != CKPT_XEN_H_CALLING)
            abort();
        break;
    case CKPT_XEN_H_CALLING:
        if (h->state != CKPT_XEN_H_RUNNING)
            abort();
        break;
    case CKPT_XEN_H_CANCELLED:
        if (h->state != CKPT_XEN_H_RUNNING && h->state != CKPT_XEN_H_CALLING)
            abort();
        break;
    case CKPT_XEN_H_FINISHED:
        if (h->state == CKPT_XEN_H_IDLE || h->state == CKPT_XEN_H_FINISHED)
            abort();
        break;
    case CKPT_XEN_H_IDLE:
        break;
    }
    h->state = s;
}

static int pidfd_open_(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* (Re)arm the inactivity deadline: only while the helper owes us a
 * message (RUNNING), never while the owner owes a reply (CALLING). */
static void arm_quiet(struct ckpt_xen_helper *h)
{
    struct timeval tv = {h->timeout_ms / 1000, (h->timeout_ms % 1000) * 1000};

    if (!h->ev_quiet)
        return;
    if (h->state == CKPT_XEN_H_RUNNING && h->chan >= 0)
        evtimer_add(h->ev_quiet, &tv);
    else
        evtimer_del(h->ev_quiet);
}

static void close_chan(struct ckpt_xen_helper *h)
{
    if (h->ev_quiet)
        evtimer_del(h->ev_quiet);
    if (h->ev_chan) {
        event_free(h->ev_chan);
        h->ev_chan = NULL;
    }
    colo_close(&h->chan);
    h->chan_closed = true;
}

static void reap(struct ckpt_xen_helper *h, int options)
{
    int status;
    pid_t r;

    if (h->reaped || h->pid <= 0)
        return;
    do
        r = waitpid(h->pid, &status, options);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno == ECHILD) {
        /* Someone else (a process-wide SIGCHLD handler) reaped it: the
         * helper is gone, its status is lost. */
        h->reaped = true;
        h->res.exit_status = -1;
        goto gone;
    }
    if (r != h->pid) {
        /* pidfd readable before the zombie is reapable: wait again. */
        if (h->ev_pid && options == WNOHANG)
            event_add(h->ev_pid, NULL);
        return;
    }
    h->reaped = true;
    if (WIFEXITED(status)) {
        h->res.exit_status = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        h->res.exit_status = -1;
        h->res.term_signal = WTERMSIG(status);
    }
gone:
    if (h->ev_pid) {
        event_free(h->ev_pid);
        h->ev_pid = NULL;
    }
    colo_close(&h->pidfd);
}

static void maybe_finish(struct ckpt_xen_helper *h)
{
    if (h->chan_closed && h->reaped && h->state != CKPT_XEN_H_FINISHED &&
        h->ev_done && !evtimer_pending(h->ev_done, NULL)) {
        struct timeval tv = {0, 0};

        evtimer_add(h->ev_done, &tv);
    }
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_xen_helper *h = arg;
    struct ckpt_xen_result *r = &h->res;
    int rc;

    (void)fd;
    (void)what;
    if (h->state == CKPT_XEN_H_CANCELLED) {
        rc = -COLO_ECANCELLED;
        snprintf(r->error, sizeof(r->error), "Xen helper cancelled");
    } else if (h->err == -ETIMEDOUT) {
        rc = -COLO_EHELPER;
        snprintf(r->error, sizeof(r->error),
                 "Xen helper (pid %d) silent for %d ms; killed", (int)h->pid,
                 h->timeout_ms);
    } else if (h->err) {
        rc = -COLO_EHELPER;
        snprintf(r->error, sizeof(r->error),
                 "Xen helper (pid %d) channel failed: %s", (int)h->pid,
                 colo_strerror(h->err));
    } else if (r->term_signal) {
        rc = -COLO_EHELPER;
        snprintf(r->error, sizeof(r->error),
                 "Xen helper (pid %d) killed by signal %d (%s)", (int)h->pid,
                 r->term_signal, strsignal(r->term_signal));
    } else if (!r->got_done) {
        rc = -COLO_EHELPER;
        snprintf(r->error, sizeof(r->error),
                 "Xen helper (pid %d) exited with status %d without a "
                 "result",
                 (int)h->pid, r->exit_status);
    } else if (r->helper_rc != 0 || r->exit_status != 0) {
        rc = -COLO_EXEN;
        if (!r->error[0])
            snprintf(r->error, sizeof(r->error),
                     "Xen helper failed (rc %d, exit status %d)", r->helper_rc,
                     r->exit_status);
    } else {
        rc = 0;
    }
    set_state(h, CKPT_XEN_H_FINISHED);
    h->owner->done(h, rc, r, h->opaque); /* last: h may be freed */
}

static void chan_fail(struct ckpt_xen_helper *h, int err)
{
    if (!h->err)
        h->err = err;
    close_chan(h);
    /* A helper that speaks garbage is not trusted to exit by itself. */
    if (!h->reaped && h->pid > 0)
        kill(h->pid, SIGKILL);
}

/* Handle one decoded frame. Returns < 0 for a protocol violation. */
static int handle(struct ckpt_xen_helper *h, const struct ckpt_xen_msg *m)
{
    char text[CKPT_XEN_TEXT_MAX + 1];

    if (m->text) {
        memcpy(text, m->text, m->text_len);
        text[m->text_len] = '\0';
    } else {
        text[0] = '\0';
    }
    if (h->res.got_done) /* nothing may follow DONE */
        return -COLO_ESTREAM_CORRUPT;
    switch (m->type) {
    case CKPT_XEN_MSG_LOG:
        if (h->owner->log)
            h->owner->log(h, (int)m->u32a, text, h->opaque);
        return 0;
    case CKPT_XEN_MSG_PROGRESS:
        if (h->owner->progress)
            h->owner->progress(h, m->u64a, m->u64b, text, h->opaque);
        return 0;
    case CKPT_XEN_MSG_RESULTS:
        h->res.store_gfn = m->u64a;
        h->res.console_gfn = m->u64b;
        if (h->owner->restore_results)
            h->owner->restore_results(h, m->u64a, m->u64b, h->opaque);
        return 0;
    case CKPT_XEN_MSG_DONE:
        h->res.got_done = true;
        h->res.helper_rc = m->i32a;
        h->res.helper_errno = m->i32b;
        if (m->u64a || m->u64b) {
            h->res.store_gfn = m->u64a;
            h->res.console_gfn = m->u64b;
        }
        /* A longer message is cut: it only explains the status. */
        if (snprintf(h->res.error, sizeof(h->res.error), "%s", text) >=
            (int)sizeof(h->res.error))
            colo_debug("xen helper: its error message was cut");
        return 0;
    case CKPT_XEN_MSG_CALL: {
        struct ckpt_xen_call c = {.cb = (enum ckpt_xen_cb)m->u32a,
                                  .a = m->u32b,
                                  .b = m->u64a,
                                  .c = m->u64b,
                                  .d = m->u64c};

        if (h->state != CKPT_XEN_H_RUNNING) /* one CALL at a time */
            return -COLO_ESTREAM_CORRUPT;
        h->pending_cb = m->u32a;
        set_state(h, CKPT_XEN_H_CALLING);
        arm_quiet(h);
        h->owner->call(h, &c, h->opaque);
        return 0;
    }
    default: /* REPLY goes the other way */
        return -COLO_ESTREAM_CORRUPT;
    }
}

static void on_chan(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_xen_helper *h = arg;
    uint8_t tmp[4096];
    ssize_t n;
    size_t off = 0;

    (void)what;
    n = read(fd, tmp, sizeof(tmp));
    if (n < 0 && errno == ECONNRESET)
        n = 0; /* the helper died with our reply unread: its end */
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        chan_fail(h, -errno);
        goto out;
    }
    if (n == 0) {
        /* EOF: an unfinished frame is the helper's fault. */
        if (h->in.len)
            h->err = -COLO_ESTREAM_TRUNCATED;
        close_chan(h);
        goto out;
    }
    if (colo_buf_append(&h->in, tmp, (size_t)n) < 0) {
        chan_fail(h, -ENOMEM);
        goto out;
    }
    while (h->state == CKPT_XEN_H_RUNNING || h->state == CKPT_XEN_H_CALLING) {
        struct ckpt_xen_msg m;
        ssize_t k = ckpt_xen_msg_decode(h->in.data + off, h->in.len - off, &m);
        int rc;

        if (k == 0)
            break;
        if (k < 0) {
            chan_fail(h, (int)k);
            goto out;
        }
        off += (size_t)k;
        rc = handle(h, &m);
        if (rc < 0) {
            chan_fail(h, rc);
            goto out;
        }
    }
    memmove(h->in.data, h->in.data + off, h->in.len - off);
    h->in.len -= off;
    arm_quiet(h);
    return;
out:
    h->in.len = 0;
    maybe_finish(h);
}

static void on_quiet(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_xen_helper *h = arg;

    (void)fd;
    (void)what;
    chan_fail(h, -ETIMEDOUT);
    maybe_finish(h);
}

void ckpt_xen_helper_set_timeout(struct ckpt_xen_helper *h, int ms)
{
    h->timeout_ms = ms > 0 ? ms : 0;
}

static void on_pid(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_xen_helper *h = arg;

    (void)fd;
    (void)what;
    reap(h, WNOHANG);
    maybe_finish(h);
}

struct ckpt_xen_helper *
ckpt_xen_helper_new(struct event_base *base,
                    const struct ckpt_xen_helper_owner *owner, void *opaque)
{
    struct ckpt_xen_helper *h = calloc(1, sizeof(*h));

    if (!h)
        return NULL;
    h->base = base;
    h->owner = owner;
    h->opaque = opaque;
    h->pid = -1;
    h->pidfd = -1;
    h->chan = -1;
    h->io_fd = -1;
    colo_buf_init(&h->in, CKPT_XEN_MSG_MAX + CKPT_XEN_MSG_HDR_SIZE + 4096);
    h->ev_done = evtimer_new(base, on_done, h);
    if (!h->ev_done) {
        free(h);
        return NULL;
    }
    return h;
}

void ckpt_xen_helper_free(struct ckpt_xen_helper *h)
{
    if (!h)
        return;
    if (h->pid > 0 && !h->reaped) {
        kill(h->pid, SIGKILL);
        reap(h, 0);
    }
    close_chan(h);
    if (h->ev_pid)
        event_free(h->ev_pid);
    if (h->ev_quiet)
        event_free(h->ev_quiet);
    colo_close(&h->pidfd);
    event_free(h->ev_done);
    colo_buf_dispose(&h->in);
    free(h);
}

int ckpt_xen_helper_attach(struct ckpt_xen_helper *h, int chan_fd_take,
                           pid_t pid, int io_fd)
{
    int rc;

    if (h->state != CKPT_XEN_H_IDLE) {
        colo_close(&chan_fd_take);
        return -EBUSY;
    }
    memset(&h->res, 0, sizeof(h->res));
    h->chan = chan_fd_take;
    h->pid = pid;
    h->io_fd = io_fd;
    h->chan_closed = h->reaped = false;
    h->err = 0;
    h->pidfd = pidfd_open_(pid);
    if (h->pidfd < 0) {
        rc = -errno;
        goto fail;
    }
    rc = colo_fd_set_nonblock(h->chan, 1);
    if (rc < 0)
        goto fail;
    h->ev_chan = event_new(h->base, h->chan, EV_READ | EV_PERSIST, on_chan, h);
    h->ev_pid = event_new(h->base, h->pidfd, EV_READ, on_pid, h);
    if (!h->ev_chan || !h->ev_pid || event_add(h->ev_chan, NULL) < 0 ||
        event_add(h->ev_pid, NULL) < 0) {
        rc = -ENOMEM;
        goto fail;
    }
    if (h->timeout_ms && !h->ev_quiet) {
        h->ev_quiet = evtimer_new(h->base, on_quiet, h);
        if (!h->ev_quiet) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    set_state(h, CKPT_XEN_H_RUNNING);
    arm_quiet(h);
    return 0;
fail:
    close_chan(h);
    if (h->ev_pid) {
        event_free(h->ev_pid);
        h->ev_pid = NULL;
    }
    colo_close(&h->pidfd);
    h->pid = -1;
    return rc;
}

static void fmt_u(char *buf, size_t sz, long long v)
{
    snprintf(buf, sz, "%lld", v);
}

int ckpt_xen_helper_start(struct ckpt_xen_helper *h,
                          const struct ckpt_xen_helper_params *p)
{
    static const char *const def_args[] = {"__xen-helper", NULL};
    const char *const *pre = p->exe_args ? p->exe_args : def_args;
    const char *exe = p->exe ? p->exe : "/proc/self/exe";
    char num[10][24];
    const char *argv[32];
    int sv[2] = {-1, -1}, rc, n = 0, k = 0;
    pid_t pid;

    if (h->state != CKPT_XEN_H_IDLE)
        return -EBUSY;
    if (p->io_fd < 0 ||
        (p->op != CKPT_XEN_OP_SAVE && p->op != CKPT_XEN_OP_RESTORE))
        return -EINVAL;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    argv[n++] = exe;
    for (int i = 0; pre[i] && n < 16; i++)
        argv[n++] = pre[i];
    argv[n++] = p->op == CKPT_XEN_OP_SAVE ? "save" : "restore";
    fmt_u(num[k], sizeof(num[k]), sv[1]);
    argv[n++] = num[k++];
    fmt_u(num[k], sizeof(num[k]), p->io_fd);
    argv[n++] = num[k++];
    fmt_u(num[k], sizeof(num[k]), p->domid);
    argv[n++] = num[k++];
    if (p->op == CKPT_XEN_OP_SAVE) {
        fmt_u(num[k], sizeof(num[k]), p->save_flags);
        argv[n++] = num[k++];
    } else {
        const uint32_t r[4] = {p->store_evtchn, p->store_domid,
                               p->console_evtchn, p->console_domid};

        for (int i = 0; i < 4; i++) {
            fmt_u(num[k], sizeof(num[k]), r[i]);
            argv[n++] = num[k++];
        }
    }
    fmt_u(num[k], sizeof(num[k]), p->stream);
    argv[n++] = num[k++];
    fmt_u(num[k], sizeof(num[k]), p->back_fd);
    argv[n++] = num[k++];
    argv[n] = NULL;

    pid = fork();
    if (pid < 0) {
        rc = -errno;
        goto fail;
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls until exec. The fds the
         * helper needs lose CLOEXEC (in the child's table only). */
        int keep[3] = {sv[1], p->io_fd, p->back_fd};

        for (int i = 0; i < 3; i++)
            if (keep[i] >= 0)
                fcntl(keep[i], F_SETFD, 0);
        signal(SIGPIPE, SIG_DFL);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    colo_close(&sv[1]);
    rc = ckpt_xen_helper_attach(h, sv[0], pid, p->io_fd);
    if (rc < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return rc;
fail:
    colo_close(&sv[0]);
    colo_close(&sv[1]);
    return rc;
}

int ckpt_xen_helper_reply(struct ckpt_xen_helper *h, int value)
{
    struct ckpt_xen_msg m = {.type = CKPT_XEN_MSG_REPLY};
    uint8_t f[CKPT_XEN_MSG_HDR_SIZE + 8];
    struct colo_buf b;
    ssize_t n;
    int rc = 0;

    if (h->state != CKPT_XEN_H_CALLING)
        return -EBUSY;
    m.u32a = h->pending_cb;
    m.i32a = value;
    h->pending_cb = 0;
    set_state(h, CKPT_XEN_H_RUNNING);
    arm_quiet(h);
    if (h->chan_closed)
        return -EPIPE;
    colo_buf_init(&b, 0);
    rc = ckpt_xen_msg_encode(&b, &m);
    if (rc >= 0) {
        memcpy(f, b.data, sizeof(f));
        /* The helper is blocked reading this frame and sends nothing
         * before it: the socket buffer has room, a short write is an
         * error. */
        n = send(h->chan, f, sizeof(f), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n != (ssize_t)sizeof(f)) {
            rc = n < 0 ? -errno : -EIO;
            /* A dead helper is reported by its exit status, not as a
             * channel fault. */
            if (rc == -EPIPE || rc == -ECONNRESET)
                close_chan(h);
            else
                chan_fail(h, rc);
            maybe_finish(h);
            rc = -EPIPE;
        }
    }
    colo_buf_dispose(&b);
    return rc;
}

void ckpt_xen_helper_cancel(struct ckpt_xen_helper *h)
{
    struct stat st;

    if (h->state != CKPT_XEN_H_RUNNING && h->state != CKPT_XEN_H_CALLING)
        return;
    set_state(h, CKPT_XEN_H_CANCELLED);
    if (!h->reaped)
        kill(h->pid, SIGKILL);
    /* The stream fd may be shared with the helper: shutting a socket down
     * makes every copy's writes fail (EPIPE) and the peer see the end. A
     * file or pipe copy dies with the helper. */
    if (h->io_fd >= 0 && fstat(h->io_fd, &st) == 0 && S_ISSOCK(st.st_mode))
        shutdown(h->io_fd, SHUT_RDWR);
    close_chan(h);
    maybe_finish(h);
}

enum ckpt_xen_helper_state
ckpt_xen_helper_state(const struct ckpt_xen_helper *h)
{
    return h->state;
}

pid_t ckpt_xen_helper_pid(const struct ckpt_xen_helper *h)
{
    return h->pid;
}
