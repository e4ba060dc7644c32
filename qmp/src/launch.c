/*
 * QEMU launch with a pre-opened QMP socket and QMP-based startup sync.
 * See qmp/launch.h for the state machine.
 *
 * Order of events at startup, all on the loop:
 *   bind+listen -> fork/exec (listening fd inherited) -> connect (the
 *   backlog accepts at once) -> greeting -> qmp_capabilities ->
 *   query-commands -> query-status reply: UP.
 * If QEMU exits meanwhile the client sees EOF; the exit status arrives
 * through the pidfd. A start failure is reported once both are known (or
 * after a short grace period), so the message carries the exit status.
 */
#include "qmp/launch.h"

#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#define LAUNCH_DEFAULT_TIMEOUT_MS 30000
#define LAUNCH_EXIT_GRACE_MS      2000
#define LAUNCH_TAIL_MAX           4096

enum launch_state { L_STARTING, L_UP, L_EXITED };

struct qmp_qemu {
    struct event_base *base;
    char *name;
    char *path;     /* bound filesystem path to unlink, or NULL */
    char *log_path; /* detached: QEMU's output goes here, not to a pipe */
    enum launch_state state;
    pid_t pid;
    int pidfd;
    int errfd;
    int wstatus;
    bool reaped;
    struct event *ev_pid;
    struct event *ev_err;
    struct event *ev_timer;
    struct qmp_client *client;
    int start_rc; /* start failure waiting for the exit status */
    bool up_done;
    bool was_up; /* start succeeded: exit_cb may fire */
    char status[32];

    char line[1024];
    size_t line_len;
    char tail[LAUNCH_TAIL_MAX];
    size_t tail_len;
    char exitmsg[LAUNCH_TAIL_MAX + 128];

    qmp_launch_cb up_cb;
    void *up_arg;
    qmp_exit_cb exit_cb;
    void *exit_arg;
    bool exit_reported;

    int depth;
    bool dead;
};

static void q_release(struct qmp_qemu *q)
{
    free(q->name);
    free(q->path);
    free(q->log_path);
    free(q);
}

static void q_enter(struct qmp_qemu *q)
{
    q->depth++;
}

static bool q_leave(struct qmp_qemu *q)
{
    q->depth--;
    if (!q->dead)
        return true;
    if (q->depth == 0)
        q_release(q);
    return false;
}

/* ------------------------------------------------------------------ */
/* stderr capture */

static void tail_add(struct qmp_qemu *q, const char *s, size_t n)
{
    if (n + 1 > LAUNCH_TAIL_MAX) {
        s += n - (LAUNCH_TAIL_MAX - 1);
        n = LAUNCH_TAIL_MAX - 1;
    }
    if (q->tail_len + n + 1 > LAUNCH_TAIL_MAX) {
        size_t drop = q->tail_len + n + 1 - LAUNCH_TAIL_MAX;
        char *nl = memchr(q->tail + drop, '\n', q->tail_len - drop);

        if (nl)
            drop = (size_t)(nl + 1 - q->tail);
        if (drop > q->tail_len)
            drop = q->tail_len;
        memmove(q->tail, q->tail + drop, q->tail_len - drop);
        q->tail_len -= drop;
    }
    memcpy(q->tail + q->tail_len, s, n);
    q->tail_len += n;
    q->tail[q->tail_len] = '\0';
}

static void line_done(struct qmp_qemu *q)
{
    q->line[q->line_len] = '\0';
    colo_info("qemu[%s]: %s", q->name, q->line);
    tail_add(q, q->line, q->line_len);
    tail_add(q, "\n", 1);
    q->line_len = 0;
}

/* Read what the pipe has; returns false on EOF or error (pipe closed). */
static bool err_drain(struct qmp_qemu *q)
{
    char buf[4096];

    while (q->errfd >= 0) {
        ssize_t n = read(q->errfd, buf, sizeof(buf));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n <= 0) {
            if (q->line_len > 0)
                line_done(q);
            event_del(q->ev_err);
            colo_close(&q->errfd);
            return false;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                line_done(q);
                continue;
            }
            if (q->line_len + 1 >= sizeof(q->line))
                line_done(q);
            q->line[q->line_len++] = buf[i];
        }
    }
    return false;
}

