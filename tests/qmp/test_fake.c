/*
 * qmp against a scripted fake QMP server on a socketpair, driven from the
 * test's event loop: the faults a real QEMU will not produce.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "qmp/qmp.h"
#include "qtest.h"

/* ------------------------------------------------------------------ */
/* The fake server */

enum fake_mode {
    F_NORMAL = 0,
    F_SILENT,      /* never answers user commands */
    F_NO_GREETING, /* never greets */
};

struct fake {
    int fd;
    struct event *ev_r;
    struct event *ev_w;
    char *out;
    size_t out_len;
    size_t out_off;
    char in[65536];
    size_t in_len;
    bool byte_at_a_time;
    enum fake_mode mode;
    int got_cmds;    /* user commands seen */
    int passed_fd;   /* last fd received with SCM_RIGHTS */
    int64_t last_id; /* id of the last user command */
    char last_cmd[64];
    bool close_after_flush;
};

static struct event_base *base;
static struct fake fk;
static struct qmp_client *cl;

static void fake_write_cb(evutil_socket_t fd, short what, void *arg);

static void fake_send(const char *s, size_t n)
{
    fk.out = realloc(fk.out, fk.out_len + n);
    cr_assert(fk.out);
    memcpy(fk.out + fk.out_len, s, n);
    fk.out_len += n;
    event_add(fk.ev_w, NULL);
}

static void fake_sends(const char *s)
{
    fake_send(s, strlen(s));
}

static void fake_reply(int64_t id, const char *ret)
{
    char buf[512];

    snprintf(buf, sizeof(buf), "{\"return\": %s, \"id\": %lld}\r\n", ret,
             (long long)id);
    fake_sends(buf);
}

static void fake_handle(json_t *m)
{
    const char *cmd = json_string_value(json_object_get(m, "execute"));
    int64_t id = json_integer_value(json_object_get(m, "id"));

    cr_assert(cmd, "every message has execute");
    cr_assert(json_is_integer(json_object_get(m, "id")), "ids always sent");
    if (strcmp(cmd, "qmp_capabilities") == 0) {
        fake_reply(id, "{}");
        return;
    }
    if (strcmp(cmd, "query-commands") == 0) {
        fake_reply(id, "[{\"name\": \"query-status\"}, {\"name\": \"stop\"}]");
        return;
    }
    fk.got_cmds++;
    fk.last_id = id;
    snprintf(fk.last_cmd, sizeof(fk.last_cmd), "%s", cmd);
    if (fk.mode == F_SILENT)
        return;
    if (strcmp(cmd, "query-status") == 0)
        fake_reply(id, "{\"status\": \"running\", \"running\": true}");
    else
        fake_reply(id, "{}");
}

static void fake_read_cb(evutil_socket_t fd, short what, void *arg)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * 4)];
    } cm;
    struct iovec iov = {fk.in + fk.in_len, sizeof(fk.in) - fk.in_len};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = cm.buf,
                         .msg_controllen = sizeof(cm.buf)};
    ssize_t n;
    char *nl;

    (void)what;
    (void)arg;
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) {
        event_del(fk.ev_r);
        return;
    }
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h)) {
        if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
            colo_close(&fk.passed_fd);
            memcpy(&fk.passed_fd, CMSG_DATA(h), sizeof(int));
        }
    }
    fk.in_len += (size_t)n;
    while ((nl = memchr(fk.in, '\n', fk.in_len))) {
        size_t len = (size_t)(nl - fk.in) + 1;
        json_t *m = json_loadb(fk.in, len, 0, NULL);

        cr_assert(m, "client sent valid JSON");
        fake_handle(m);
        json_decref(m);
        memmove(fk.in, fk.in + len, fk.in_len - len);
        fk.in_len -= len;
    }
}

static void fake_write_cb(evutil_socket_t fd, short what, void *arg)
{
    size_t left = fk.out_len - fk.out_off;
    ssize_t n;

    (void)what;
    (void)arg;
    if (left == 0) {
        event_del(fk.ev_w);
        if (fk.close_after_flush)
            colo_close(&fk.fd);
        return;
    }
    n = write(fd, fk.out + fk.out_off, fk.byte_at_a_time ? 1 : left);
    if (n > 0)
        fk.out_off += (size_t)n;
    if (fk.out_off == fk.out_len) {
        fk.out_off = fk.out_len = 0;
        event_del(fk.ev_w);
        if (fk.close_after_flush) {
            event_del(fk.ev_r);
            colo_close(&fk.fd);
        }
    }
}

