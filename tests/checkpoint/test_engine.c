/*
 * The engines end to end: real QEMU (tests/support) on both sides, real
 * TCP on 127.0.0.1, primary and secondary engines on one event loop.
 *
 *   migrate             counter and serial continue on the destination,
 *                       the source stays stopped
 *   remus_100           100 checkpoints; after each ack the secondary's
 *                       committed RAM equals the primary's captured RAM and
 *                       the device state is byte for byte the same; then the
 *                       primary dies and the secondary takes over
 *   failover_*          the primary dies before / during / after the stream
 *                       of checkpoint 5: the secondary resumes from exactly
 *                       the last committed checkpoint, nothing half-applied
 *   secondary_loss      the primary runs on and reports unprotected; a new
 *                       secondary re-pairs (full sync) and is verified again
 */
#include "checkpoint/primary.h"
#include "checkpoint/secondary.h"

#include "common/error.h"
#include "common/fault.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "tguest.h"
#include "tloop.h"
#include "tnet.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXCK 4096

struct h {
    struct event_base *evb;

    struct tguest *gp, *gs;
    struct tguest *standbys[512]; /* COLO: QEMUs started on gs's RAM */
    int nstandby;
    bool give_pid; /* the engine owns (kills) the secondary QEMUs */
    struct ckpt_memory *pmem;
    struct ckpt_vm *pvm;
    struct ckpt_primary *p;
    struct ckpt_secondary *s;
    size_t ram_size;
    struct tguest_opts gopts;

    int p_done, p_rc;
    int s_done, s_rc;
    int acks, mismatches, dev_mismatches;
    int unprotected;
    int takeovers;
    int64_t takeover_ckpt;
    bool allow_takeover;
    bool takeover_image_ok;
    uint32_t takeover_counter;
    uint32_t counters[MAXCK];
    uint64_t max_captured;
    uint64_t pages_at[MAXCK];
    /* Snapshots of the primary's captured image (the last two). */
    uint8_t *snap[2];
    uint64_t snap_n[2];
};

static struct h H;

static uint32_t counter_of(const uint8_t *ram)
{
    uint32_t c;

    memcpy(&c, ram + TGUEST_STATUS_GPA + TGUEST_COUNTER_OFF, 4);
    return c;
}

/* Run the loop until cond() holds; false on the deadline. */
static bool run_until(bool (*cond)(void), unsigned ms)
{
    return tloop_until_fn(H.evb, cond, ms);
}

/* A TCP connection over 127.0.0.1: *a connects, *b is accepted. */
static void tcp_pair(int *a, int *b)
{
    cr_assert_eq(tnet_tcp_pair(a, b), 0);
}

/* ---- secondary callbacks --------------------------------------------- */

static int s_launch(void *arg, struct ckpt_secondary *s,
                    const struct ckpt_launch_req *req)
{
    struct tguest_opts o = H.gopts;
    struct ckpt_vm *vm = NULL;
    int rc;

    cr_assert_eq(req->ram_size, H.ram_size);
    cr_assert_not_null(req->vm_config);
    struct tguest *g;

    o.paused = true;
    o.incoming_defer = true;
    o.ram_path = NULL;
    if (req->standby) {
        cr_assert_not_null(req->ram_path);
        cr_assert_str_eq(req->ram_path, H.gs->ram_path);
        cr_assert_lt(H.nstandby, 512);
        /* Standbys before the running one were killed by the engine at
         * their swap: release them (tguest keeps a bounded live list). */
        for (int i = 0; i + 1 < H.nstandby; i++) {
            tguest_free(H.standbys[i]);
            H.standbys[i] = NULL;
        }
        o.ram_path = req->ram_path;
        rc = tguest_start(&o, &g);
        if (rc < 0)
            return rc;
        H.standbys[H.nstandby++] = g;
    } else {
        rc = tguest_start(&o, &H.gs);
        if (rc < 0)
            return rc;
        g = H.gs;
    }
    rc = ckpt_vm_qemu_new(H.evb, g->qmp_path, H.give_pid ? g->pid : -1, 10000,
                          &vm);
    if (rc < 0)
        return rc;
    if (H.give_pid)
        g->pid = -1; /* the engine kills and reaps it */
    ckpt_secondary_launch_done(s, 0, vm, g->ram_path);
    return 0;
}

static int s_may_takeover(void *arg, struct ckpt_secondary *s, int rc)
{
    ckpt_secondary_takeover_answer(s, H.allow_takeover);
    return 0;
}

