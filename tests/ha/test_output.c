/*
 * ha.output_remus: output commit in Remus mode, judged from outside. The
 * Linux test guest (tests/linux) sends its counter in UDP datagrams to a
 * peer the test owns (tests/support/netpeer.h) through a virtio-net NIC on
 * a `-netdev stream` socket; real colo processes protect it (primary `colo
 * start`, secondary `colo standby`, `colo protect`). The oracle is what the
 * peer received and on which connection (the primary's QEMU, then the
 * secondary's after a takeover), never colo's logs.
 *
 * Invariants (each named in its failure message):
 *   NO-LOST-OUTPUT   after a takeover, the resumed guest never sends a
 *                    value the peer already received from the primary
 *                    (nothing from an epoch that was not committed left).
 *   RESUMED-OUTPUT   the resumed guest's output reaches the peer.
 *   RELEASE-ALL      when protection ends (secondary killed, unprotect),
 *                    every held packet leaves, once, in order: the values
 *                    received are consecutive.
 *   EARLY-CKPT       an epoch filling up checkpoints early, before QEMU's
 *                    10,000-packet buffer cap drops anything.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fproc.h"
#include "lguest.h"
#include "netpeer.h"

#define MAXV 200000

struct ha {
    char dir[64], wire[128], cfg[128], key[128], pdir[128], sdir[128];
    char fence[256];
    struct netpeer *np;
    struct fproc p, s;
    bool s_up;
    int port;
};

static struct netpeer_udp udp[MAXV];

static void init(void)
{
    fproc_init();
}

TestSuite(ha, .init = init);

static int colo_in(const char *dir, const char *args, char *out, size_t sz)
{
    char a[600];

    snprintf(a, sizeof(a), "%s --state-dir %s", args, dir);
    return fproc_colo(a, out, sz, 60000);
}

static long long status_int(struct ha *h, const char *key)
{
    char out[8192];

    if (colo_in(h->pdir, "status lx --json", out, sizeof(out)) != 0)
        return -1;
    return fproc_json_int(out, key, -1);
}

/* Boot the guest under `colo start` and (wait_output) wait until its
 * output arrives. */
static void ha_setup_ex(struct ha *h, const char *cmdline, bool wait_output)
{
    struct lguest_cfg c = lguest_cfg_default();
    char why[256];
    FILE *f;

    memset(h, 0, sizeof(*h));
    h->p.pid = h->s.pid = -1;
    if (!lguest_available(why, sizeof(why)))
        cr_skip_test("%s", why);
    strcpy(h->dir, "/tmp/colo-ha-XXXXXX");
    cr_assert_not_null(mkdtemp(h->dir));
    snprintf(h->wire, sizeof(h->wire), "%s/wire.sock", h->dir);
    snprintf(h->cfg, sizeof(h->cfg), "%s/vm.json", h->dir);
    snprintf(h->key, sizeof(h->key), "%s/key", h->dir);
    snprintf(h->pdir, sizeof(h->pdir), "%s/p", h->dir);
    snprintf(h->sdir, sizeof(h->sdir), "%s/s", h->dir);
    cr_assert_eq(netpeer_start(h->wire, &h->np), 0);
    c.name = "lx";
    c.cmdline = cmdline;
    c.wire_path = h->wire;
    cr_assert_eq(lguest_write_config(h->cfg, &c), 0);
    f = fopen(h->key, "w");
    cr_assert_not_null(f);
    fputs("a shared test key of enough length\n", f);
    fclose(f);
    cr_assert_eq(chmod(h->key, 0600), 0); /* colo refuses a shared key */
    {
        char *argv[] = {(char *)fproc_colo_exe(),
                        "start",
                        h->cfg,
                        "--state-dir",
                        h->pdir,
                        "--key-file",
                        h->key,
                        NULL};

        cr_assert_eq(fproc_spawn(&h->p, argv, NULL), 0);
    }
    cr_assert_geq(fproc_wait_out(&h->p, "running (QEMU pid", 0, 30000), 0,
                  "colo start:\n%s", h->p.buf);
    if (!wait_output)
        return;
    cr_assert_eq(netpeer_wait_udp_above(h->np, 0, 120000, NULL), 0,
                 "the guest's output never reached the peer (frames %zu)",
                 netpeer_frames(h->np));
}