struct conn {
    bool done;
    int rc;
    int calls;
    int closes;
    int close_rc;
};

static struct conn cn;

static void conn_cb(struct qmp_client *c, int rc, void *arg)
{
    (void)c;
    (void)arg;
    cn.done = true;
    cn.rc = rc;
    cn.calls++;
}

static void close_cb(struct qmp_client *c, int rc, void *arg)
{
    (void)c;
    (void)arg;
    cn.closes++;
    cn.close_rc = rc;
}

static const char *greeting =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, "
    "\"major\": 7}, \"package\": \"Debian 1:7.2+dfsg-7+deb12u18\"}, "
    "\"capabilities\": [\"oob\"]}}\r\n";

static void setup(void)
{
    int sv[2];

    base = event_base_new();
    cr_assert(base);
    memset(&fk, 0, sizeof(fk));
    memset(&cn, 0, sizeof(cn));
    fk.passed_fd = -1;
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    fk.fd = sv[1];
    colo_fd_set_nonblock(fk.fd, 1);
    fk.ev_r = event_new(base, fk.fd, EV_READ | EV_PERSIST, fake_read_cb, NULL);
    fk.ev_w =
        event_new(base, fk.fd, EV_WRITE | EV_PERSIST, fake_write_cb, NULL);
    event_add(fk.ev_r, NULL);
    struct qmp_client_opts o = {.greeting_timeout_ms = 2000, .name = "fake"};
    cl = qmp_client_new(base, &o);
    cr_assert(cl);
    qmp_client_set_close_cb(cl, close_cb, NULL);
    cr_assert_eq(qmp_client_connect_fd_take(cl, sv[0], conn_cb, NULL), 0);
}

static void teardown(void)
{
    qmp_client_free(cl);
    cl = NULL;
    event_free(fk.ev_r);
    event_free(fk.ev_w);
    colo_close(&fk.fd);
    colo_close(&fk.passed_fd);
    free(fk.out);
    event_base_free(base);
}

TestSuite(qmp_fake, .init = setup, .fini = teardown);

static void connect_ok(void)
{
    fake_sends(greeting);
    cr_assert(qt_run_until(base, &cn.done, 5000));
    cr_assert_eq(cn.rc, 0, "connect: %s", colo_strerror(cn.rc));
    cr_assert_eq(qmp_client_state(cl), QMP_CONNECTED);
}

/* ------------------------------------------------------------------ */
/* Recording callbacks */

#define NREC 64
struct rec {
    int fired[NREC];
    int rc[NREC];
    int destroyed[NREC];
    int done;
    char desc[NREC][128];
};

static struct rec rr;

static void rec_cb(struct qmp_client *c, int rc, json_t *ret, const char *desc,
                   void *arg)
{
    intptr_t i = (intptr_t)arg;

    (void)c;
    cr_assert(i >= 0 && i < NREC);
    cr_assert(rc != 0 || ret, "ret on success");
    rr.fired[i]++;
    rr.rc[i] = rc;
    snprintf(rr.desc[i], sizeof(rr.desc[i]), "%s", desc ? desc : "");
    rr.done++;
}

static void rec_destroy(void *arg)
{
    rr.destroyed[(intptr_t)arg]++;
}

static void send_n(int n, uint32_t timeout_ms)
{
    for (intptr_t i = 0; i < n; i++)
        cr_assert_eq(qmp_send_ex(cl, "query-status", NULL, -1, timeout_ms,
                                 rec_cb, (void *)i, rec_destroy, NULL),
                     0);
}

static void reset_rec(void)
{
    memset(&rr, 0, sizeof(rr));
}

/* ------------------------------------------------------------------ */

Test(qmp_fake, greeting_version_probe)
{
    const struct qmp_version *v;

    connect_ok();
    v = qmp_client_version(cl);
    cr_assert_eq(v->major, 7);
    cr_assert_eq(v->minor, 2);
    cr_assert_eq(v->micro, 22);
    cr_assert_str_eq(v->package, "Debian 1:7.2+dfsg-7+deb12u18");
    cr_assert_eq(qmp_has_command(cl, "stop"), 1);
    cr_assert_eq(qmp_has_command(cl, "cont"), 0);
    cr_assert_eq(cn.calls, 1);
}