static void s_event(void *arg, const struct ckpt_event *ev)
{
    if (ev->type == CKPT_EV_TAKEOVER) {
        const uint8_t *ram = ckpt_mem_qemu_ram(ckpt_secondary_memory(H.s));
        H.takeovers++;
        H.takeover_ckpt = ev->ckpt;
        H.takeover_counter = counter_of(ram);
        H.takeover_image_ok = false;
        for (int i = 0; i < 2; i++)
            if (H.snap[i] && (int64_t)H.snap_n[i] == ev->ckpt)
                H.takeover_image_ok = memcmp(H.snap[i], ram, H.ram_size) == 0;
    }
}

static void s_done(void *arg, int rc, const struct ckpt_stats *st)
{
    H.s_done++;
    H.s_rc = rc;
}

static const struct ckpt_secondary_cbs s_cbs = {
    .launch = s_launch,
    .may_takeover = s_may_takeover,
    .event = s_event,
    .done = s_done,
};

/* ---- primary callbacks ------------------------------------------------- */

static void compare_committed(void)
{
    const uint8_t *pr = ckpt_mem_qemu_shadow(H.pmem);
    struct ckpt_memory *sm = ckpt_secondary_memory(H.s);
    /* COLO: the secondary's guest runs; its committed image is the
     * backend's committed shadow. Remus: the RAM file itself. */
    const uint8_t *sr = ckpt_mem_qemu_shadow(sm) ? ckpt_mem_qemu_shadow(sm)
                                                 : ckpt_mem_qemu_ram(sm);
    const uint8_t *pd, *sd;
    size_t pl, sl;

    if (memcmp(pr, sr, H.ram_size) != 0) {
        for (size_t off = 0; off < H.ram_size; off += CKPT_PAGE_SIZE)
            if (memcmp(pr + off, sr + off, CKPT_PAGE_SIZE) != 0) {
                fprintf(stderr, "page %zu differs\n", off / CKPT_PAGE_SIZE);
                break;
            }
        H.mismatches++;
    }
    pd = ckpt_primary_last_devstate(H.p, &pl);
    sd = ckpt_secondary_committed_devstate(H.s, &sl);
    if (pl != sl || !pd || memcmp(pd, sd, pl) != 0)
        H.dev_mismatches++;
}

static void p_event(void *arg, const struct ckpt_event *ev)
{
    if (ev->type == CKPT_EV_CHECKPOINT) {
        H.acks++;
        if (getenv("CKPT_TEST_DEBUG"))
            fprintf(stderr, "ack %d fds %d\n", H.acks, colo_count_open_fds());
        compare_committed();
    } else if (ev->type == CKPT_EV_UNPROTECTED) {
        H.unprotected++;
    }
}

static void p_done(void *arg, int rc, const struct ckpt_stats *st)
{
    H.p_done++;
    H.p_rc = rc;
}

static void p_capture(void *arg, uint64_t n)
{
    const uint8_t *sh = ckpt_mem_qemu_shadow(H.pmem);
    int i = (int)(n & 1);

    if (n < MAXCK)
        H.counters[n] = counter_of(sh);
    H.max_captured = n;
    if (!H.snap[i])
        H.snap[i] = malloc(H.ram_size);
    memcpy(H.snap[i], sh, H.ram_size);
    H.snap_n[i] = n;
}

static const struct ckpt_primary_cbs p_cbs = {
    .event = p_event,
    .done = p_done,
};

/* ---- fixture ----------------------------------------------------------- */

static void setup_guest_rate(size_t ram_mb, size_t dirty_mb, unsigned rate)
{
    memset(&H, 0, sizeof(H));
    colo_log_set_level(getenv("CKPT_TEST_DEBUG") ? COLO_LOG_DEBUG
                                                 : COLO_LOG_WARN);
    H.evb = event_base_new();
    cr_assert_not_null(H.evb);
    H.gopts = tguest_opts_default();
    H.gopts.ram_mb = ram_mb;
    H.gopts.dirty_mb = dirty_mb;
    H.gopts.dirty_rate_mbs = rate;
    H.ram_size = ram_mb << 20;
    H.allow_takeover = true;
    cr_assert_eq(tguest_start(&H.gopts, &H.gp), 0);
    cr_assert_eq(tguest_wait_counter_above(H.gp, 1000, 20000), 0);
    cr_assert_eq(ckpt_mem_qemu_open(H.gp->ram_path, H.ram_size,
                                    CKPT_MEM_PRIMARY, &H.pmem),
                 0);
    cr_assert_eq(ckpt_vm_qemu_new(H.evb, H.gp->qmp_path, -1, 10000, &H.pvm), 0);
}

