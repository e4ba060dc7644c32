/*
 * bench-qmp: N pipelined query-status round trips through the qmp client
 * versus a raw blocking socket that writes the same JSON lines and reads
 * the replies, against the same QEMU in the same run (QEMU gets a second
 * QMP monitor for the raw side). Best of several alternating rounds.
 *
 * Last line: {"bench":"qmp","n":N,"colo_s":..,"baseline_s":..,"ratio":..}
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "qmp/devstate.h"
#include "qmp/launch.h"
#include "qmp/qmp.h"

static struct event_base *base;
static bool up_done;
static int up_rc;
static int replies;
static int bad;

static void up_cb(struct qmp_qemu *q, int rc, const char *status, void *arg)
{
    (void)q;
    (void)status;
    (void)arg;
    up_done = true;
    up_rc = rc;
}

static void reply_cb(struct qmp_client *c, int rc, json_t *ret,
                     const char *desc, void *arg)
{
    (void)c;
    (void)ret;
    (void)desc;
    (void)arg;
    if (rc != 0)
        bad++;
    replies++;
}

static bool saved;
static size_t saved_len;

static void save_cb(struct qmp_client *c, int rc, uint8_t *blob, size_t len,
                    bool was_running, void *arg)
{
    (void)c;
    (void)was_running;
    (void)arg;
    if (rc < 0)
        bad++;
    saved_len = len;
    free(blob);
    saved = true;
}

static bool is_saved(void)
{
    return saved;
}

static int run_until(bool (*cond)(void), int ms)
{
    uint64_t deadline = colo_now_ns() + (uint64_t)ms * 1000000ull;

    while (!cond()) {
        struct timeval tv = colo_ms_to_tv(100);

        if (colo_now_ns() > deadline)
            return -ETIMEDOUT;
        event_base_loopexit(base, &tv);
        event_base_loop(base, EVLOOP_ONCE);
    }
    return 0;
}

static bool is_up(void)
{
    return up_done;
}

static int want;
static bool all_replied(void)
{
    return replies >= want;
}

/* Read lines until n of them carry "return"; skip the greeting. */
static int raw_read_replies(int fd, int n, char *buf, size_t bufsz)
{
    size_t len = 0;
    int got = 0;

    while (got < n) {
        ssize_t r = read(fd, buf + len, bufsz - len);
        char *p = buf;
        char *nl;

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        len += (size_t)r;
        while ((nl = memchr(p, '\n', len - (size_t)(p - buf)))) {
            if (memmem(p, (size_t)(nl - p), "\"return\"", 8))
                got++;
            p = nl + 1;
        }
        len -= (size_t)(p - buf);
        memmove(buf, p, len);
    }
    return 0;
}