Test(qmp_fake, byte_at_a_time)
{
    fk.byte_at_a_time = true;
    reset_rec();
    send_n(10, 0); /* queued while negotiating */
    cr_assert_eq(qmp_pending(cl), 10);
    connect_ok();
    cr_assert(qt_run_until_count(base, &rr.done, 10, 10000));
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(rr.fired[i], 1);
        cr_assert_eq(rr.rc[i], 0);
        cr_assert_eq(rr.destroyed[i], 1);
    }
}

struct evs {
    int n;
    char last[64];
    size_t data_len;
};
static struct evs evs;

static void ev_cb(struct qmp_client *c, const char *event, json_t *data,
                  int64_t sec, int64_t usec, void *arg)
{
    json_t *pad = json_object_get(data, "pad");

    (void)c;
    (void)sec;
    (void)usec;
    (void)arg;
    evs.n++;
    snprintf(evs.last, sizeof(evs.last), "%s", event);
    evs.data_len = pad ? json_string_length(pad) : 0;
}

Test(qmp_fake, events_before_greeting)
{
    memset(&evs, 0, sizeof(evs));
    qmp_client_set_event_cb(cl, ev_cb, NULL);
    fake_sends("{\"event\": \"EARLY\", \"timestamp\": {\"seconds\": 1, "
               "\"microseconds\": 2}}\r\n");
    connect_ok();
    cr_assert_eq(evs.n, 0, "an event before the greeting is dropped");
    fake_sends("{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, "
               "\"microseconds\": 2}}\r\n");
    cr_assert(qt_run_until_count(base, &evs.n, 1, 5000));
    cr_assert_str_eq(evs.last, "STOP");
}

Test(qmp_fake, reply_without_id_and_unknown_id)
{
    connect_ok();
    fk.mode = F_SILENT;
    reset_rec();
    send_n(1, 0);
    cr_assert(qt_run_until_count(base, &fk.got_cmds, 1, 5000));
    fake_sends("{\"return\": {}}\r\n");
    fake_sends("{\"return\": {}, \"id\": 99999}\r\n");
    fake_sends("{\"return\": {}, \"id\": \"a string\"}\r\n");
    fake_reply(fk.last_id, "{\"status\": \"paused\"}");
    cr_assert(qt_run_until_count(base, &rr.done, 1, 5000));
    cr_assert_eq(rr.rc[0], 0);
    cr_assert_eq(qmp_client_state(cl), QMP_CONNECTED);
    cr_assert_eq(cn.closes, 0);
}

Test(qmp_fake, error_without_id_fails_connection)
{
    connect_ok();
    fk.mode = F_SILENT;
    reset_rec();
    send_n(3, 0);
    cr_assert(qt_run_until_count(base, &fk.got_cmds, 3, 5000));
    fake_sends("{\"error\": {\"class\": \"GenericError\", \"desc\": "
               "\"JSON parse error\"}}\r\n");
    cr_assert(qt_run_until_count(base, &rr.done, 3, 5000));
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(rr.fired[i], 1);
        cr_assert_eq(rr.rc[i], -COLO_EQMP_PROTOCOL);
    }
    cr_assert_eq(cn.closes, 1);
    cr_assert_eq(cn.close_rc, -COLO_EQMP_PROTOCOL);
    cr_assert_eq(qmp_client_state(cl), QMP_DISCONNECTED);
}

