/*
 * The parent's helper object against scripted helpers (forked children
 * that speak the channel protocol byte by byte, crash, or babble) and the
 * fake-libxc helper process (crash mid-save, cancel).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <spawn.h>
#include <unistd.h>

extern char **environ;

#include "checkpoint/xen_helper.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"
#include "transport/xen_stream.h"
#include "xen_tutil.h"

/* The scripted helpers live in xen-fake-helper ("script NAME FD"): a
 * forked copy of a Criterion worker must not run test code. */
static void start_script(struct tctx *t, const char *name)
{
    int sv[2];
    pid_t pid;
    posix_spawn_file_actions_t fa;
    char *argv[] = {(char *)FAKE_HELPER, (char *)"script", (char *)name,
                    (char *)"10", NULL};

    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 10);
    cr_assert_eq(posix_spawn(&pid, FAKE_HELPER, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(sv[1]);
    cr_assert_eq(ckpt_xen_helper_attach(t->h, sv[0], pid, -1), 0);
}

/* ---- every message, both ways, byte at a time --------------------------- */

struct deferred {
    struct tctx *t;
    int value;
    struct event *ev;
};

static void reply_later(evutil_socket_t fd, short what, void *arg)
{
    struct deferred *d = arg;

    (void)fd;
    (void)what;
    cr_assert_eq(ckpt_xen_helper_reply(d->t->h, d->value), 0);
    cr_assert_eq(ckpt_xen_helper_reply(d->t->h, d->value), -EBUSY);
}

static int script_reply(struct tctx *t, const struct ckpt_xen_call *c)
{
    struct deferred *d = t->user;

    cr_assert_eq(c->b, 100 + c->cb);
    cr_assert_eq(ckpt_xen_helper_state(t->h), CKPT_XEN_H_CALLING);
    if (c->cb == CKPT_XEN_CB_PRECOPY_POLICY) {
        /* Answer from a later loop iteration, not from inside the
         * callback. */
        struct timeval tv = {0, 0};

        d->value = (int)(c->cb * 3 + c->a);
        evtimer_add(d->ev, &tv);
        return TUTIL_NO_REPLY;
    }
    return (int)(c->cb * 3 + c->a);
}

Test(helper, every_message_byte_at_a_time)
{
    struct tctx t;
    struct deferred d;

    tctx_init(&t);
    d.t = &t;
    d.ev = evtimer_new(t.base, reply_later, &d);
    t.user = &d;
    t.on_call = script_reply;
    cr_assert_eq(ckpt_xen_helper_reply(t.h, 1), -EBUSY); /* IDLE */
    start_script(&t, "all");
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, 0, "%s", t.res.error);
    cr_assert_eq(t.res.exit_status, 0, "script failed at step %d",
                 t.res.exit_status);
    cr_assert_str_eq(t.seq,
                     "suspend precopy_policy postcopy checkpoint "
                     "wait_checkpoint logdirty7 static_data_done "
                     "restore_results ",
                     "%s", t.seq);
    cr_assert_eq(t.nlogs, 1);
    cr_assert_str_eq(t.logs, "xc: hello\n");
    cr_assert_eq(t.nprogress, 1);
    cr_assert_eq(t.res.store_gfn, 0x1234);
    cr_assert_eq(t.res.console_gfn, 0x5678);
    cr_assert_eq(ckpt_xen_helper_state(t.h), CKPT_XEN_H_FINISHED);
    event_free(d.ev);
    tctx_dispose(&t);
}

static void expect_helper_error(const char *s, const char *needle)
{
    struct tctx t;

    tctx_init(&t);
    start_script(&t, s);
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, -COLO_EHELPER, "rc %d (%s)", t.rc, t.res.error);
    cr_assert(strstr(t.res.error, needle), "%s", t.res.error);
    tctx_dispose(&t);
}

Test(helper, exit_without_result)
{
    expect_helper_error("exit-early", "without a result");
}

Test(helper, oversized_frame_kills_helper)
{
    expect_helper_error("garbage", "channel failed");
}

Test(helper, truncated_frame_at_eof)
{
    expect_helper_error("truncated", "channel failed");
}

Test(helper, message_after_done)
{
    expect_helper_error("after-done", "channel failed");
}