static void ha_setup(struct ha *h, const char *cmdline)
{
    ha_setup_ex(h, cmdline, true);
}

static void ha_secondary(struct ha *h)
{
    char *argv[] = {(char *)fproc_colo_exe(),
                    "standby",
                    "--listen",
                    "127.0.0.1:0",
                    "--state-dir",
                    h->sdir,
                    "--key-file",
                    h->key,
                    "--fence-cmd",
                    h->fence,
                    NULL};
    long off;

    snprintf(h->fence, sizeof(h->fence), "%s/scripts/fence-pid %d",
             COLO_SOURCE_DIR, (int)h->p.pid);
    if (h->s_up)
        fproc_free(&h->s);
    cr_assert_eq(fproc_spawn(&h->s, argv, NULL), 0);
    h->s_up = true;
    off =
        fproc_wait_out(&h->s, "waiting for a primary on 127.0.0.1:", 0, 10000);
    cr_assert_geq(off, 0, "secondary did not listen:\n%s", h->s.buf);
    h->port = atoi(h->s.buf + off);
}

/* Protect and wait until min_ckpts checkpoints were acked. */
static void ha_protect(struct ha *h, unsigned interval_ms, int min_ckpts)
{
    char args[256], out[8192];
    uint64_t dl;
    int rc;

    snprintf(args, sizeof(args), "protect lx 127.0.0.1:%d --interval %u",
             h->port, interval_ms);
    rc = colo_in(h->pdir, args, out, sizeof(out));
    cr_assert_eq(rc, 0, "protect failed (%d): %s\nprimary:\n%s\nsecondary:\n%s",
                 rc, out, h->p.buf, h->s.buf);
    dl = fproc_now_ms() + 60000;
    while (status_int(h, "checkpoints") < min_ckpts && fproc_now_ms() < dl)
        fproc_pump(&h->p, 50);
    cr_assert_geq(status_int(h, "checkpoints"), min_ckpts,
                  "fewer than %d checkpoints in 60 s\n%s", min_ckpts, h->p.buf);
}

static void ha_teardown(struct ha *h)
{
    char cmd[128];

    fproc_free(&h->p);
    if (h->s_up)
        fproc_free(&h->s);
    netpeer_free(h->np);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", h->dir);
}

/* Wait (bounded) until the peer received more than n datagrams. */
static bool wait_more(struct ha *h, size_t n, int timeout_ms)
{
    uint64_t dl = fproc_now_ms() + (uint64_t)timeout_ms;

    while (fproc_now_ms() < dl) {
        struct netpeer_udp last;
        size_t have = netpeer_udp_get(h->np, &last, 1);

        if (have > n)
            return true;
        /* Blocks until a higher value arrives or 100 ms pass. */
        netpeer_wait_udp_above(h->np, UINT32_MAX - 1, 100, NULL);
    }
    return false;
}

/* RELEASE-ALL: every datagram of connection conn from index from on is
 * the previous value + 1 (nothing dropped, duplicated or reordered). */
static void expect_consecutive(struct ha *h, unsigned conn, size_t from,
                               const char *when)
{
    size_t n = netpeer_udp_get(h->np, udp, MAXV), prev = SIZE_MAX;

    cr_assert_lt(n, MAXV);
    for (size_t i = from; i < n; i++) {
        if (udp[i].conn != conn)
            continue;
        if (prev != SIZE_MAX)
            cr_assert_eq(udp[i].v, udp[prev].v + 1,
                         "RELEASE-ALL (%s): datagram #%zu is count %u after "
                         "count %u: a held packet was dropped, duplicated or "
                         "released out of order",
                         when, i, udp[i].v, udp[prev].v);
        prev = i;
    }
}

/* One failover run: protect, kill -9 the primary's colo and QEMU
 * delay_ms after a release reached the peer (mid-epoch, output held),
 * take over, and judge what the peer saw. */