Test(qmp_fake, error_classes)
{
    static const struct {
        const char *cls;
        int rc;
    } t[] = {
        {"GenericError", -COLO_EQMP_GENERIC},
        {"CommandNotFound", -COLO_EQMP_COMMAND_NOT_FOUND},
        {"DeviceNotActive", -COLO_EQMP_DEVICE_NOT_ACTIVE},
        {"DeviceNotFound", -COLO_EQMP_DEVICE_NOT_FOUND},
        {"KVMMissingCap", -COLO_EQMP_KVM_MISSING_CAP},
        {"SomethingNew", -COLO_EQMP_UNKNOWN_CLASS},
    };
    char buf[256];

    connect_ok();
    fk.mode = F_SILENT;
    reset_rec();
    for (intptr_t i = 0; i < 6; i++) {
        cr_assert_eq(qmp_send(cl, "x", NULL, -1, 0, rec_cb, (void *)i, NULL),
                     0);
        cr_assert(qt_run_until_count(base, &fk.got_cmds, (int)i + 1, 5000));
        snprintf(buf, sizeof(buf),
                 "{\"error\": {\"class\": \"%s\", \"desc\": \"d%d\"}, "
                 "\"id\": %lld}\r\n",
                 t[i].cls, (int)i, (long long)fk.last_id);
        fake_sends(buf);
        cr_assert(qt_run_until_count(base, &rr.done, (int)i + 1, 5000));
        cr_assert_eq(rr.rc[i], t[i].rc, "%s", t[i].cls);
        snprintf(buf, sizeof(buf), "d%d", (int)i);
        cr_assert_str_eq(rr.desc[i], buf);
    }
    cr_assert_eq(qmp_client_state(cl), QMP_CONNECTED);
}

static void expect_protocol_failure(const char *bytes, size_t n)
{
    connect_ok();
    fk.mode = F_SILENT;
    reset_rec();
    send_n(2, 0);
    cr_assert(qt_run_until_count(base, &fk.got_cmds, 2, 5000));
    fake_send(bytes, n);
    cr_assert(qt_run_until_count(base, &rr.done, 2, 10000));
    cr_assert_eq(rr.rc[0], -COLO_EQMP_PROTOCOL, "rc %s",
                 colo_strerror(rr.rc[0]));
    cr_assert_eq(rr.rc[1], -COLO_EQMP_PROTOCOL);
    cr_assert_eq(rr.destroyed[0], 1);
    cr_assert_eq(cn.closes, 1);
    cr_assert_eq(qmp_client_last_error(cl), -COLO_EQMP_PROTOCOL);
}

Test(qmp_fake, garbage_json)
{
    expect_protocol_failure("{\"return\": {]]]\r\n", 17);
}

Test(qmp_fake, non_object)
{
    expect_protocol_failure("[1, 2, 3]\r\n", 11);
}

Test(qmp_fake, neither_reply_nor_event)
{
    expect_protocol_failure("{\"hello\": 1}\r\n", 14);
}

/* An event whose line is exactly len bytes (without "\r\n"). */
static char *event_of_len(size_t len)
{
    const char *pre = "{\"event\": \"BIG\", \"data\": {\"pad\": \"";
    const char *post = "\"}}";
    size_t fixed = strlen(pre) + strlen(post);
    char *s = malloc(len + 3);

    cr_assert(len > fixed);
    memcpy(s, pre, strlen(pre));
    memset(s + strlen(pre), 'x', len - fixed);
    memcpy(s + len - strlen(post), post, strlen(post));
    memcpy(s + len, "\r\n", 3);
    return s;
}

Test(qmp_fake, message_at_the_cap)
{
    char *s = event_of_len(QMP_MAX_MSG);

    memset(&evs, 0, sizeof(evs));
    qmp_client_set_event_cb(cl, ev_cb, NULL);
    connect_ok();
    fake_send(s, QMP_MAX_MSG + 2);
    free(s);
    cr_assert(qt_run_until_count(base, &evs.n, 1, 10000));
    cr_assert_str_eq(evs.last, "BIG");
    cr_assert(evs.data_len > QMP_MAX_MSG - 100);
    cr_assert_eq(qmp_client_state(cl), QMP_CONNECTED);
}

Test(qmp_fake, message_over_the_cap)
{
    char *s = event_of_len(QMP_MAX_MSG + 1);

    expect_protocol_failure(s, QMP_MAX_MSG + 3);
    free(s);
}

Test(qmp_fake, endless_line_over_the_cap)
{
    /* No newline at all: the cap applies to the partial message too. */
    size_t n = QMP_MAX_MSG + 64;
    char *s = malloc(n);

    memset(s, ' ', n);
    s[0] = '{';
    expect_protocol_failure(s, n);
    free(s);
}

