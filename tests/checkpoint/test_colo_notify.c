/*
 * checkpoint.colo_notify: the notify_dev client (checkpoint/colo_notify.h)
 * against a real QEMU 7.2 colo-compare (bare QEMU, -S). The test plays the
 * primary's and the secondary's packet streams on colo-compare's
 * primary_in / secondary_in chardevs and reads what it releases on outdev:
 * identical packets leave without a checkpoint; a mismatch holds the
 * primary's packet and reports ONE divergence however often QEMU repeats
 * DO_CHECKPOINT; the flush (COLO_CHECKPOINT + INIT in one write) releases
 * it, and its reply arrives only after the release.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "checkpoint/colo_notify.h"
#include "common/error.h"
#include "common/fd.h"
#include "qmp/launch.h"
#include "qtest.h"

static struct event_base *base;
static struct qmp_qemu *qemu;
static char dir[64];

static void setup(void)
{
    base = event_base_new();
    cr_assert(base);
    qemu = NULL;
    strcpy(dir, "/tmp/colo-cn-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];

    qmp_qemu_free(qemu);
    qemu = NULL;
    event_base_free(base);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

TestSuite(colo_notify, .init = setup, .fini = teardown, .timeout = 90);

struct rec {
    bool ready, flushed, lost;
    int ready_rc, flushed_rc, lost_rc, divergences;
};

static void on_ready(void *arg, int rc)
{
    struct rec *r = arg;

    r->ready = true;
    r->ready_rc = rc;
}

static void on_div(void *arg)
{
    ((struct rec *)arg)->divergences++;
}

static void on_flushed(void *arg, int rc)
{
    struct rec *r = arg;

    r->flushed = true;
    r->flushed_rc = rc;
}

static void on_lost(void *arg, int rc)
{
    struct rec *r = arg;

    r->lost = true;
    r->lost_rc = rc;
}

static int connect_to(const char *name)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    cr_assert_geq(fd, 0);
    snprintf(a.sun_path, sizeof(a.sun_path), "%s/%s", dir, name);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "%s: %s",
                 a.sun_path, strerror(errno));
    cr_assert_eq(colo_fd_set_timeouts(fd, 5000, 5000), 0);
    return fd;
}

/* A UDP datagram 10.0.2.15:1234 -> 10.0.2.2:5555, framed for a chardev
 * (4-byte big-endian length, no vnet header). */
static void send_udp(int fd, const char *payload)
{
    uint8_t f[4 + 14 + 20 + 8 + 64] = {0}, *e = f + 4, *ip = e + 14,
                                *u = ip + 20;
    size_t pl = strlen(payload), len = 14 + 20 + 8 + pl;
    uint32_t s = 0;

    cr_assert_leq(pl, 64);
    f[0] = (uint8_t)(len >> 24);
    f[1] = (uint8_t)(len >> 16);
    f[2] = (uint8_t)(len >> 8);
    f[3] = (uint8_t)len;
    memcpy(e, "\x52\x54\x00\x00\x00\x02\x52\x54\x00\x12\x34\x56\x08\x00", 14);
    ip[0] = 0x45;
    ip[2] = (uint8_t)((20 + 8 + pl) >> 8);
    ip[3] = (uint8_t)(20 + 8 + pl);
    ip[8] = 64;
    ip[9] = 17;
    memcpy(ip + 12, "\x0a\x00\x02\x0f\x0a\x00\x02\x02", 8);
    for (int i = 0; i < 20; i += 2)
        s += (uint32_t)(ip[i] << 8 | ip[i + 1]);
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    ip[10] = (uint8_t)(~s >> 8);
    ip[11] = (uint8_t)~s;
    u[0] = 1234 >> 8;
    u[1] = 1234 & 0xff;
    u[2] = 5555 >> 8;
    u[3] = 5555 & 0xff;
    u[4] = (uint8_t)((8 + pl) >> 8);
    u[5] = (uint8_t)(8 + pl);
    memcpy(u + 8, payload, pl);
    cr_assert_eq(colo_write_all(fd, f, 4 + len), 0);
}

/* The payload of the next frame on outdev within ms, or "" if none. */
static void read_out(int fd, int ms, char *payload, size_t sz)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    uint8_t hdr[4], f[2048];
    uint32_t l;

    payload[0] = '\0';
    if (poll(&p, 1, ms) != 1)
        return;
    cr_assert_eq(colo_read_all(fd, hdr, 4), 0);
    l = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
        (uint32_t)hdr[2] << 8 | hdr[3];
    cr_assert_leq(l, sizeof(f));
    cr_assert_eq(colo_read_all(fd, f, l), 0);
    if (l > 42)
        snprintf(payload, sz, "%.*s", (int)(l - 42), (char *)f + 42);
}

