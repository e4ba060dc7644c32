/*
 * qmp against a real QEMU 7.2 (bare: -S, no guest kernel).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fault.h"
#include "common/fd.h"
#include "qmp/devstate.h"
#include "qmp/launch.h"
#include "qmp/qmp.h"
#include "qtest.h"

static struct event_base *base;
static struct qmp_qemu *qemu;

static void setup(void)
{
    base = event_base_new();
    cr_assert(base);
    qemu = NULL;
}

static void teardown(void)
{
    qmp_qemu_free(qemu); /* kills QEMU even when a test failed */
    qemu = NULL;
    event_base_free(base);
}

TestSuite(qmp_qemu, .init = setup, .fini = teardown);

static struct qmp_client *start_bare(const char *const *extra)
{
    char status[32] = "";
    int rc;

    rc = qt_launch(base, qt_bare_argv(extra), NULL, &qemu, status,
                   sizeof(status));
    cr_assert_eq(rc, 0, "launch: %s", colo_strerror(rc));
    cr_assert_str_eq(status, "prelaunch");
    return qmp_qemu_client(qemu);
}

Test(qmp_qemu, greeting_and_version)
{
    struct qmp_client *c;
    const struct qmp_version *v;

    if (!qt_have_qemu())
        return;
    c = start_bare(NULL);
    cr_assert_eq(qmp_client_state(c), QMP_CONNECTED);
    v = qmp_client_version(c);
    cr_assert(v);
    cr_assert_eq(v->major, 7, "QEMU %d.%d.%d", v->major, v->minor, v->micro);
    cr_assert_eq(v->minor, 2);
    cr_assert(v->package[0] != '\0', "package string kept");
    cr_assert(qmp_version_cmp(v, 7, 2, 0) >= 0);
    cr_assert(qmp_version_cmp(v, 7, 3, 0) < 0);
    cr_assert(qmp_version_cmp(v, 6, 99, 99) > 0);
    cr_assert_eq(qmp_has_command(c, "query-status"), 1);
    cr_assert_eq(qmp_has_command(c, "xen-save-devices-state"), 1);
    cr_assert_eq(qmp_has_command(c, "no-such-command"), 0);
    cr_assert(qmp_qemu_pid(qemu) > 0);
}

struct many {
    int *fired;
    int done;
    int bad;
};

static struct many many;

static void many_cb(struct qmp_client *c, int rc, json_t *ret, const char *desc,
                    void *arg)
{
    intptr_t i = (intptr_t)arg;

    (void)c;
    (void)desc;
    many.fired[i]++;
    if (rc != 0 || !json_is_object(ret) ||
        !json_string_value(json_object_get(ret, "status")))
        many.bad++;
    many.done++;
}

Test(qmp_qemu, pipelined_1000)
{
    struct qmp_client *c;
    enum { N = 1000 };

    if (!qt_have_qemu())
        return;
    c = start_bare(NULL);
    many.fired = calloc(N, sizeof(int));
    many.done = 0;
    many.bad = 0;
    for (intptr_t i = 0; i < N; i++)
        cr_assert_eq(
            qmp_send(c, "query-status", NULL, -1, 0, many_cb, (void *)i, NULL),
            0);
    cr_assert(qmp_pending(c) > 0);
    cr_assert(qt_run_until_count(base, &many.done, N, 60000));
    for (int i = 0; i < N; i++)
        cr_assert_eq(many.fired[i], 1, "command %d fired %d times", i,
                     many.fired[i]);
    cr_assert_eq(many.bad, 0);
    cr_assert_eq(qmp_pending(c), 0);
    free(many.fired);
}

struct evrec {
    int stop;
    int resume;
    int64_t ts_sec;
    int replies;
};

static void ev_cb(struct qmp_client *c, const char *event, json_t *data,
                  int64_t sec, int64_t usec, void *arg)
{
    struct evrec *r = arg;

    (void)c;
    (void)data;
    (void)usec;
    if (strcmp(event, "STOP") == 0)
        r->stop++;
    if (strcmp(event, "RESUME") == 0)
        r->resume++;
    r->ts_sec = sec;
}