Test(qmp_fake, eof_mid_message)
{
    connect_ok();
    fk.mode = F_SILENT;
    reset_rec();
    send_n(4, 0);
    cr_assert(qt_run_until_count(base, &fk.got_cmds, 4, 5000));
    fk.close_after_flush = true;
    fake_sends("{\"return\": {}, \"i");
    cr_assert(qt_run_until_count(base, &rr.done, 4, 5000));
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(rr.fired[i], 1);
        cr_assert_eq(rr.rc[i], -COLO_EQMP_DISCONNECTED);
        cr_assert_eq(rr.destroyed[i], 1);
    }
    cr_assert_eq(cn.closes, 1);
    cr_assert_eq(cn.close_rc, -COLO_EQMP_DISCONNECTED);
}

Test(qmp_fake, eof_before_greeting)
{
    event_del(fk.ev_r);
    colo_close(&fk.fd);
    cr_assert(qt_run_until(base, &cn.done, 5000));
    cr_assert_eq(cn.rc, -COLO_EQMP_DISCONNECTED);
    cr_assert_eq(cn.closes, 0, "close_cb is for connected clients");
}

static int freer_calls;
static void freeing_cb(struct qmp_client *c, int rc, json_t *ret,
                       const char *desc, void *arg)
{
    (void)rc;
    (void)ret;
    (void)desc;
    (void)arg;
    freer_calls++;
    qmp_client_free(c);
    cl = NULL;
}

Test(qmp_fake, callback_frees_client)
{
    connect_ok();
    reset_rec();
    freer_calls = 0;
    cr_assert_eq(
        qmp_send(cl, "query-status", NULL, -1, 0, freeing_cb, NULL, NULL), 0);
    send_n(5, 0); /* answered in the same read, after the freeing one */
    cr_assert(qt_run_until_count(base, &freer_calls, 1, 5000));
    /* Let the rest of the replies arrive: nothing may fire. */
    bool never = false;
    qt_run_until(base, &never, 100);
    cr_assert_eq(freer_calls, 1);
    cr_assert_eq(rr.done, 0, "no callback after free");
    for (int i = 0; i < 5; i++)
        cr_assert_eq(rr.destroyed[i], 1, "destroy ran for %d", i);
}

static void freeing_conn_cb(struct qmp_client *c, int rc, void *arg)
{
    (void)rc;
    (void)arg;
    freer_calls++;
    qmp_client_free(c);
    cl = NULL;
}

Test(qmp_fake, connect_callback_frees_client)
{
    /* Re-create the client with a connect callback that frees it. */
    int sv[2];

    qmp_client_free(cl);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    event_del(fk.ev_r);
    colo_close(&fk.fd);
    fk.fd = sv[1];
    event_assign(fk.ev_r, base, fk.fd, EV_READ | EV_PERSIST, fake_read_cb,
                 NULL);
    event_assign(fk.ev_w, base, fk.fd, EV_WRITE | EV_PERSIST, fake_write_cb,
                 NULL);
    event_add(fk.ev_r, NULL);
    cl = qmp_client_new(base, NULL);
    freer_calls = 0;
    reset_rec();
    cr_assert_eq(qmp_client_connect_fd_take(cl, sv[0], freeing_conn_cb, NULL),
                 0);
    send_n(3, 0);
    fake_sends(greeting);
    cr_assert(qt_run_until_count(base, &freer_calls, 1, 5000));
    cr_assert_eq(rr.done, 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rr.destroyed[i], 1);
}

Test(qmp_fake, free_with_commands_pending)
{
    connect_ok();
    fk.mode = F_SILENT;
    reset_rec();
    send_n(7, 0);
    cr_assert(qt_run_until_count(base, &fk.got_cmds, 7, 5000));
    qmp_client_free(cl);
    cl = NULL;
    cr_assert_eq(rr.done, 0);
    for (int i = 0; i < 7; i++)
        cr_assert_eq(rr.destroyed[i], 1);
}