static void err_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    err_drain(arg);
}

/* A detached QEMU writes to its log file: its last lines are the tail. */
static void tail_from_log(struct qmp_qemu *q)
{
    char buf[LAUNCH_TAIL_MAX];
    ssize_t n;
    off_t end;
    int fd;

    if (!q->log_path || q->tail_len > 0)
        return;
    fd = open(q->log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    end = lseek(fd, 0, SEEK_END);
    if (end > (off_t)sizeof(buf) - 1)
        lseek(fd, end - ((off_t)sizeof(buf) - 1), SEEK_SET);
    else
        lseek(fd, 0, SEEK_SET);
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n > 0)
        tail_add(q, buf, (size_t)n);
}

/* ------------------------------------------------------------------ */
/* Exit and start results */

static void describe(struct qmp_qemu *q)
{
    int st = q->wstatus;
    int n;

    if (!q->reaped)
        n = snprintf(q->exitmsg, sizeof(q->exitmsg), "still running");
    else if (WIFEXITED(st))
        n = snprintf(q->exitmsg, sizeof(q->exitmsg), "exited with status %d",
                     WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        n = snprintf(q->exitmsg, sizeof(q->exitmsg), "killed by signal %d",
                     WTERMSIG(st));
    else
        n = snprintf(q->exitmsg, sizeof(q->exitmsg), "status 0x%x", st);
    if (q->tail_len > 0 && n > 0 && (size_t)n < sizeof(q->exitmsg))
        snprintf(q->exitmsg + n, sizeof(q->exitmsg) - (size_t)n, ": %s",
                 q->tail);
}

/* Report the start result once. */
static void start_finish(struct qmp_qemu *q, int rc)
{
    qmp_launch_cb cb = q->up_cb;

    if (q->up_done)
        return;
    q->up_done = true;
    event_del(q->ev_timer);
    if (rc == 0) {
        q->state = L_UP;
        q->was_up = true;
        colo_info("qemu[%s]: up (pid %d, status %s)", q->name, (int)q->pid,
                  q->status);
    } else {
        if (rc == -COLO_EQEMU_DIED) {
            describe(q);
            colo_err("qemu[%s]: died during startup: %s", q->name, q->exitmsg);
        } else {
            colo_err("qemu[%s]: startup failed: %s", q->name,
                     colo_strerror(rc));
            if (!q->reaped && q->pid > 0)
                kill(q->pid, SIGKILL);
        }
        qmp_client_disconnect(q->client);
    }
    q_enter(q);
    cb(q, rc, rc == 0 ? q->status : NULL, q->up_arg);
    q_leave(q);
}

static void maybe_report_exit(struct qmp_qemu *q)
{
    if (!q->reaped || !q->was_up || q->exit_reported)
        return;
    if (qmp_client_state(q->client) != QMP_DISCONNECTED)
        return; /* its pending commands fail first (close_cb) */
    q->exit_reported = true;
    describe(q);
    colo_info("qemu[%s]: %s", q->name, q->exitmsg);
    if (q->exit_cb) {
        q_enter(q);
        q->exit_cb(q, -COLO_EQEMU_DIED, q->exit_arg);
        q_leave(q);
    }
}

static void pid_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qmp_qemu *q = arg;
    int st;
    pid_t r;

    (void)fd;
    (void)what;
    r = waitpid(q->pid, &st, WNOHANG);
    if (r == 0)
        return;
    event_del(q->ev_pid);
    colo_close(&q->pidfd);
    if (r < 0) {
        st = 0;
        colo_warn("qemu[%s]: waitpid: %s", q->name, strerror(errno));
    }
    q->wstatus = st;
    q->reaped = true;
    q->state = L_EXITED;
    err_drain(q); /* the last lines, if the pipe has them */
    tail_from_log(q);
    if (!q->up_done) {
        start_finish(q, -COLO_EQEMU_DIED);
        return;
    }
    maybe_report_exit(q);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qmp_qemu *q = arg;

    (void)fd;
    (void)what;
    if (q->start_rc < 0) {
        /* The QMP connection failed but QEMU did not exit in time. */
        start_finish(q, q->start_rc);
        return;
    }
    colo_err("qemu[%s]: not up within the start deadline", q->name);
    start_finish(q, -ETIMEDOUT);
}