static void ok_cb(struct qmp_client *c, int rc, json_t *ret, const char *desc,
                  void *arg)
{
    struct evrec *r = arg;

    (void)c;
    (void)ret;
    cr_assert_eq(rc, 0, "%s", desc ? desc : colo_strerror(rc));
    r->replies++;
}

Test(qmp_qemu, stop_resume_events)
{
    struct qmp_client *c;
    struct evrec r = {0};

    if (!qt_have_qemu())
        return;
    c = start_bare(NULL);
    qmp_client_set_event_cb(c, ev_cb, &r);
    cr_assert_eq(qmp_cont(c, ok_cb, &r), 0);
    cr_assert(qt_run_until_count(base, &r.resume, 1, 10000));
    cr_assert_eq(qmp_stop(c, ok_cb, &r), 0);
    cr_assert(qt_run_until_count(base, &r.stop, 1, 10000));
    cr_assert(qt_run_until_count(base, &r.replies, 2, 10000));
    cr_assert_eq(r.resume, 1);
    cr_assert_eq(r.stop, 1);
    cr_assert(r.ts_sec > 1600000000, "event timestamp %lld",
              (long long)r.ts_sec);
}

struct errrec {
    bool done;
    int rc;
    char desc[256];
};

static void err_cb(struct qmp_client *c, int rc, json_t *ret, const char *desc,
                   void *arg)
{
    struct errrec *e = arg;

    (void)c;
    cr_assert(rc == 0 || ret == NULL, "ret only on success");
    e->rc = rc;
    snprintf(e->desc, sizeof(e->desc), "%s", desc ? desc : "");
    e->done = true;
}

Test(qmp_qemu, unknown_command)
{
    struct qmp_client *c;
    struct errrec e = {0};

    if (!qt_have_qemu())
        return;
    c = start_bare(NULL);
    cr_assert_eq(qmp_send(c, "no-such-command", NULL, -1, 0, err_cb, &e, NULL),
                 0);
    cr_assert(qt_run_until(base, &e.done, 10000));
    cr_assert_eq(e.rc, -COLO_EQMP_COMMAND_NOT_FOUND, "rc %d", e.rc);
    cr_assert(strstr(e.desc, "no-such-command"), "desc: %s", e.desc);
    cr_assert(colo_err_is_qmp_class(e.rc));
    /* The connection is fine afterwards. */
    e.done = false;
    json_t *args = json_pack("{s:s}", "id", "nonexistent");
    cr_assert_eq(qmp_send(c, "device_del", args, -1, 0, err_cb, &e, NULL), 0);
    json_decref(args); /* borrowed: serialised at once */
    cr_assert(qt_run_until(base, &e.done, 10000));
    cr_assert(e.rc == -COLO_EQMP_DEVICE_NOT_FOUND || e.rc == -COLO_EQMP_GENERIC,
              "rc %d %s", e.rc, e.desc);
}

struct killrec {
    int *fired;
    int done;
    int conn_err;
    bool exited;
    int exit_rc;
};

static struct killrec kr;

static void kill_cb(struct qmp_client *c, int rc, json_t *ret, const char *desc,
                    void *arg)
{
    (void)c;
    (void)ret;
    (void)desc;
    kr.fired[(intptr_t)arg]++;
    if (rc == -COLO_EQMP_DISCONNECTED)
        kr.conn_err++;
    kr.done++;
}

static void exit_cb(struct qmp_qemu *q, int rc, void *arg)
{
    (void)q;
    (void)arg;
    kr.exited = true;
    kr.exit_rc = rc;
}