Test(qmp_fake, command_deadline_expires)
{
    connect_ok();
    fk.mode = F_SILENT;
    reset_rec();
    send_n(1, 100);
    cr_assert(qt_run_until_count(base, &rr.done, 1, 5000));
    cr_assert_eq(rr.rc[0], -ETIMEDOUT);
    cr_assert_eq(rr.destroyed[0], 1);
    /* The late reply is dropped; the connection stays usable. */
    fake_reply(fk.last_id, "{}");
    fk.mode = F_NORMAL;
    cr_assert_eq(qmp_send(cl, "query-status", NULL, -1, 0, rec_cb,
                          (void *)(intptr_t)1, NULL),
                 0);
    cr_assert(qt_run_until_count(base, &rr.done, 2, 5000));
    cr_assert_eq(rr.fired[0], 1);
    cr_assert_eq(rr.rc[1], 0);
    cr_assert_eq(qmp_client_state(cl), QMP_CONNECTED);
}

Test(qmp_fake, cancel_one)
{
    uint64_t id;

    connect_ok();
    fk.mode = F_SILENT;
    reset_rec();
    cr_assert_eq(qmp_send_ex(cl, "query-status", NULL, -1, 0, rec_cb,
                             (void *)(intptr_t)0, rec_destroy, &id),
                 0);
    cr_assert(qt_run_until_count(base, &fk.got_cmds, 1, 5000));
    cr_assert_eq(qmp_cancel(cl, id), 0);
    cr_assert_eq(rr.destroyed[0], 1);
    cr_assert_eq(qmp_cancel(cl, id), -ENOENT);
    fake_reply(fk.last_id, "{}");
    fk.mode = F_NORMAL;
    send_n(2, 0);
    cr_assert(qt_run_until_count(base, &rr.done, 2, 5000));
    cr_assert_eq(rr.fired[0], 1, "only the second send of index 0");
    cr_assert_eq(rr.destroyed[0], 2);
}

Test(qmp_fake, greeting_deadline_busy)
{
    struct qmp_client_opts o = {.greeting_timeout_ms = 150};
    int sv[2];
    struct qmp_client *c2;

    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    c2 = qmp_client_new(base, &o);
    memset(&cn, 0, sizeof(cn));
    cr_assert_eq(qmp_client_connect_fd_take(c2, sv[0], conn_cb, NULL), 0);
    reset_rec();
    cr_assert_eq(qmp_send_ex(c2, "query-status", NULL, -1, 0, rec_cb,
                             (void *)(intptr_t)0, rec_destroy, NULL),
                 0);
    cr_assert(qt_run_until(base, &cn.done, 5000));
    cr_assert_eq(cn.rc, -COLO_EQMP_BUSY);
    cr_assert_eq(rr.rc[0], -COLO_EQMP_BUSY, "held commands fail too");
    cr_assert_eq(rr.destroyed[0], 1);
    qmp_client_free(c2);
    close(sv[1]);
}

Test(qmp_fake, fd_passing)
{
    int p[2];
    char buf[8] = "";

    connect_ok();
    reset_rec();
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(
        qmp_send(cl, "getfd", NULL, p[1], 0, rec_cb, (void *)(intptr_t)0, NULL),
        0);
    colo_close(&p[1]); /* the client holds its own dup */
    cr_assert(qt_run_until_count(base, &rr.done, 1, 5000));
    cr_assert(fk.passed_fd >= 0, "fd arrived with SCM_RIGHTS");
    cr_assert_str_eq(fk.last_cmd, "getfd");
    cr_assert_eq(write(fk.passed_fd, "ok", 2), 2);
    colo_close(&fk.passed_fd);
    cr_assert_eq(read(p[0], buf, sizeof(buf)), 2);
    cr_assert_str_eq(buf, "ok");
    colo_close(&p[0]);
    cr_assert_eq(qmp_send(cl, "x", NULL, 9999, 0, rec_cb, NULL, NULL), -EBADF);
}

Test(qmp_fake, send_refused_when_disconnected)
{
    struct qmp_client *c2 = qmp_client_new(base, NULL);

    cr_assert_eq(qmp_send(c2, "x", NULL, -1, 0, rec_cb, NULL, NULL), -ENOTCONN);
    cr_assert_eq(
        qmp_client_connect_path(c2, "/nonexistent/qmp.sock", conn_cb, NULL),
        -ENOENT);
    qmp_client_free(c2);
    qmp_client_free(NULL);
}

static int hook_events;
static int hook_fail_rc;
static int hook_destroyed;

static void hook_cb(struct qmp_client *c, int rc, const char *event,
                    json_t *data, void *arg)
{
    (void)c;
    (void)data;
    (void)arg;
    if (rc < 0)
        hook_fail_rc = rc;
    else if (event)
        hook_events++;
}