/* ---- the fake-libxc helper process -------------------------------------- */

static int kill_on_second_suspend(struct tctx *t, const struct ckpt_xen_call *c)
{
    if (c->cb == CKPT_XEN_CB_SUSPEND && t->ncalls[c->cb] == 2) {
        cr_assert_eq(kill(ckpt_xen_helper_pid(t->h), SIGKILL), 0);
        return 1; /* the reply may or may not reach a dead helper */
    }
    if (c->cb == CKPT_XEN_CB_CHECKPOINT)
        return 1;
    return tctx_default_reply(c);
}

Test(helper, crash_mid_save)
{
    struct tctx t;
    int fd = tutil_tmpfile();
    struct ckpt_xen_helper_params p = {.op = CKPT_XEN_OP_SAVE,
                                       .stream = CKPT_XEN_STREAM_REMUS,
                                       .domid = 3,
                                       .io_fd = fd,
                                       .back_fd = -1};

    tctx_init(&t);
    t.on_call = kill_on_second_suspend;
    tctx_start(&t, NULL, &p);
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, -COLO_EHELPER, "rc %d", t.rc);
    cr_assert_eq(t.res.term_signal, SIGKILL);
    cr_assert(strstr(t.res.error, "killed by signal 9"), "%s", t.res.error);
    cr_assert_eq(t.ncalls[CKPT_XEN_CB_SUSPEND], 2);
    close(fd);
    tctx_dispose(&t);
}

static int cancel_on_checkpoint(struct tctx *t, const struct ckpt_xen_call *c)
{
    if (c->cb == CKPT_XEN_CB_CHECKPOINT) {
        ckpt_xen_helper_cancel(t->h);
        cr_assert_eq(ckpt_xen_helper_state(t->h), CKPT_XEN_H_CANCELLED);
        ckpt_xen_helper_cancel(t->h); /* idempotent */
        cr_assert_eq(ckpt_xen_helper_reply(t->h, 1), -EBUSY);
        return TUTIL_NO_REPLY;
    }
    return tctx_default_reply(c);
}

Test(helper, cancel_mid_save_breaks_stream)
{
    struct tctx t;
    int sv[2];
    uint8_t buf[65536];
    ssize_t n;
    size_t total = 0;
    struct ckpt_xen_helper_params p = {.op = CKPT_XEN_OP_SAVE,
                                       .stream = CKPT_XEN_STREAM_REMUS,
                                       .domid = 3,
                                       .back_fd = -1};

    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    p.io_fd = sv[0];
    tctx_init(&t);
    t.on_call = cancel_on_checkpoint;
    tctx_start(&t, NULL, &p);
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, -COLO_ECANCELLED, "rc %d", t.rc);
    cr_assert_eq(t.ncalls[CKPT_XEN_CB_CHECKPOINT], 1);
    /* Writes on the stream fd fail cleanly now (EPIPE, no SIGPIPE) ... */
    cr_assert_eq(send(sv[0], "x", 1, MSG_NOSIGNAL), -1);
    cr_assert_eq(errno, EPIPE);
    /* ... and the receiver sees what was sent, then the end. */
    while ((n = read(sv[1], buf, sizeof(buf))) > 0)
        total += (size_t)n;
    cr_assert_eq(n, 0);
    cr_assert_gt(total, 8 * 4096);
    cr_assert_eq(xprt_libxc_ihdr_check(buf, NULL) >= 0 || total > 0, 1);
    /* Cancel after the end is a no-op; done does not fire again. */
    ckpt_xen_helper_cancel(t.h);
    event_base_loop(t.base, EVLOOP_NONBLOCK);
    cr_assert_eq(t.ndone, 1);
    close(sv[0]);
    close(sv[1]);
    tctx_dispose(&t);
}

static int never_reply(struct tctx *t, const struct ckpt_xen_call *c)
{
    (void)c;
    event_base_loopbreak(t->base);
    return TUTIL_NO_REPLY;
}