static void failover_run(int delay_ms)
{
    struct ha h;
    char out[8192];
    long long qemu;
    uint32_t max_a = 0, min_b = UINT32_MAX, v;
    size_t n, n_b = 0;
    uint64_t dl;

    /* Bursts: 10 values every 10 ms, UDP only. */
    ha_setup(&h, "cw.interval=10 cw.burst=10 cw.out=udp");
    ha_secondary(&h);
    ha_protect(&h, 100, 5);
    cr_assert_eq(colo_in(h.pdir, "status lx --json", out, sizeof(out)), 0);
    cr_assert_not_null(strstr(out, "\"output\":"),
                       "status lacks the output commit stats: %s", out);
    qemu = fproc_json_int(out, "qemu_pid", -1);
    cr_assert_gt(qemu, 0, "%s", out);
    /* Released packets waited for their checkpoint's ack. */
    cr_expect_gt(fproc_json_int(out, "release_delay_p50_us", 0), 0, "%s", out);
    cr_expect_geq(fproc_json_int(out, "release_delay_p99_us", 0),
                  fproc_json_int(out, "release_delay_p50_us", 0), "%s", out);
    cr_expect_gt(fproc_json_int(out, "released_packets", 0), 0, "%s", out);
    if (delay_ms == 0)
        fprintf(stderr, "ha.output_remus: protected status: %s\n", out);

    /* A release just reached the peer: the next epoch's output is held. */
    n = netpeer_udp_get(h.np, udp, MAXV);
    cr_assert(netpeer_wait_udp_above(h.np, udp[n - 1].v, 10000, &v) == 0,
              "no output released while protected");
    if (delay_ms)
        fproc_pump(&h.p, delay_ms);
    kill((pid_t)qemu, SIGKILL);
    kill(h.p.pid, SIGKILL);
    waitpid(h.p.pid, NULL, 0);
    h.p.pid = -1;

    cr_assert_geq(fproc_wait_out(&h.s, "now runs here", 0, 60000), 0,
                  "no takeover:\n%s", h.s.buf);
    /* RESUMED-OUTPUT: the secondary's QEMU (connection 2) sends. */
    dl = fproc_now_ms() + 60000;
    while (fproc_now_ms() < dl) {
        n = netpeer_udp_get(h.np, udp, MAXV);
        cr_assert_lt(n, MAXV);
        n_b = 0;
        for (size_t i = 0; i < n; i++)
            if (udp[i].conn >= 2)
                n_b++;
        if (n_b >= 20)
            break;
        wait_more(&h, n, 1000);
    }
    cr_assert_geq(n_b, 20,
                  "RESUMED-OUTPUT: the resumed guest's output did not reach "
                  "the peer (%zu datagrams on the new connection)\n%s",
                  n_b, h.s.buf);
    for (size_t i = 0; i < n; i++) {
        if (udp[i].conn == 1 && udp[i].v > max_a)
            max_a = udp[i].v;
        if (udp[i].conn >= 2 && udp[i].v < min_b)
            min_b = udp[i].v;
    }
    fprintf(stderr,
            "ha.output_remus: kill %d ms after a release: the peer saw up to "
            "count %u from the primary, the resumed guest went on from %u\n",
            delay_ms, max_a, min_b);
    cr_assert_gt(min_b, max_a,
                 "NO-LOST-OUTPUT: the peer received count %u from the "
                 "primary, and the guest resumed on the secondary sent count "
                 "%u again (output of an uncommitted epoch left; kill %d ms "
                 "after a release)",
                 max_a, min_b, delay_ms);
    expect_consecutive(&h, 2, 0, "after takeover");
    ha_teardown(&h);
}

Test(ha, output_remus_failover, .timeout = 400)
{
    static const int delays[] = {0, 23, 61};

    for (size_t i = 0; i < sizeof(delays) / sizeof(delays[0]); i++)
        failover_run(delays[i]);
}

/* The secondary killed: the primary releases everything and runs on;
 * re-protected with a long interval, a full epoch checkpoints early;
 * `colo unprotect` releases everything. One boot. */