Test(qmp_qemu, killed_with_commands_in_flight)
{
    struct qmp_client *c;
    enum { N = 50 };

    if (!qt_have_qemu())
        return;
    c = start_bare(NULL);
    memset(&kr, 0, sizeof(kr));
    kr.fired = calloc(N, sizeof(int));
    qmp_qemu_set_exit_cb(qemu, exit_cb, NULL);
    /* Freeze QEMU so no reply can come, then kill it. */
    cr_assert_eq(qmp_qemu_kill(qemu, SIGSTOP), 0);
    for (intptr_t i = 0; i < N; i++)
        cr_assert_eq(
            qmp_send(c, "query-status", NULL, -1, 0, kill_cb, (void *)i, NULL),
            0);
    cr_assert_eq(qmp_qemu_kill(qemu, SIGKILL), 0);
    cr_assert(qt_run_until(base, &kr.exited, 10000));
    cr_assert_eq(kr.done, N);
    cr_assert_eq(kr.conn_err, N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(kr.fired[i], 1);
    cr_assert_eq(kr.exit_rc, -COLO_EQEMU_DIED);
    cr_assert(qmp_qemu_exited(qemu));
    cr_assert(strstr(qmp_qemu_describe_exit(qemu), "signal 9"), "%s",
              qmp_qemu_describe_exit(qemu));
    cr_assert_eq(qmp_send(c, "query-status", NULL, -1, 0, kill_cb, NULL, NULL),
                 -ENOTCONN);
    free(kr.fired);
}

struct conrec {
    bool done;
    int rc;
};

static void con_cb(struct qmp_client *c, int rc, void *arg)
{
    struct conrec *r = arg;

    (void)c;
    r->rc = rc;
    r->done = true;
}

Test(qmp_qemu, second_client_busy)
{
    char dir[] = "/tmp/colo-qmp-XXXXXX";
    char path[128];
    struct qmp_launch_opts o = {.qmp_path = path};
    struct qmp_client_opts co = {.greeting_timeout_ms = 500};
    struct qmp_client *c2;
    struct conrec r = {0};
    char status[32];
    int rc;

    if (!qt_have_qemu())
        return;
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/qmp.sock", dir);
    rc = qt_launch(base, qt_bare_argv(NULL), &o, &qemu, status, sizeof(status));
    cr_assert_eq(rc, 0);
    c2 = qmp_client_new(base, &co);
    cr_assert_eq(qmp_client_connect_path(c2, path, con_cb, &r), 0);
    cr_assert(qt_run_until(base, &r.done, 10000));
    cr_assert_eq(r.rc, -COLO_EQMP_BUSY, "rc %s", colo_strerror(r.rc));
    cr_assert_eq(qmp_client_state(c2), QMP_DISCONNECTED);
    qmp_client_free(c2);
    /* The first client still works. */
    struct errrec e = {0};
    cr_assert_eq(qmp_send(qmp_qemu_client(qemu), "no-such", NULL, -1, 0, err_cb,
                          &e, NULL),
                 0);
    cr_assert(qt_run_until(base, &e.done, 10000));
    cr_assert_eq(e.rc, -COLO_EQMP_COMMAND_NOT_FOUND);
    qmp_qemu_free(qemu);
    qemu = NULL;
    cr_assert_eq(access(path, F_OK), -1, "socket path removed");
    rmdir(dir);
}

Test(qmp_qemu, bad_option_died)
{
    const char *extra[] = {"-no-such-option", NULL};
    char status[32];
    int rc;

    if (!qt_have_qemu())
        return;
    rc = qt_launch(base, qt_bare_argv(extra), NULL, &qemu, status,
                   sizeof(status));
    cr_assert_eq(rc, -COLO_EQEMU_DIED, "rc %s", colo_strerror(rc));
    cr_assert(strstr(qmp_qemu_stderr_tail(qemu), "no-such-option"), "tail: %s",
              qmp_qemu_stderr_tail(qemu));
    cr_assert(strstr(qmp_qemu_describe_exit(qemu), "exited with status 1"),
              "%s", qmp_qemu_describe_exit(qemu));
}

Test(qmp_qemu, missing_binary)
{
    char *argv[] = {(char *)"/nonexistent/qemu", NULL};
    char status[32];
    int rc;

    rc = qt_launch(base, argv, NULL, &qemu, status, sizeof(status));
    cr_assert_eq(rc, -COLO_EQEMU_DIED);
    cr_assert(strstr(qmp_qemu_describe_exit(qemu), "status 127"));
}

struct fdrec {
    bool done;
    int rc;
    int fdset;
    int qfd;
};

static void addfd_cb(struct qmp_client *c, int rc, int fdset, int qfd,
                     void *arg)
{
    struct fdrec *r = arg;

    (void)c;
    r->rc = rc;
    r->fdset = fdset;
    r->qfd = qfd;
    r->done = true;
}

Test(qmp_qemu, add_fd_and_getfd)
{
    struct qmp_client *c;
    struct fdrec r = {0};
    struct errrec e = {0};
    int fds[2];
    int before = colo_count_open_fds();

    if (!qt_have_qemu())
        return;
    c = start_bare(NULL);
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    cr_assert_eq(qmp_add_fd(c, fds[1], -1, addfd_cb, &r), 0);
    cr_assert(qt_run_until(base, &r.done, 10000));
    cr_assert_eq(r.rc, 0);
    cr_assert(r.fdset >= 0 && r.qfd >= 0);
    cr_assert_eq(qmp_getfd(c, fds[0], "mine", err_cb, &e), 0);
    cr_assert(qt_run_until(base, &e.done, 10000));
    cr_assert_eq(e.rc, 0, "%s", e.desc);
    e.done = false;
    cr_assert_eq(qmp_closefd(c, "mine", err_cb, &e), 0);
    cr_assert(qt_run_until(base, &e.done, 10000));
    cr_assert_eq(e.rc, 0);
    e.done = false;
    cr_assert_eq(qmp_closefd(c, "mine", err_cb, &e), 0);
    cr_assert(qt_run_until(base, &e.done, 10000));
    cr_assert_eq(e.rc, -COLO_EQMP_GENERIC);
    colo_close(&fds[0]);
    colo_close(&fds[1]);
    /* The client's dups are closed once sent. */
    cr_assert_eq(colo_count_open_fds(), before + 0 + 3,
                 "fds: %d vs %d (+ client socket, pidfd, stderr pipe)",
                 colo_count_open_fds(), before);
}

struct saverec {
    bool done;
    int rc;
    uint8_t *blob;
    size_t len;
    bool was_running;
};

static void save_cb(struct qmp_client *c, int rc, uint8_t *blob, size_t len,
                    bool was_running, void *arg)
{
    struct saverec *r = arg;

    (void)c;
    r->rc = rc;
    r->blob = blob;
    r->len = len;
    r->was_running = was_running;
    r->done = true;
}

struct strec {
    bool done;
    char status[32];
    bool running;
};

static void st_cb(struct qmp_client *c, int rc, const char *status,
                  bool running, void *arg)
{
    struct strec *r = arg;

    (void)c;
    cr_assert_eq(rc, 0);
    snprintf(r->status, sizeof(r->status), "%s", status);
    r->running = running;
    r->done = true;
}

Test(qmp_qemu, save_gives_qevm_blob)
{
    struct qmp_client *c;
    struct saverec r = {0};
    struct strec st = {0};
    struct evrec ev = {0};
    struct qmp_saver *s;

    if (!qt_have_qemu())
        return;
    c = start_bare(NULL);
    /* Running first: the save stops it, and QMP_SAVE_RESUME resumes. */
    cr_assert_eq(qmp_cont(c, ok_cb, &ev), 0);
    cr_assert(qt_run_until_count(base, &ev.replies, 1, 10000));
    cr_assert_eq(qmp_devstate_save(c, QMP_SAVE_RESUME, save_cb, &r), 0);
    cr_assert(qt_run_until(base, &r.done, 20000));
    cr_assert_eq(r.rc, 0, "%s", colo_strerror(r.rc));
    cr_assert(r.len > 1000, "len %zu", r.len);
    cr_assert_eq(memcmp(r.blob, "QEVM", 4), 0);
    cr_assert(r.was_running);
    free(r.blob);
    cr_assert_eq(qmp_query_status(c, st_cb, &st), 0);
    cr_assert(qt_run_until(base, &st.done, 10000));
    cr_assert_str_eq(st.status, "running");

    /* A reusable saver: two saves, both whole, same fdset. */
    cr_assert_eq(qmp_saver_new(c, &s), 0);
    for (int i = 0; i < 3; i++) {
        memset(&r, 0, sizeof(r));
        cr_assert_eq(qmp_saver_save(s, 0, save_cb, &r), 0);
        cr_assert_eq(qmp_saver_save(s, 0, save_cb, &r), -EBUSY);
        cr_assert(qt_run_until(base, &r.done, 20000));
        cr_assert_eq(r.rc, 0, "%s", colo_strerror(r.rc));
        cr_assert_eq(memcmp(r.blob, "QEVM", 4), 0);
        cr_assert_eq(r.was_running, i == 0);
        free(r.blob);
    }
    qmp_saver_free(s);
}

Test(qmp_qemu, saver_free_midway_no_callback)
{
    struct qmp_client *c;
    struct saverec r = {0};
    struct qmp_saver *s;
    struct strec st = {0};

    if (!qt_have_qemu())
        return;
    c = start_bare(NULL);
    cr_assert_eq(qmp_saver_new(c, &s), 0);
    cr_assert_eq(qmp_saver_save(s, 0, save_cb, &r), 0);
    qmp_saver_free(s);
    cr_assert_eq(qmp_query_status(c, st_cb, &st), 0);
    cr_assert(qt_run_until(base, &st.done, 10000));
    cr_assert(!r.done, "no callback after free");
}

Test(qmp_qemu, start_timeout)
{
    /* A "QEMU" that holds the socket but never greets: the extra QMP
     * arguments become the shell's positional parameters. */
    char *argv[] = {(char *)"/bin/sh", (char *)"-c", (char *)"sleep 30", NULL};
    struct qmp_launch_opts o = {.start_timeout_ms = 300};
    char status[32];
    int rc;

    rc = qt_launch(base, argv, &o, &qemu, status, sizeof(status));
    cr_assert_eq(rc, -ETIMEDOUT, "rc %s", colo_strerror(rc));
    cr_assert(qmp_qemu_pid(qemu) > 0 || qmp_qemu_exited(qemu));
    qmp_qemu_free(qemu); /* kills and reaps the shell */
    qemu = NULL;
}

struct loadrec {
    bool done;
    int rc;
    enum qmp_loader loader;
};

static void load_cb(struct qmp_client *c, int rc, enum qmp_loader loader,
                    void *arg)
{
    struct loadrec *r = arg;

    (void)c;
    r->rc = rc;
    r->loader = loader;
    r->done = true;
}

Test(qmp_qemu, bare_save_load_and_fault_point)
{
    struct qmp_client *c;
    struct qmp_qemu *sec = NULL;
    struct qmp_client *c2;
    struct saverec r = {0};
    struct loadrec lr = {0};
    struct strec st = {0};
    char status[32] = "";
    int rc;

    if (!qt_have_qemu())
        return;
    c = start_bare(NULL);
    cr_assert_eq(qmp_devstate_save(c, 0, save_cb, &r), 0);
    cr_assert(qt_run_until(base, &r.done, 20000));
    cr_assert_eq(r.rc, 0);
    cr_assert(!r.was_running, "prelaunch is not running");

    rc = qt_launch(base, qt_bare_argv(qmp_secondary_args()), NULL, &sec, status,
                   sizeof(status));
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(status, "inmigrate");
    c2 = qmp_qemu_client(sec);

    /* The fault point fails the load before QEMU is asked to load. */
    setenv("COLO_FAULT", "8", 1);
    colo_fault_reload();
    cr_assert_eq(qmp_devstate_load(c2, r.blob, r.len, 0, load_cb, &lr), 0);
    cr_assert(qt_run_until(base, &lr.done, 10000));
    unsetenv("COLO_FAULT");
    colo_fault_reload();
    cr_assert_eq(lr.rc, -COLO_EFAULT_INJECTED);

    /* The one-shot incoming path is still unused: a real load works. */
    memset(&lr, 0, sizeof(lr));
    cr_assert_eq(qmp_devstate_load(c2, r.blob, r.len, 0, load_cb, &lr), 0);
    cr_assert(qt_run_until(base, &lr.done, 20000));
    cr_assert_eq(lr.rc, 0, "%s", colo_strerror(lr.rc));
    cr_assert_eq(lr.loader, QMP_LOADER_INCOMING);
    cr_assert_eq(qmp_query_status(c2, st_cb, &st), 0);
    cr_assert(qt_run_until(base, &st.done, 10000));
    cr_assert_str_eq(st.status, "running");
    cr_assert(st.running);
    free(r.blob);
    qmp_qemu_free(sec);
}

/* ---- detached launches (a Xen device model outlives colo) ------------ */

Test(qmp_qemu, detached_release_leaves_it_running)
{
    char dir[] = "/tmp/colo-detached-XXXXXX";
    char log[64], sock[64], status[32] = "";
    struct qmp_launch_opts o = {.name = "dm"};
    struct conrec cr = {0};
    struct qmp_client *c2;
    pid_t pid;
    int rc, st;

    if (!qt_have_qemu())
        return;
    cr_assert(mkdtemp(dir));
    snprintf(log, sizeof(log), "%s/qemu.log", dir);
    snprintf(sock, sizeof(sock), "%s/qmp", dir);
    o.log_path = log;
    o.qmp_path = sock;
    rc = qt_launch(base, qt_bare_argv(NULL), &o, &qemu, status, sizeof(status));
    cr_assert_eq(rc, 0, "launch: %s", colo_strerror(rc));
    pid = qmp_qemu_pid(qemu);
    cr_assert_gt(pid, 0);
    qmp_qemu_release(qemu);
    qemu = NULL;
    /* Still alive, and its monitor now answers another client. */
    cr_assert_eq(kill(pid, 0), 0, "QEMU died when released");
    c2 = qmp_client_new(base, NULL);
    cr_assert(c2);
    cr_assert_eq(qmp_client_connect_path(c2, sock, con_cb, &cr), 0);
    cr_assert(qt_run_until(base, &cr.done, 10000), "no greeting");
    cr_assert_eq(cr.rc, 0, "connect: %s", colo_strerror(cr.rc));
    qmp_client_free(c2);
    kill(pid, SIGKILL);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    unlink(sock);
    unlink(log);
    rmdir(dir);
}

Test(qmp_qemu, detached_start_failure_tail_from_log)
{
    const char *extra[] = {"-no-such-option", NULL};
    char dir[] = "/tmp/colo-detached-XXXXXX";
    char log[64], status[32];
    struct qmp_launch_opts o = {.name = "dm"};
    int rc;

    if (!qt_have_qemu())
        return;
    cr_assert(mkdtemp(dir));
    snprintf(log, sizeof(log), "%s/qemu.log", dir);
    o.log_path = log;
    rc =
        qt_launch(base, qt_bare_argv(extra), &o, &qemu, status, sizeof(status));
    cr_assert_eq(rc, -COLO_EQEMU_DIED, "rc %s", colo_strerror(rc));
    cr_assert(strstr(qmp_qemu_describe_exit(qemu), "no-such-option"), "%s",
              qmp_qemu_describe_exit(qemu));
    unlink(log);
    rmdir(dir);
}