static void client_close_cb(struct qmp_client *c, int rc, void *arg)
{
    struct qmp_qemu *q = arg;

    (void)c;
    (void)rc;
    maybe_report_exit(q);
}

/* The QMP side failed during startup: wait a little for the exit status,
 * which explains more than "disconnected". */
static void start_qmp_failed(struct qmp_qemu *q, int rc)
{
    struct timeval tv = colo_ms_to_tv(LAUNCH_EXIT_GRACE_MS);

    if (q->up_done)
        return;
    if (q->reaped) {
        start_finish(q, -COLO_EQEMU_DIED);
        return;
    }
    q->start_rc = rc;
    event_del(q->ev_timer);
    evtimer_add(q->ev_timer, &tv);
}

static void status_cb(struct qmp_client *c, int rc, const char *status,
                      bool running, void *arg)
{
    struct qmp_qemu *q = arg;

    (void)c;
    (void)running;
    if (rc < 0) {
        start_qmp_failed(q, rc);
        return;
    }
    snprintf(q->status, sizeof(q->status), "%s", status);
    start_finish(q, 0);
}

static void connect_cb(struct qmp_client *c, int rc, void *arg)
{
    struct qmp_qemu *q = arg;

    if (rc == 0)
        rc = qmp_query_status(c, status_cb, q);
    if (rc < 0)
        start_qmp_failed(q, rc);
}

/* ------------------------------------------------------------------ */
/* Launch */

static int listen_socket(struct qmp_qemu *q, const char *path, char *addr,
                         size_t addrsz, int *ret_fd)
{
    static unsigned counter;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    socklen_t alen;
    size_t plen;
    int fd = -1;
    int rc;

    if (path) {
        snprintf(addr, addrsz, "%s", path);
    } else {
        snprintf(addr, addrsz, "@colo-qmp-%d-%u-%llu", (int)getpid(), counter++,
                 (unsigned long long)colo_now_ns());
    }
    plen = strlen(addr);
    if (plen >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, addr, plen);
    if (addr[0] == '@')
        sa.sun_path[0] = '\0';
    else
        unlink(addr);
    alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen +
                       (addr[0] == '@' ? 0 : 1));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa, alen) < 0 || listen(fd, 4) < 0) {
        rc = -errno;
        colo_close(&fd);
        return rc;
    }
    if (addr[0] != '@') {
        q->path = strdup(addr);
        if (!q->path) {
            colo_close(&fd);
            unlink(addr);
            return -ENOMEM;
        }
    }
    *ret_fd = fd;
    return 0;
}

