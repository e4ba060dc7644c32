#include "xen_tutil.h"

#include <criterion/criterion.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fd.h"

#define ORACLE "/usr/lib/xen-4.17/bin/verify-stream-v2"

static void cat(char *dst, size_t sz, const char *s)
{
    size_t l = strlen(dst);

    snprintf(dst + l, sz - l, "%s", s);
}

int tctx_default_reply(const struct ckpt_xen_call *c)
{
    switch (c->cb) {
    case CKPT_XEN_CB_SUSPEND:
    case CKPT_XEN_CB_POSTCOPY:
        return 1;
    case CKPT_XEN_CB_PRECOPY_POLICY:
        return c->b >= 2 ? 1 : 0; /* two passes, then stop and copy */
    case CKPT_XEN_CB_CHECKPOINT:
    case CKPT_XEN_CB_WAIT_CHECKPOINT:
        return 1;
    default:
        return 0;
    }
}

static void on_call(struct ckpt_xen_helper *h, const struct ckpt_xen_call *c,
                    void *opaque)
{
    struct tctx *t = opaque;
    int v;
    char w[64];

    t->ncalls[c->cb]++;
    if (c->cb == CKPT_XEN_CB_SWITCH_LOGDIRTY)
        snprintf(w, sizeof(w), "logdirty%u ", c->a);
    else
        snprintf(w, sizeof(w), "%s ", ckpt_xen_cb_name(c->cb));
    cat(t->seq, sizeof(t->seq), w);
    v = t->on_call ? t->on_call(t, c) : tctx_default_reply(c);
    if (v != TUTIL_NO_REPLY)
        ckpt_xen_helper_reply(h, v);
}

static void on_log(struct ckpt_xen_helper *h, int level, const char *line,
                   void *opaque)
{
    struct tctx *t = opaque;

    (void)h;
    (void)level;
    t->nlogs++;
    cat(t->logs, sizeof(t->logs), line);
    cat(t->logs, sizeof(t->logs), "\n");
}

static void on_progress(struct ckpt_xen_helper *h, uint64_t done,
                        uint64_t total, const char *what, void *opaque)
{
    struct tctx *t = opaque;

    (void)h;
    (void)done;
    (void)total;
    (void)what;
    t->nprogress++;
}

static void on_results(struct ckpt_xen_helper *h, uint64_t store,
                       uint64_t console, void *opaque)
{
    struct tctx *t = opaque;

    (void)h;
    t->nresults++;
    t->store_gfn = store;
    t->console_gfn = console;
    cat(t->seq, sizeof(t->seq), "restore_results ");
}

static void on_done(struct ckpt_xen_helper *h, int rc,
                    const struct ckpt_xen_result *res, void *opaque)
{
    struct tctx *t = opaque;

    t->ndone++;
    t->rc = rc;
    t->res = *res;
    if (t->free_in_done) { /* allowed: done is the object's last act */
        ckpt_xen_helper_free(h);
        t->h = NULL;
    }
    event_base_loopbreak(t->base);
}

static const struct ckpt_xen_helper_owner owner = {
    .call = on_call,
    .log = on_log,
    .progress = on_progress,
    .restore_results = on_results,
    .done = on_done,
};

void tctx_init_on(struct tctx *t, struct event_base *base)
{
    memset(t, 0, sizeof(*t));
    t->io_fd = -1;
    t->own_base = base == NULL;
    t->base = base ? base : event_base_new();
    cr_assert(t->base);
    t->h = ckpt_xen_helper_new(t->base, &owner, t);
    cr_assert(t->h);
}

void tctx_init(struct tctx *t)
{
    tctx_init_on(t, NULL);
}

void tctx_dispose(struct tctx *t)
{
    ckpt_xen_helper_free(t->h);
    t->h = NULL;
    if (t->base && t->own_base)
        event_base_free(t->base);
    t->base = NULL;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

void tctx_run(struct tctx *t, int timeout_ms)
{
    struct event *tm = evtimer_new(t->base, on_timeout, t->base);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};

    evtimer_add(tm, &tv);
    while (t->ndone == 0 && evtimer_pending(tm, NULL))
        event_base_loop(t->base, EVLOOP_ONCE);
    event_free(tm);
    cr_assert_eq(t->ndone, 1, "helper did not finish in %d ms (seq: %s)",
                 timeout_ms, t->seq);
    /* Exactly once: nothing more may fire afterwards. */
    event_base_loop(t->base, EVLOOP_NONBLOCK);
    cr_assert_eq(t->ndone, 1);
}

void tctx_start(struct tctx *t, const char *exe,
                const struct ckpt_xen_helper_params *p)
{
    struct ckpt_xen_helper_params q = *p;

    q.exe = exe ? exe : FAKE_HELPER;
    cr_assert_eq(ckpt_xen_helper_start(t->h, &q), 0);
    cr_assert_eq(ckpt_xen_helper_state(t->h), CKPT_XEN_H_RUNNING);
}

int tutil_tmpfile(void)
{
    char path[] = "/tmp/colo-xen-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);

    cr_assert(fd >= 0);
    unlink(path);
    return fd;
}

int tutil_oracle(int fd, const char *fmt)
{
    pid_t pid;
    int status;

    if (access(ORACLE, X_OK) != 0)
        return -1;
    lseek(fd, 0, SEEK_SET);
    pid = fork();
    if (pid == 0) { /* no Criterion asserts in the child */
        int null = open("/dev/null", O_WRONLY);
        int in = dup(fd);

        dup2(null, 1);
        setenv("PYTHONPATH", "/usr/lib/xen-4.17/lib/python", 1);
        dup2(in, 100);
        close_range(3, 99, 0);
        close_range(101, ~0u, 0);
        execl(ORACLE, ORACLE, "-f", fmt, "-i", "/proc/self/fd/100",
              (char *)NULL);
        _exit(127);
    }
    cr_assert(pid > 0);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}