static void setup_guest(size_t ram_mb, size_t dirty_mb)
{
    setup_guest_rate(ram_mb, dirty_mb, 0);
}

static void teardown(void)
{
    ckpt_primary_free(H.p);
    ckpt_secondary_free(H.s);
    ckpt_vm_free(H.pvm);
    ckpt_memory_free(H.pmem);
    tguest_free(H.gp);
    for (int i = 0; i < H.nstandby; i++)
        tguest_free(H.standbys[i]);
    tguest_free(H.gs);
    free(H.snap[0]);
    free(H.snap[1]);
    if (H.evb)
        event_base_free(H.evb);
}

static void new_secondary(void)
{
    struct ckpt_secondary_opts so = {0};

    so.vm_name = "tvm";
    /* The test's launcher boots QEMU synchronously on the loop (up to a
     * second or more on a busy machine): heartbeats must tolerate it. */
    so.link.timeout_ms = 8000;
    cr_assert_eq(ckpt_secondary_new(H.evb, &so, &s_cbs, NULL, &H.s), 0);
}

static void new_primary(enum ckpt_mode mode, unsigned interval, uint64_t max)
{
    struct ckpt_primary_opts po = {0};

    po.mode = mode;
    po.vm_name = "tvm";
    po.vm_config = "{\"test\":true}";
    po.ram_size = H.ram_size;
    po.interval_ms = interval;
    po.max_checkpoints = max;
    po.link.timeout_ms = 8000;
    cr_assert_eq(
        ckpt_primary_new(H.evb, &po, H.pmem, H.pvm, &p_cbs, NULL, &H.p), 0);
    /* The hook copies the image (slow): not in migrations (downtime). */
    if (mode != CKPT_MODE_MIGRATE)
        ckpt_primary_set_capture_hook(H.p, p_capture, NULL);
}

static void pair(void)
{
    int a, b;

    tcp_pair(&a, &b);
    cr_assert_eq(ckpt_secondary_start(H.s, b), 0);
    cr_assert_eq(ckpt_primary_start(H.p, a), 0);
}

static bool skip_without_qemu(void)
{
    if (access(tguest_kernel_path(), R_OK) != 0) {
        cr_skip_test("test guest kernel not built");
    }
    return false;
}

TestSuite(engine, .fini = teardown, .timeout = 240);

static int want_acks;
static bool acks_reached(void)
{
    return H.acks >= want_acks || H.p_done || H.s_done;
}
static bool s_finished(void)
{
    return H.s_done > 0;
}
static bool p_finished(void)
{
    return H.p_done > 0;
}
static bool both_finished(void)
{
    return H.p_done > 0 && H.s_done > 0;
}
static bool is_unprotected(void)
{
    return H.unprotected > 0 || H.p_done;
}

/* ---- tests ------------------------------------------------------------ */

Test(engine, migrate)
{
    const struct ckpt_stats *unused = NULL;
    struct ckpt_stats st;
    uint32_t src_stop, dst0, src_later;

    (void)unused;
    if (skip_without_qemu())
        return;
    setup_guest(64, 0);
    new_secondary();
    new_primary(CKPT_MODE_MIGRATE, 0, 0);
    pair();
    cr_assert(run_until(both_finished, 60000), "migrate did not finish");
    cr_assert_eq(H.p_rc, 0, "primary: %s", colo_strerror(H.p_rc));
    cr_assert_eq(H.s_rc, 0, "secondary: %s", colo_strerror(H.s_rc));
    ckpt_primary_get_stats(H.p, &st);
    printf("migrate: total %llu us, downtime %llu us, rounds %u, "
           "%llu bytes\n",
           (unsigned long long)st.total_us, (unsigned long long)st.downtime_us,
           st.rounds, (unsigned long long)st.bytes_sent);
    cr_assert_geq(st.rounds, 2);
    cr_assert_gt(st.bytes_sent, 0);
    src_stop = tguest_counter(H.gp);
    dst0 = tguest_counter(H.gs);
    cr_assert_geq(dst0, src_stop, "destination %u < source %u", dst0, src_stop);
    cr_assert_eq(tguest_wait_counter_above(H.gs, dst0 + 100000, 10000), 0,
                 "the destination's counter does not move");
    cr_assert_eq(tguest_wait_serial(H.gs, "tick", 10000), 0,
                 "no serial output on the destination");
    src_later = tguest_counter(H.gp);
    cr_assert_eq(src_later, src_stop, "the source kept running");
}