static void child_exec(char **argv, int lfd, int errw, pid_t parent,
                       const char *log_path)
{
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

    if (log_path) {
        /* Detached: a session of its own, output to its log, and it
         * outlives colo (a Xen device model stays with its domain). */
        errw = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (errw < 0)
            _exit(126);
        setsid();
    } else {
        /* Die with colo: no QEMU outlives a crashed orchestrator or test.
         * (The signal follows the forking thread: launch from the loop
         * thread.) If colo died before prctl, give up now. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
    }
    if (devnull >= 0)
        dup2(devnull, 0);
    dup2(errw, 1);
    dup2(errw, 2);
    colo_fd_set_cloexec(lfd, 0);
    signal(SIGPIPE, SIG_DFL);
    execvp(argv[0], argv);
    dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int qmp_qemu_launch(struct event_base *base, char *const argv[],
                    const struct qmp_launch_opts *opts, qmp_launch_cb cb,
                    void *arg, struct qmp_qemu **ret_q)
{
    struct qmp_client_opts copts = {0};
    struct qmp_qemu *q = calloc(1, sizeof(*q));
    char addr[108];
    char chardev[96];
    char **av = NULL;
    int lfd = -1;
    int pipefd[2] = {-1, -1};
    uint32_t timeout_ms;
    size_t argc = 0;
    pid_t parent;
    struct timeval tv;
    int rc;

    if (!q)
        return -ENOMEM;
    q->pid = -1;
    q->pidfd = -1;
    q->errfd = -1;
    q->up_cb = cb;
    q->up_arg = arg;
    q->base = base;
    q->name = strdup(opts && opts->name ? opts->name : "qemu");
    timeout_ms = opts && opts->start_timeout_ms ? opts->start_timeout_ms
                                                : LAUNCH_DEFAULT_TIMEOUT_MS;
    if (opts && opts->client_opts)
        copts = *opts->client_opts;
    /* The start deadline is ours: the client's greeting deadline (which
     * would say "busy") only backs it up. colo owns the socket, so no
     * other client can hold the monitor. */
    copts.greeting_timeout_ms = timeout_ms + 1000;
    if (!copts.name)
        copts.name = q->name;
    q->client = q->name ? qmp_client_new(base, &copts) : NULL;
    q->ev_pid = event_new(base, -1, 0, pid_cb, q);
    q->ev_err = event_new(base, -1, 0, err_cb, q);
    q->ev_timer = evtimer_new(base, timer_cb, q);
    if (!q->client || !q->ev_pid || !q->ev_err || !q->ev_timer) {
        rc = -ENOMEM;
        goto fail;
    }
    qmp_client_set_close_cb(q->client, client_close_cb, q);
    if (opts && opts->log_path) {
        q->log_path = strdup(opts->log_path);
        if (!q->log_path) {
            rc = -ENOMEM;
            goto fail;
        }
    }

    rc = listen_socket(q, opts ? opts->qmp_path : NULL, addr, sizeof(addr),
                       &lfd);
    if (rc < 0)
        goto fail;
    if (!q->log_path && pipe2(pipefd, O_CLOEXEC) < 0) {
        rc = -errno;
        goto fail;
    }
    while (argv[argc])
        argc++;
    av = calloc(argc + 5, sizeof(*av));
    if (!av) {
        rc = -ENOMEM;
        goto fail;
    }
    memcpy(av, argv, argc * sizeof(*av));
    snprintf(chardev, sizeof(chardev),
             "socket,id=colo-qmp,fd=%d,server=on,wait=off", lfd);
    av[argc] = (char *)"-chardev";
    av[argc + 1] = chardev;
    av[argc + 2] = (char *)"-mon";
    av[argc + 3] = (char *)"chardev=colo-qmp,mode=control";

    if (colo_log_get_level() >= COLO_LOG_DEBUG) {
        char cmdline[2048];
        size_t off = 0;

        for (size_t i = 0; av[i] && off < sizeof(cmdline) - 1; i++) {
            int n = snprintf(cmdline + off, sizeof(cmdline) - off, "%s%s",
                             i ? " " : "", av[i]);

            if (n < 0)
                break;
            off += (size_t)n;
        }
        colo_debug("qemu[%s]: exec %s", q->name, cmdline);
    }
    parent = getpid();
    fflush(NULL);
    q->pid = fork();
    if (q->pid < 0) {
        rc = -errno;
        goto fail;
    }
    if (q->pid == 0)
        child_exec(av, lfd, pipefd[1], parent, q->log_path);
    free(av);
    av = NULL;
    colo_close(&pipefd[1]);
    colo_close(&lfd); /* QEMU has it; we connect by address */
    q->errfd = pipefd[0];
    pipefd[0] = -1;
    if (q->errfd >= 0)
        colo_fd_set_nonblock(q->errfd, 1);

    q->pidfd = (int)syscall(SYS_pidfd_open, q->pid, 0);
    if (q->pidfd < 0) {
        rc = -errno;
        colo_err("qemu[%s]: pidfd_open: %s", q->name, strerror(errno));
        goto fail;
    }
    event_assign(q->ev_pid, base, q->pidfd, EV_READ | EV_PERSIST, pid_cb, q);
    if (q->errfd >= 0)
        event_assign(q->ev_err, base, q->errfd, EV_READ | EV_PERSIST, err_cb,
                     q);
    tv = colo_ms_to_tv(timeout_ms);
    if (event_add(q->ev_pid, NULL) < 0 ||
        (q->errfd >= 0 && event_add(q->ev_err, NULL) < 0) ||
        evtimer_add(q->ev_timer, &tv) < 0) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = qmp_client_connect_path(q->client, addr, connect_cb, q);
    if (rc < 0) {
        colo_err("qemu[%s]: connect to %s: %s", q->name, addr,
                 colo_strerror(rc));
        goto fail;
    }
    colo_debug("qemu[%s]: started pid %d, QMP at %s", q->name, (int)q->pid,
               addr);
    *ret_q = q;
    return 0;
fail:
    free(av);
    colo_close(&lfd);
    colo_close(&pipefd[0]);
    colo_close(&pipefd[1]);
    qmp_qemu_free(q);
    return rc;
}

/* free (kill_it: SIGKILL, reap, unlink the socket) or release (QEMU runs
 * on, its monitor free for others). */
static void q_dispose(struct qmp_qemu *q, bool kill_it)
{
    if (!q || q->dead)
        return;
    q->dead = true;
    qmp_client_free(q->client);
    q->client = NULL;
    if (kill_it && q->pid > 0 && !q->reaped) {
        kill(q->pid, SIGKILL);
        while (waitpid(q->pid, &q->wstatus, 0) < 0 && errno == EINTR)
            ;
        q->reaped = true;
    }
    event_free(q->ev_pid);
    event_free(q->ev_err);
    event_free(q->ev_timer);
    colo_close(&q->pidfd);
    colo_close(&q->errfd);
    if (kill_it && q->path)
        unlink(q->path);
    if (q->depth == 0)
        q_release(q);
}

void qmp_qemu_free(struct qmp_qemu *q)
{
    q_dispose(q, true);
}

void qmp_qemu_release(struct qmp_qemu *q)
{
    q_dispose(q, false);
}

void qmp_qemu_set_exit_cb(struct qmp_qemu *q, qmp_exit_cb cb, void *arg)
{
    q->exit_cb = cb;
    q->exit_arg = arg;
}

struct qmp_client *qmp_qemu_client(struct qmp_qemu *q)
{
    return q->client;
}

pid_t qmp_qemu_pid(const struct qmp_qemu *q)
{
    return q->reaped ? -1 : q->pid;
}

bool qmp_qemu_exited(const struct qmp_qemu *q)
{
    return q->reaped;
}

int qmp_qemu_wait_status(const struct qmp_qemu *q)
{
    return q->reaped ? q->wstatus : -1;
}

int qmp_qemu_kill(struct qmp_qemu *q, int sig)
{
    if (q->reaped || q->pid <= 0)
        return 0;
    if (kill(q->pid, sig) < 0)
        return -errno;
    return 0;
}

const char *qmp_qemu_stderr_tail(const struct qmp_qemu *q)
{
    return q->tail;
}

const char *qmp_qemu_describe_exit(const struct qmp_qemu *q)
{
    describe((struct qmp_qemu *)q);
    return q->exitmsg;
}

const char *const *qmp_secondary_args(void)
{
    static const char *const args[] = {
        "-S",
        "-incoming",
        "defer",
        "-global",
        "migration.send-configuration=off",
        "-machine",
        "suppress-vmdesc=on",
        NULL,
    };
    return args;
}