static void hook_destroy(void *arg)
{
    (void)arg;
    hook_destroyed++;
}

Test(qmp_fake, hooks)
{
    hook_events = hook_fail_rc = hook_destroyed = 0;
    connect_ok();
    cr_assert(qmp_client_add_hook(cl, hook_cb, NULL, hook_destroy) > 0);
    fake_sends("{\"event\": \"X\", \"timestamp\": {\"seconds\": 1, "
               "\"microseconds\": 2}}\r\n");
    cr_assert(qt_run_until_count(base, &hook_events, 1, 5000));
    event_del(fk.ev_r);
    colo_close(&fk.fd);
    cr_assert(qt_run_until_count(base, &hook_destroyed, 1, 5000));
    cr_assert_eq(hook_fail_rc, -COLO_EQMP_DISCONNECTED);
}

Test(qmp_fake, feed_seam)
{
    struct qmp_client *f = qmp_client_new_fake(base);
    const char *g = greeting;

    cr_assert_eq(qmp_client_feed(f, g, strlen(g)), 0);
    cr_assert_eq(qmp_client_version(f)->micro, 22);
    cr_assert_eq(qmp_client_feed(f, "{\"return\": {}, \"id\": 1}\n", 24), 0);
    cr_assert_eq(qmp_client_state(f), QMP_CONNECTED);
    cr_assert_eq(qmp_client_feed(f, "nonsense\n", 9), -COLO_EQMP_PROTOCOL);
    qmp_client_free(f);
}

static int ev_free_calls;
static void freeing_ev_cb(struct qmp_client *c, const char *event, json_t *data,
                          int64_t sec, int64_t usec, void *arg)
{
    (void)event;
    (void)data;
    (void)sec;
    (void)usec;
    (void)arg;
    ev_free_calls++;
    qmp_client_free(c);
    cl = NULL;
}

Test(qmp_fake, event_callback_frees_client)
{
    connect_ok();
    fk.mode = F_SILENT;
    reset_rec();
    send_n(2, 0);
    cr_assert(qt_run_until_count(base, &fk.got_cmds, 2, 5000));
    ev_free_calls = 0;
    qmp_client_set_event_cb(cl, freeing_ev_cb, NULL);
    /* Two events and a reply in one write: only the first event fires. */
    fake_sends("{\"event\": \"A\", \"timestamp\": {\"seconds\": 1, "
               "\"microseconds\": 2}}\r\n{\"event\": \"B\", \"timestamp\": "
               "{\"seconds\": 1, \"microseconds\": 2}}\r\n");
    fake_reply(fk.last_id, "{}");
    cr_assert(qt_run_until_count(base, &ev_free_calls, 1, 5000));
    bool never = false;
    qt_run_until(base, &never, 50);
    cr_assert_eq(ev_free_calls, 1);
    cr_assert_eq(rr.done, 0);
    cr_assert_eq(rr.destroyed[0], 1);
    cr_assert_eq(rr.destroyed[1], 1);
}

static int fail_free_calls;
static void fail_freeing_cb(struct qmp_client *c, int rc, json_t *ret,
                            const char *desc, void *arg)
{
    (void)ret;
    (void)desc;
    (void)arg;
    cr_assert_eq(rc, -COLO_EQMP_DISCONNECTED);
    fail_free_calls++;
    qmp_client_free(c);
    cl = NULL;
}

Test(qmp_fake, failure_callback_frees_client)
{
    connect_ok();
    fk.mode = F_SILENT;
    reset_rec();
    fail_free_calls = 0;
    cr_assert_eq(
        qmp_send(cl, "query-status", NULL, -1, 0, fail_freeing_cb, NULL, NULL),
        0);
    send_n(3, 0);
    cr_assert(qt_run_until_count(base, &fk.got_cmds, 4, 5000));
    event_del(fk.ev_r);
    colo_close(&fk.fd);
    cr_assert(qt_run_until_count(base, &fail_free_calls, 1, 5000));
    cr_assert_eq(rr.done, 0, "nothing after the free");
    cr_assert_eq(cn.closes, 0, "no close_cb after the free");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rr.destroyed[i], 1);
}