/* A guest that keeps writing 16 MiB (at 200 MiB/s): several precopy
 * rounds, then convergence; the destination continues from the source. */
Test(engine, migrate_dirty_guest)
{
    struct ckpt_stats st;
    uint32_t src_stop, dst0;

    if (skip_without_qemu())
        return;
    setup_guest_rate(64, 16, 200);
    new_secondary();
    new_primary(CKPT_MODE_MIGRATE, 0, 0);
    pair();
    cr_assert(run_until(both_finished, 120000), "migrate did not finish");
    cr_assert_eq(H.p_rc, 0, "primary: %s", colo_strerror(H.p_rc));
    cr_assert_eq(H.s_rc, 0, "secondary: %s", colo_strerror(H.s_rc));
    ckpt_primary_get_stats(H.p, &st);
    printf("migrate (dirty): total %llu us, downtime %llu us, rounds %u, "
           "%llu bytes\n",
           (unsigned long long)st.total_us, (unsigned long long)st.downtime_us,
           st.rounds, (unsigned long long)st.bytes_sent);
    cr_assert_geq(st.rounds, 2);
    cr_assert_geq(st.bytes_sent, 16ull << 20);
    src_stop = tguest_counter(H.gp);
    dst0 = tguest_counter(H.gs);
    cr_assert_geq(dst0, src_stop);
    cr_assert_eq(tguest_wait_counter_above(H.gs, dst0 + 1000, 10000), 0);
    cr_assert_eq(tguest_counter(H.gp), src_stop);
}

Test(engine, remus_100)
{
    if (skip_without_qemu())
        return;
    setup_guest(64, 0);
    new_secondary();
    new_primary(CKPT_MODE_REMUS, 5, 100);
    pair();
    want_acks = 100;
    cr_assert(run_until(acks_reached, 120000), "only %d acks", H.acks);
    cr_assert_eq(H.acks, 100);
    cr_assert_eq(H.p_done, 0);
    cr_assert_eq(H.s_done, 0);
    cr_assert_eq(H.mismatches, 0, "%d RAM mismatches", H.mismatches);
    cr_assert_eq(H.dev_mismatches, 0, "%d device-state mismatches",
                 H.dev_mismatches);
    /* The primary dies: the secondary takes over from checkpoint 100. */
    tguest_kill(H.gp);
    ckpt_primary_free(H.p);
    H.p = NULL;
    cr_assert(run_until(s_finished, 30000));
    cr_assert_eq(H.s_rc, 0, "takeover: %s", colo_strerror(H.s_rc));
    cr_assert_eq(H.takeover_ckpt, 100);
    cr_assert(H.takeover_image_ok, "committed image != captured image");
    cr_assert_eq(H.takeover_counter, H.counters[100]);
    cr_assert_eq(tguest_wait_counter_above(H.gs, H.counters[100] + 1000, 10000),
                 0, "the guest does not run on the secondary");
}

/* expect_back: how far the last committed checkpoint is behind the last
 * one the primary captured when it died (0 or 1). */
static void failover_at(int point, int expect_back)
{
    int64_t expect_last;

    if (skip_without_qemu())
        return;
    setup_guest(32, 8);
    new_secondary();
    new_primary(CKPT_MODE_REMUS, 5, 0);
    ckpt_primary_set_fault(H.p, point, 5);
    pair();
    cr_assert(run_until(p_finished, 60000), "the fault did not fire");
    cr_assert_eq(H.p_rc, -COLO_EFAULT_INJECTED, "%s", colo_strerror(H.p_rc));
    tguest_kill(H.gp); /* the primary host is gone */
    expect_last = (int64_t)H.max_captured - expect_back;
    cr_assert_geq(expect_last, 4);
    cr_assert(run_until(s_finished, 30000), "no takeover");
    cr_assert_eq(H.s_rc, 0, "takeover: %s", colo_strerror(H.s_rc));
    cr_assert_eq(H.takeovers, 1);
    cr_assert_eq(H.takeover_ckpt, expect_last);
    cr_assert(H.takeover_image_ok,
              "image at takeover != primary's capture %lld",
              (long long)expect_last);
    cr_assert_eq(H.takeover_counter, H.counters[expect_last]);
    cr_assert_eq(
        tguest_wait_counter_above(H.gs, H.takeover_counter + 1000, 10000), 0,
        "the counter does not continue on the secondary");
    cr_assert_geq(tguest_counter(H.gs), H.counters[expect_last]);
}

Test(engine, failover_before_suspend)
{
    failover_at(COLO_FAULT_BEFORE_SUSPEND, 0);
}