Test(colo_notify, match_mismatch_debounce_flush)
{
    char a[4][300], status[32] = "", got[128];
    const char *extra[20];
    struct ckpt_colo_notify_cbs cbs = {on_ready, on_div, on_flushed, on_lost};
    struct ckpt_colo_notify_stats st;
    struct ckpt_colo_notify *n;
    struct rec r = {0};
    int pri, sec, out, k = 0, rc;
    static const char *const names[] = {"pri_in", "sec_in", "out", "notify"};
    char cmp[400], path[300];

    if (!qt_have_qemu())
        return;
    extra[k++] = "-object";
    extra[k++] = "iothread,id=iot0";
    for (int i = 0; i < 4; i++) {
        snprintf(a[i], sizeof(a[i]),
                 "socket,id=%s,path=%s/%s.sock,server=on,wait=off", names[i],
                 dir, names[i]);
        extra[k++] = "-chardev";
        extra[k++] = a[i];
    }
    snprintf(cmp, sizeof(cmp),
             "colo-compare,id=comp0,primary_in=pri_in,secondary_in=sec_in,"
             "outdev=out,notify_dev=notify,iothread=iot0,compare_timeout="
             "1000,expired_scan_cycle=300");
    extra[k++] = "-object";
    extra[k++] = cmp;
    extra[k] = NULL;
    rc = qt_launch(base, qt_bare_argv(extra), NULL, &qemu, status,
                   sizeof(status));
    cr_assert_eq(rc, 0, "launch: %s", colo_strerror(rc));
    pri = connect_to("pri_in.sock");
    sec = connect_to("sec_in.sock");
    out = connect_to("out.sock");
    snprintf(path, sizeof(path), "%s/notify.sock", dir);
    cr_assert_eq(ckpt_colo_notify_new(base, path, 5000, &cbs, &r, &n), 0);
    cr_assert(qt_run_until(base, &r.ready, 10000), "no handshake reply");
    cr_assert_eq(r.ready_rc, 0, "%s", colo_strerror(r.ready_rc));

    /* Identical output leaves without a checkpoint. */
    send_udp(pri, "same-1");
    send_udp(sec, "same-1");
    read_out(out, 5000, got, sizeof(got));
    cr_assert_str_eq(got, "same-1", "a matched packet is released");
    cr_assert_eq(r.divergences, 0);

    /* A mismatch: one divergence, the primary's packet held. */
    send_udp(pri, "pri-2");
    send_udp(sec, "sec-2");
    {
        bool div = false;

        for (int i = 0; i < 50 && !div; i++) {
            qt_run_until(base, &div, 100);
            div = r.divergences > 0;
        }
    }
    cr_assert_eq(r.divergences, 1, "no divergence reported on a mismatch");
    /* QEMU repeats DO_CHECKPOINT while the packet stays held (every
     * expired_scan_cycle): still one divergence. */
    for (int i = 0; i < 60; i++) {
        ckpt_colo_notify_get_stats(n, &st);
        if (st.do_checkpoint >= 3)
            break;
        qt_run_until(base, &r.lost, 100);
    }
    ckpt_colo_notify_get_stats(n, &st);
    cr_assert_geq(st.do_checkpoint, 2, "QEMU did not repeat DO_CHECKPOINT");
    cr_assert_eq(r.divergences, 1,
                 "debounce: %llu DO_CHECKPOINT gave %d "
                 "divergences",
                 (unsigned long long)st.do_checkpoint, r.divergences);

    /* The flush releases it; its reply proves the release ran. */
    cr_assert_eq(ckpt_colo_notify_flush(n), 0);
    cr_assert_eq(ckpt_colo_notify_flush(n), -EBUSY);
    cr_assert(qt_run_until(base, &r.flushed, 10000), "no flush reply");
    cr_assert_eq(r.flushed_rc, 0);
    read_out(out, 1000, got, sizeof(got));
    cr_assert_str_eq(got, "pri-2", "the flush released the held packet");

    /* Re-armed after the checkpoint: the next mismatch counts again. */
    ckpt_colo_notify_rearm(n);
    r.flushed = false;
    send_udp(pri, "pri-3");
    send_udp(sec, "sec-3");
    for (int i = 0; i < 50 && r.divergences < 2; i++)
        qt_run_until(base, &r.lost, 100);
    cr_assert_eq(r.divergences, 2);
    cr_assert_eq(ckpt_colo_notify_flush(n), 0);
    cr_assert(qt_run_until(base, &r.flushed, 10000));
    read_out(out, 1000, got, sizeof(got));
    cr_assert_str_eq(got, "pri-3");

    /* QEMU gone: lost() once. */
    qmp_qemu_free(qemu);
    qemu = NULL;
    cr_assert(qt_run_until(base, &r.lost, 10000), "lost() not called");
    cr_assert_lt(r.lost_rc, 0);
    cr_assert_eq(ckpt_colo_notify_flush(n), -ENOTCONN);
    ckpt_colo_notify_free(n);
    close(pri);
    close(sec);
    close(out);
}

Test(colo_notify, no_server_fails_cleanly)
{
    struct ckpt_colo_notify_cbs cbs = {on_ready, on_div, on_flushed, on_lost};
    struct ckpt_colo_notify *n = NULL;
    struct rec r = {0};
    char path[300];
    int rc;

    snprintf(path, sizeof(path), "%s/none.sock", dir);
    rc = ckpt_colo_notify_new(base, path, 1000, &cbs, &r, &n);
    if (rc == 0) {
        cr_assert(qt_run_until(base, &r.ready, 5000));
        cr_assert_lt(r.ready_rc, 0);
        ckpt_colo_notify_free(n);
    } else {
        cr_assert_lt(rc, 0);
        cr_assert_null(n);
    }
    cr_assert_eq(r.divergences, 0);
    cr_assert(!r.lost && !r.flushed);
}