static int raw_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (strlen(path) >= sizeof(sa.sun_path)) {
        colo_close(&fd);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        colo_close(&fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    int rounds = 5;
    char dir[] = "/tmp/colo-bench-qmp-XXXXXX";
    char raw_path[128];
    char chardev[256];
    char *qargv[32];
    int k = 0;
    struct qmp_qemu *q = NULL;
    struct qmp_client *c;
    int fd = -1;
    char *line = "{\"execute\":\"query-status\",\"id\":1}\r\n";
    size_t line_len = strlen(line);
    char *batch = NULL;
    char *rbuf = NULL;
    double best_colo = 1e9, best_raw = 1e9;
    int rc = 1;

    colo_log_set_level(COLO_LOG_WARN);
    base = event_base_new();
    if (!mkdtemp(dir))
        return 1;
    snprintf(raw_path, sizeof(raw_path), "%s/raw.sock", dir);
    snprintf(chardev, sizeof(chardev),
             "socket,id=raw,path=%s,server=on,wait=off", raw_path);
    qargv[k++] = "qemu-system-x86_64";
    qargv[k++] = "-S";
    qargv[k++] = "-nodefaults";
    qargv[k++] = "-vga";
    qargv[k++] = "none";
    qargv[k++] = "-display";
    qargv[k++] = "none";
    qargv[k++] = "-machine";
    qargv[k++] = "pc";
    qargv[k++] = "-m";
    qargv[k++] = "64";
    qargv[k++] = "-accel";
    qargv[k++] = access("/dev/kvm", R_OK | W_OK) == 0 ? "kvm" : "tcg";
    qargv[k++] = "-chardev";
    qargv[k++] = chardev;
    qargv[k++] = "-mon";
    qargv[k++] = "chardev=raw,mode=control";
    qargv[k] = NULL;
    if (qmp_qemu_launch(base, qargv, NULL, up_cb, NULL, &q) < 0 ||
        run_until(is_up, 30000) < 0 || up_rc < 0) {
        fprintf(stderr, "bench-qmp: QEMU did not start\n");
        goto out;
    }
    c = qmp_qemu_client(q);
    /* QEMU has created the raw socket by the time QMP answered. */
    fd = raw_connect(raw_path);
    batch = malloc(line_len * (size_t)n);
    rbuf = malloc(1 << 20);
    if (fd < 0 || !batch || !rbuf)
        goto out;
    for (int i = 0; i < n; i++)
        memcpy(batch + (size_t)i * line_len, line, line_len);
    {
        const char *caps = "{\"execute\":\"qmp_capabilities\"}\r\n";

        if (raw_read_replies(fd, 0, rbuf, 1 << 20) < 0 ||
            colo_write_all(fd, caps, strlen(caps)) < 0 ||
            raw_read_replies(fd, 1, rbuf, 1 << 20) < 0)
            goto out;
    }
    for (int r = 0; r < rounds; r++) {
        uint64_t t0 = colo_now_ns();
        double s;

        replies = 0;
        bad = 0;
        want = n;
        for (int i = 0; i < n; i++) {
            if (qmp_send(c, "query-status", NULL, -1, 0, reply_cb, NULL, NULL) <
                0)
                goto out;
        }
        if (run_until(all_replied, 60000) < 0 || bad)
            goto out;
        s = (double)(colo_now_ns() - t0) / 1e9;
        if (s < best_colo)
            best_colo = s;

        t0 = colo_now_ns();
        if (colo_write_all(fd, batch, line_len * (size_t)n) < 0 ||
            raw_read_replies(fd, n, rbuf, 1 << 20) < 0)
            goto out;
        s = (double)(colo_now_ns() - t0) / 1e9;
        if (s < best_raw)
            best_raw = s;
        printf("round %d: colo %.4f s, raw %.4f s\n", r, best_colo, best_raw);
    }
    /* Extra information: one device-state save with a reused saver. */
    {
        struct qmp_saver *sv;
        int saves = 50;
        uint64_t t0;

        if (qmp_saver_new(c, &sv) < 0)
            goto out;
        t0 = colo_now_ns();
        for (int i = 0; i < saves; i++) {
            saved = false;
            if (qmp_saver_save(sv, QMP_SAVE_NO_STOP, save_cb, NULL) < 0 ||
                run_until(is_saved, 10000) < 0 || bad) {
                qmp_saver_free(sv);
                goto out;
            }
        }
        printf("device-state save: %.3f ms each, %zu bytes\n",
               (double)(colo_now_ns() - t0) / 1e6 / saves, saved_len);
        qmp_saver_free(sv);
    }
    printf("{\"bench\":\"qmp\",\"n\":%d,\"colo_s\":%.6f,\"baseline_s\":%.6f,"
           "\"ratio\":%.3f}\n",
           n, best_colo, best_raw, best_colo / best_raw);
    rc = 0;
out:
    colo_close(&fd);
    free(batch);
    free(rbuf);
    qmp_qemu_free(q);
    event_base_free(base);
    unlink(raw_path);
    rmdir(dir);
    return rc;
}