Test(engine, failover_mid_pages)
{
    failover_at(COLO_FAULT_MID_PAGES, 1);
}

Test(engine, failover_before_end)
{
    failover_at(COLO_FAULT_BEFORE_CKPT_END, 1);
}

Test(engine, failover_after_end)
{
    failover_at(COLO_FAULT_AFTER_CKPT_END, 0);
}

Test(engine, no_takeover_without_tiebreaker)
{
    if (skip_without_qemu())
        return;
    setup_guest(32, 0);
    H.allow_takeover = false;
    new_secondary();
    new_primary(CKPT_MODE_REMUS, 5, 3);
    pair();
    want_acks = 3;
    cr_assert(run_until(acks_reached, 60000));
    ckpt_primary_free(H.p); /* link drops: primary "gone" */
    H.p = NULL;
    cr_assert_not(run_until(s_finished, 1500), "took over without leave");
    cr_assert_eq(ckpt_secondary_state(H.s), CKPT_S_LOST);
    cr_assert_eq(H.takeovers, 0);
    /* The explicit failover request. */
    cr_assert_eq(ckpt_secondary_failover(H.s), 0);
    cr_assert(run_until(s_finished, 30000));
    cr_assert_eq(H.s_rc, 0);
    cr_assert_eq(H.takeover_ckpt, 3);
}

Test(engine, secondary_loss_and_reprotect)
{
    uint32_t c;

    if (skip_without_qemu())
        return;
    setup_guest(32, 0);
    new_secondary();
    new_primary(CKPT_MODE_REMUS, 5, 0);
    pair();
    want_acks = 5;
    cr_assert(run_until(acks_reached, 60000));
    /* The secondary host dies. */
    ckpt_secondary_free(H.s);
    H.s = NULL;
    tguest_free(H.gs);
    H.gs = NULL;
    cr_assert(run_until(is_unprotected, 10000), "no unprotected event");
    cr_assert_eq(H.p_done, 0);
    cr_assert_eq(ckpt_primary_state(H.p), CKPT_P_UNPROTECTED);
    c = tguest_counter(H.gp);
    cr_assert_eq(tguest_wait_counter_above(H.gp, c + 1000, 5000), 0,
                 "the primary's guest is not running");
    /* Re-protect with a fresh secondary: full sync, verified again. */
    new_secondary();
    pair();
    H.mismatches = H.dev_mismatches = 0;
    want_acks = H.acks + 5;
    cr_assert(run_until(acks_reached, 60000));
    cr_assert_eq(H.p_done, 0);
    cr_assert_eq(H.mismatches, 0);
    cr_assert_eq(H.dev_mismatches, 0);
    /* A deliberate end: the secondary must not take over. */
    ckpt_primary_cancel(H.p);
    cr_assert(run_until(both_finished, 10000));
    cr_assert_eq(H.p_rc, -COLO_ECANCELLED);
    cr_assert_eq(H.s_rc, -COLO_ECANCELLED);
    cr_assert_eq(H.takeovers, 0);
}

Test(engine, colo_100)
{
    uint32_t c;

    if (skip_without_qemu())
        return;
    setup_guest(32, 0);
    H.give_pid = true;
    new_secondary();
    new_primary(CKPT_MODE_COLO, 5, 100);
    pair();
    want_acks = 100;
    cr_assert(run_until(acks_reached, 240000), "only %d acks", H.acks);
    cr_assert_eq(H.acks, 100);
    cr_assert_eq(H.p_done, 0);
    cr_assert_eq(H.s_done, 0);
    cr_assert_eq(H.mismatches, 0, "%d RAM mismatches", H.mismatches);
    cr_assert_eq(H.dev_mismatches, 0, "%d device-state mismatches",
                 H.dev_mismatches);
    /* Between checkpoints the secondary's guest runs (COLO). */
    c = tguest_counter(H.gs);
    cr_assert_eq(tguest_wait_counter_above(H.gs, c + 1000, 5000), 0,
                 "the secondary's guest does not run between checkpoints");
    /* The primary dies: the running secondary goes on. */
    tguest_kill(H.gp);
    ckpt_primary_free(H.p);
    H.p = NULL;
    cr_assert(run_until(s_finished, 30000));
    cr_assert_eq(H.s_rc, 0, "takeover: %s", colo_strerror(H.s_rc));
    cr_assert_eq(H.takeover_ckpt, 100);
    c = tguest_counter(H.gs);
    cr_assert_geq(c, H.counters[100]);
    cr_assert_eq(tguest_wait_counter_above(H.gs, c + 1000, 10000), 0);
}
