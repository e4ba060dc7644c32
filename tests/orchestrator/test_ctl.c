/*
 * The control socket, against a real unix socket: a server on a libevent
 * loop in the test thread, the blocking CLI client in a second thread.
 */
#include "ctl.h"

#include "common/error.h"
#include "common/fd.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct fixture {
    struct event_base *base;
    struct orch_ctl_server *srv;
    char dir[64];
    char *path;
    struct orch_ctl_req *held; /* a request answered later */
    int handled;
    /* client thread */
    pthread_t th;
    json_t *request;
    const char *raw; /* raw bytes instead of request */
    json_t *final;
    char *err;
    int lines;
    struct event *done_ev;
    int done_pipe[2]; /* the client thread wakes the loop through it */
};

static void on_line(json_t *line, void *arg)
{
    struct fixture *f = arg;
    const char *ev = json_string_value(json_object_get(line, "event"));

    /* No Criterion asserts off the main thread: count, check later. */
    if (ev && strcmp(ev, "progress") == 0)
        f->lines++;
}

static json_t *raw_call(struct fixture *f)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    char buf[4096];
    size_t len = 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    json_error_t jerr;

    strcpy(sun.sun_path, f->path);
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
        return NULL;
    if (colo_write_all(fd, f->raw, strlen(f->raw)) < 0) {
        close(fd);
        return NULL;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);

        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return json_loads(buf, JSON_DISABLE_EOF_CHECK, &jerr);
}

static void *client_main(void *arg)
{
    struct fixture *f = arg;

    if (f->raw)
        f->final = raw_call(f);
    else
        f->final =
            orch_ctl_call(f->path, f->request, 5000, on_line, f, &f->err);
    if (write(f->done_pipe[1], "x", 1) != 1)
        abort();
    return NULL;
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct fixture *f = arg;
    char c;

    if (read(fd, &c, 1) != 1)
        abort();
    event_base_loopexit(f->base, NULL);
}

static void handler(struct orch_ctl_req *req, const char *cmd, json_t *args,
                    void *arg)
{
    struct fixture *f = arg;

    f->handled++;
    if (strcmp(cmd, "status") == 0) {
        json_t *ev = json_pack("{s:s, s:i}", "event", "progress", "n", 1);

        orch_ctl_req_event(req, ev);
        orch_ctl_req_event(req, ev);
        json_decref(ev);
        orch_ctl_req_finish(req, 0, NULL,
                            json_pack("{s:s}", "role", "primary"));
    } else if (strcmp(cmd, "later") == 0) {
        f->held = req;
    } else {
        orch_ctl_req_finish(req, -COLO_EPEER_REJECTED, "unknown command", NULL);
    }
}

static void setup(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    strcpy(f->dir, "/tmp/colo-ctl-XXXXXX");
    cr_assert_not_null(mkdtemp(f->dir));
    cr_assert_eq(orch_ctl_path(f->dir, "vm1", &f->path), 0);
    f->base = event_base_new();
    cr_assert_eq(orch_ctl_server_start(f->base, f->path, handler, f, &f->srv),
                 0);
    cr_assert_eq(pipe2(f->done_pipe, O_CLOEXEC), 0);
    f->done_ev =
        event_new(f->base, f->done_pipe[0], EV_READ | EV_PERSIST, done_cb, f);
    event_add(f->done_ev, NULL);
}

static void run_client(struct fixture *f)
{
    struct timeval tv = {10, 0};

    /* Watchdog: no test may hang. */
    event_base_loopexit(f->base, &tv);
    cr_assert_eq(pthread_create(&f->th, NULL, client_main, f), 0);
    event_base_dispatch(f->base);
    pthread_join(f->th, NULL);
}

static void run_loop_until_client_done(struct fixture *f)
{
    struct timeval tv = {10, 0};

    event_base_loopexit(f->base, &tv);
    event_base_dispatch(f->base);
    pthread_join(f->th, NULL);
}

static void teardown(struct fixture *f)
{
    orch_ctl_server_free(f->srv);
    cr_expect_eq(access(f->path, F_OK), -1, "socket file removed");
    event_free(f->done_ev);
    close(f->done_pipe[0]);
    close(f->done_pipe[1]);
    event_base_free(f->base);
    json_decref(f->final);
    json_decref(f->request);
    free(f->err);
    free(f->path);
    rmdir(f->dir);
}