Test(ha, output_remus_release, .timeout = 400)
{
    struct ha h;
    char out[8192];
    size_t n, mark;
    long long early;
    uint64_t dl;

    ha_setup(&h, "cw.interval=10 cw.burst=10 cw.out=udp");
    ha_secondary(&h);
    ha_protect(&h, 100, 5);
    mark = netpeer_udp_get(h.np, udp, MAXV);

    /* The secondary dies (no QEMU of its own in Remus mode). */
    kill(h.s.pid, SIGKILL);
    waitpid(h.s.pid, NULL, 0);
    h.s.pid = -1;
    cr_assert_geq(fproc_wait_out(&h.p, "UNPROTECTED", 0, 30000), 0,
                  "the primary did not notice the secondary's death:\n%s",
                  h.p.buf);
    n = netpeer_udp_get(h.np, udp, MAXV);
    cr_assert(wait_more(&h, n + 200, 20000),
              "RELEASE-ALL: the guest's output stopped after the secondary "
              "died");
    expect_consecutive(&h, 1, 0, "secondary killed");
    cr_assert_eq(colo_in(h.pdir, "status lx --json", out, sizeof(out)), 0);
    cr_assert_null(strstr(out, "\"output\":"),
                   "RELEASE-ALL: output still held after the secondary "
                   "died: %s",
                   out);

    /* EARLY-CKPT: 1000 packets/s and a 10 s interval: the 5000th packet
     * of an epoch forces a checkpoint well before the interval. */
    ha_secondary(&h);
    ha_protect(&h, 10000, 1);
    dl = fproc_now_ms() + 60000;
    early = 0;
    while (fproc_now_ms() < dl) {
        cr_assert_eq(colo_in(h.pdir, "status lx --json", out, sizeof(out)), 0);
        early = fproc_json_int(out, "early_checkpoints", 0);
        if (early >= 1 && fproc_json_int(out, "checkpoints", 0) >= 2)
            break;
        fproc_pump(&h.p, 200);
    }
    cr_assert_geq(early, 1,
                  "EARLY-CKPT: no early checkpoint with 1000 packets/s and a "
                  "10 s interval: %s",
                  out);
    cr_assert_eq(fproc_json_int(out, "dropped_packets", -1), 0,
                 "EARLY-CKPT: QEMU dropped held packets: %s", out);
    cr_assert_geq(fproc_json_int(out, "forced_checkpoints", 0), 1,
                  "EARLY-CKPT: the early checkpoint is not counted as forced: "
                  "%s",
                  out);
    fprintf(stderr, "ha.output_remus: early checkpoint status: %s\n", out);

    /* Unprotect: everything held leaves, in order, and output goes on. */
    cr_assert_eq(colo_in(h.pdir, "unprotect lx", out, sizeof(out)), 0, "%s",
                 out);
    n = netpeer_udp_get(h.np, udp, MAXV);
    cr_assert(wait_more(&h, n + 200, 20000),
              "RELEASE-ALL: the guest's output stopped after unprotect");
    expect_consecutive(&h, 1, mark, "unprotect");
    cr_assert_eq(colo_in(h.pdir, "status lx --json", out, sizeof(out)), 0);
    cr_assert_null(strstr(out, "\"output\":"),
                   "RELEASE-ALL: output still held after unprotect: %s", out);
    ha_teardown(&h);
}

/* COLO mode compares no output yet: a VM with NICs is refused (its
 * secondary would run the guest with the same NICs), cleanly. */
Test(ha, output_colo_refused, .timeout = 120)
{
    struct ha h;
    char out[8192];
    int rc;

    ha_setup_ex(&h, "cw.interval=100 cw.out=udp", false);
    rc =
        colo_in(h.pdir, "protect lx 127.0.0.1:9 --mode colo", out, sizeof(out));
    cr_assert_neq(rc, 0, "COLO protect of a VM with NICs was accepted: %s",
                  out);
    cr_assert_not_null(strstr(out, "COLO mode does not compare network "
                                   "output yet"),
                       "%s", out);
    cr_assert_eq(colo_in(h.pdir, "status lx --json", out, sizeof(out)), 0, "%s",
                 out);
    cr_assert_not_null(strstr(out, "\"protected\":false"), "%s", out);
    cr_assert_not_null(strstr(out, "\"host_state\":\"running\""), "%s", out);
    ha_teardown(&h);
}