Test(helper, free_with_live_helper)
{
    struct tctx t;
    int fd = tutil_tmpfile();
    int before;
    struct ckpt_xen_helper_params p = {.op = CKPT_XEN_OP_SAVE,
                                       .stream = CKPT_XEN_STREAM_PLAIN,
                                       .domid = 3,
                                       .io_fd = fd,
                                       .back_fd = -1};
    pid_t pid;

    tctx_init(&t);
    before = colo_count_open_fds();
    t.on_call = never_reply;
    tctx_start(&t, NULL, &p);
    pid = ckpt_xen_helper_pid(t.h);
    while (ckpt_xen_helper_state(t.h) != CKPT_XEN_H_CALLING)
        cr_assert_eq(event_base_loop(t.base, EVLOOP_ONCE), 0);
    ckpt_xen_helper_free(t.h); /* kills and reaps; no done */
    t.h = NULL;
    cr_assert_eq(t.ndone, 0);
    cr_assert_eq(kill(pid, 0), -1); /* reaped: gone */
    cr_assert_eq(colo_count_open_fds(), before);
    close(fd);
    tctx_dispose(&t);
}

Test(helper, start_errors)
{
    struct tctx t;
    struct ckpt_xen_helper_params p = {.op = CKPT_XEN_OP_SAVE, .io_fd = -1};

    tctx_init(&t);
    cr_assert_eq(ckpt_xen_helper_start(t.h, &p), -EINVAL);
    p.io_fd = 0;
    p.op = 0;
    cr_assert_eq(ckpt_xen_helper_start(t.h, &p), -EINVAL);
    cr_assert_eq(ckpt_xen_helper_state(t.h), CKPT_XEN_H_IDLE);
    tctx_dispose(&t);
}

/* A helper binary that cannot be executed: exit 127, no result. */
Test(helper, exec_failure_is_an_error)
{
    struct tctx t;
    int fd = tutil_tmpfile();
    struct ckpt_xen_helper_params p = {
        .op = CKPT_XEN_OP_SAVE, .io_fd = fd, .back_fd = -1};

    tctx_init(&t);
    tctx_start(&t, "/nonexistent/colo", &p);
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, -COLO_EHELPER);
    cr_assert_eq(t.res.exit_status, 127);
    close(fd);
    tctx_dispose(&t);
}

Test(helper, silent_helper_times_out)
{
    struct tctx t;

    tctx_init(&t);
    ckpt_xen_helper_set_timeout(t.h, 200);
    start_script(&t, "hang");
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, -COLO_EHELPER, "rc %d", t.rc);
    cr_assert(strstr(t.res.error, "silent for 200 ms"), "%s", t.res.error);
    cr_assert_eq(t.nlogs, 1);
    cr_assert_eq(t.res.term_signal, SIGKILL);
    tctx_dispose(&t);
}

/* The deadline does not run while the owner owes the reply. */
struct late {
    struct tctx *t;
    struct event *ev;
};

static void late_reply(evutil_socket_t fd, short what, void *arg)
{
    struct late *l = arg;

    (void)fd;
    (void)what;
    cr_assert_eq(ckpt_xen_helper_reply(l->t->h, 1), 0);
}

static int slow_suspend(struct tctx *t, const struct ckpt_xen_call *c)
{
    struct late *l = t->user;
    struct timeval tv = {2, 500000}; /* well over the deadline */

    if (c->cb == CKPT_XEN_CB_SUSPEND) {
        evtimer_add(l->ev, &tv);
        return TUTIL_NO_REPLY;
    }
    return tctx_default_reply(c);
}

Test(helper, slow_owner_is_not_a_silent_helper)
{
    struct tctx t;
    struct late l;
    int fd = tutil_tmpfile();
    struct ckpt_xen_helper_params p = {.op = CKPT_XEN_OP_SAVE,
                                       .stream = CKPT_XEN_STREAM_PLAIN,
                                       .domid = 3,
                                       .io_fd = fd,
                                       .back_fd = -1};

    tctx_init(&t);
    l.t = &t;
    l.ev = evtimer_new(t.base, late_reply, &l);
    t.user = &l;
    t.on_call = slow_suspend;
    ckpt_xen_helper_set_timeout(t.h, 1000);
    tctx_start(&t, NULL, &p);
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, 0, "%s", t.res.error);
    cr_assert_eq(t.ncalls[CKPT_XEN_CB_SUSPEND], 1);
    event_free(l.ev);
    close(fd);
    tctx_dispose(&t);
}