Test(ctl, status_with_progress)
{
    struct fixture f;

    setup(&f);
    f.request = json_pack("{s:s}", "cmd", "status");
    run_client(&f);
    cr_assert_not_null(f.final, "client error: %s", f.err);
    cr_expect(json_is_true(json_object_get(f.final, "ok")));
    cr_expect_str_eq(json_string_value(json_object_get(f.final, "role")),
                     "primary");
    cr_expect_eq(f.lines, 2);
    teardown(&f);
}

Test(ctl, error_reply_has_code)
{
    struct fixture f;

    setup(&f);
    f.request = json_pack("{s:s}", "cmd", "bogus");
    run_client(&f);
    cr_assert_not_null(f.final);
    cr_expect(json_is_false(json_object_get(f.final, "ok")));
    cr_expect_str_eq(json_string_value(json_object_get(f.final, "code")),
                     "EPEER_REJECTED");
    teardown(&f);
}

Test(ctl, garbage_is_rejected_unparsed)
{
    struct fixture f;

    setup(&f);
    f.raw = "{not json\n";
    run_client(&f);
    cr_assert_not_null(f.final);
    cr_expect(json_is_false(json_object_get(f.final, "ok")));
    cr_expect_eq(f.handled, 0, "handler must not see garbage");
    teardown(&f);
}

Test(ctl, non_object_and_missing_cmd)
{
    struct fixture f;

    setup(&f);
    f.raw = "[1,2]\n";
    run_client(&f);
    cr_expect(json_is_false(json_object_get(f.final, "ok")));
    json_decref(f.final);
    f.final = NULL;
    f.raw = "{\"nocmd\":1}\n";
    run_client(&f);
    cr_expect(json_is_false(json_object_get(f.final, "ok")));
    cr_expect_eq(f.handled, 0);
    teardown(&f);
}

Test(ctl, oversized_line_is_rejected)
{
    struct fixture f;
    char *big = malloc(ORCH_CTL_MAX_LINE + 100);

    setup(&f);
    memset(big, 'x', ORCH_CTL_MAX_LINE + 98);
    big[ORCH_CTL_MAX_LINE + 98] = '\n';
    big[ORCH_CTL_MAX_LINE + 99] = '\0';
    f.raw = big;
    run_client(&f);
    cr_assert_not_null(f.final);
    cr_expect(json_is_false(json_object_get(f.final, "ok")));
    cr_expect_str_eq(json_string_value(json_object_get(f.final, "error")),
                     "request line too long");
    cr_expect_eq(f.handled, 0);
    free(big);
    teardown(&f);
}

Test(ctl, server_freed_with_request_held)
{
    struct fixture f;

    setup(&f);
    f.request = json_pack("{s:s}", "cmd", "later");
    cr_assert_eq(pthread_create(&f.th, NULL, client_main, &f), 0);
    /* Run the loop until the handler has the request. */
    while (!f.held)
        event_base_loop(f.base, EVLOOP_ONCE);
    /* The owner finishes after the server (and the client link) is gone:
     * no crash, no leak, the client sees the connection close. */
    orch_ctl_server_free(f.srv);
    f.srv = NULL;
    orch_ctl_req_finish(f.held, 0, NULL, NULL);
    run_loop_until_client_done(&f);
    cr_expect_null(f.final);
    cr_expect_not_null(f.err);
    teardown(&f);
}

Test(ctl, second_owner_refused)
{
    struct fixture f;
    struct orch_ctl_server *other = NULL;

    setup(&f);
    cr_expect_eq(orch_ctl_server_start(f.base, f.path, handler, &f, &other),
                 -EADDRINUSE);
    teardown(&f);
}

Test(ctl, client_no_server)
{
    char *err = NULL;
    json_t *req = json_pack("{s:s}", "cmd", "status");
    json_t *fin = orch_ctl_call("/tmp/colo-no-such-dir/x.sock", req, 1000, NULL,
                                NULL, &err);

    cr_expect_null(fin);
    cr_assert_not_null(err);
    cr_expect(strstr(err, "is the VM running") != NULL, "%s", err);
    free(err);
    json_decref(req);
}
