/*
 * bench-checkpoint: pause time per checkpoint (p50/p99) and checkpoints/s
 * of colo's Remus engine on a 256 MiB test guest, idle and writing memory,
 * with the pause split into device state, dirty scan and copy.
 *
 * Baseline, same run, same guest: QEMU's own stop + xen-save-devices-state
 * + cont cycle without any memory sync (the floor every checkpoint pays).
 * ratio = colo's idle pause p50 / the baseline's pause p50.
 *
 * The link between the engines runs TLS 1.3 with a PSK from a key, as
 * users run it ("tls": true in the JSON); --insecure runs it plain.
 *
 * COLO row: the idle guest again in COLO mode (the secondary's copy runs
 * between checkpoints and is replaced by a fresh standby QEMU at each),
 * its pause beside Remus's. Caveat: here the secondary engine shares the
 * primary's event loop and starts each standby QEMU synchronously (colo
 * starts it asynchronously), so a launch that overlaps a pause inflates
 * it: the COLO row is an upper bound.
 *
 * How the primary finds dirty pages ("method": soft-dirty where the kernel
 * has it, else the compare scan; --method compare|verify forces the scan
 * or checks the bits against it) and what that costs as the guest grows:
 * scale_ratio = idle pause p50 with a --scale-ram guest (1 GiB) / with
 * the --ram guest (256 MiB); the goal with soft-dirty is <= 1.2. The
 * primary's memory beyond guest RAM: the growth of this process's
 * anonymous RSS (the shadow, the page sets; the secondary's staging of
 * one checkpoint too) over an idle run, at its end.
 *
 * Output: human lines, CSV lines ("csv,..."), and a JSON object last.
 *   bench-checkpoint [--ram MiB] [--dirty MiB] [--count N] [--interval ms]
 *                    [--scale-ram MiB (0: no scaling run)]
 *                    [--method auto|compare|verify] [--link-timeout ms]
 *                    [--colo-count N (COLO mode row; 0: none; 50)]
 *                    [--insecure]
 */
#include "checkpoint/primary.h"
#include "checkpoint/secondary.h"

#include "common/error.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "tguest.h"
#include "tnet.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static bool insecure;
static const char bench_key[] = "a shared bench key of enough length";

struct run {
    struct event_base *evb;
    struct event *deadline;
    bool timed_out;
    struct tguest_opts gopts;
    struct tguest *gp, *gs;
    /* COLO: the standbys launched so far (the engine frees their vms,
     * which kill them; the guests' temp dirs go at teardown). */
    struct tguest *standby[64];
    unsigned nstandby;
    enum ckpt_mode mode;
    struct ckpt_memory *pmem;
    struct ckpt_vm *pvm;
    struct ckpt_primary *p;
    struct ckpt_secondary *s;
    size_t ram_size;
    unsigned want;
    unsigned acks;
    int failed;
    uint64_t t0, t1;
    uint64_t *pause, *dev, *scan, *copy, *pages;
    uint64_t rss0; /* anon RSS before the run (KiB) */
    uint64_t rss1; /* at its end */
};

static unsigned track_flags;  /* --method */
static unsigned link_timeout; /* --link-timeout: peer silent = gone */
static const char *method = "compare";
static char method_why[256];

/* This process's anonymous RSS in KiB (0 if unknown). */
static uint64_t rss_anon_kib(void)
{
    char line[256];
    uint64_t v = 0;
    FILE *f = fopen("/proc/self/status", "re");

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "RssAnon: %" SCNu64, &v) == 1)
            break;
    fclose(f);
    return v;
}

static struct run R;

static void on_deadline(evutil_socket_t fd, short w, void *arg)
{
    R.timed_out = true;
    event_base_loopbreak(R.evb);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, unsigned n, unsigned p)
{
    uint64_t *t;
    uint64_t r;
    size_t i;

    if (!n)
        return 0;
    t = malloc(n * sizeof(*t));
    memcpy(t, v, n * sizeof(*t));
    qsort(t, n, sizeof(*t), cmp_u64);
    i = ((size_t)n * p + 99) / 100;
    i = i ? i - 1 : 0;
    r = t[i < n ? i : n - 1];
    free(t);
    return r;
}

static int s_launch(void *arg, struct ckpt_secondary *s,
                    const struct ckpt_launch_req *req)
{
    struct tguest_opts o = R.gopts;
    struct ckpt_vm *vm;
    struct tguest *g;
    int rc;

    o.paused = true;
    o.incoming_defer = true;
    o.dirty_mb = 0;
    if (req->standby) {
        /* COLO: a further QEMU on the same RAM file, owned by its vm. */
        if (R.nstandby == sizeof(R.standby) / sizeof(R.standby[0])) {
            tguest_free(R.standby[0]);
            memmove(R.standby, R.standby + 1,
                    (R.nstandby - 1) * sizeof(R.standby[0]));
            R.nstandby--;
        }
        o.ram_path = req->ram_path;
        rc = tguest_start(&o, &g);
        if (rc < 0)
            return rc;
        R.standby[R.nstandby++] = g;
        rc = ckpt_vm_qemu_new(R.evb, g->qmp_path, g->pid, 10000, &vm);
        if (rc < 0)
            return rc;
        g->pid = -1; /* the vm kills and reaps it */
        ckpt_secondary_launch_done(s, 0, vm, req->ram_path);
        return 0;
    }
    rc = tguest_start(&o, &R.gs);
    if (rc < 0)
        return rc;
    rc =
        ckpt_vm_qemu_new(R.evb, R.gs->qmp_path,
                         R.mode == CKPT_MODE_COLO ? R.gs->pid : -1, 10000, &vm);
    if (rc < 0)
        return rc;
    if (R.mode == CKPT_MODE_COLO)
        R.gs->pid = -1;
    ckpt_secondary_launch_done(s, 0, vm, R.gs->ram_path);
    return 0;
}

static void s_done(void *arg, int rc, const struct ckpt_stats *st)
{
    if (rc != -COLO_ECANCELLED)
        R.failed = rc ? rc : -EINVAL;
}

static void p_event(void *arg, const struct ckpt_event *ev)
{
    const struct ckpt_stats *st = ev->stats;
    unsigned i;

    if (ev->type != CKPT_EV_CHECKPOINT)
        return;
    if (R.acks == 0)
        R.t0 = colo_now_ns(); /* the full sync is not counted */
    else if (R.acks <= R.want) {
        i = R.acks - 1;
        R.pause[i] = st->pause_last_us;
        R.dev[i] = st->devstate_last_us;
        R.scan[i] = st->scan_last_us;
        R.copy[i] = st->copy_last_us;
        R.pages[i] = st->dirty_pages_last;
    }
    R.acks++;
    if (R.acks > R.want) {
        R.t1 = colo_now_ns();
        R.rss1 = rss_anon_kib();
        event_base_loopbreak(R.evb);
    }
}

static void p_done(void *arg, int rc, const struct ckpt_stats *st)
{
    if (rc != -COLO_ECANCELLED)
        R.failed = rc ? rc : -EINVAL;
    event_base_loopbreak(R.evb);
}

struct result {
    double per_s;
    uint64_t p50, p99, dev50, scan50, copy50, pages50;
    int64_t rss_extra_kib; /* anon RSS growth over the run */
};

static void teardown_run(void)
{
    ckpt_primary_free(R.p);
    ckpt_secondary_free(R.s);
    ckpt_vm_free(R.pvm);
    ckpt_memory_free(R.pmem);
    tguest_free(R.gp);
    tguest_free(R.gs);
    for (unsigned i = 0; i < R.nstandby; i++)
        tguest_free(R.standby[i]);
    free(R.pause);
    free(R.dev);
    free(R.scan);
    free(R.copy);
    free(R.pages);
    event_free(R.deadline);
    event_base_free(R.evb);
    memset(&R, 0, sizeof(R));
}

static int setup_run(size_t ram_mb, size_t dirty_mb, unsigned count)
{
    int rc;

    memset(&R, 0, sizeof(R));
    R.rss0 = rss_anon_kib();
    R.evb = event_base_new();
    R.deadline = evtimer_new(R.evb, on_deadline, NULL);
    R.gopts = tguest_opts_default();
    R.gopts.ram_mb = ram_mb;
    R.gopts.dirty_mb = dirty_mb;
    R.ram_size = ram_mb << 20;
    R.want = count;
    R.pause = calloc(count, sizeof(uint64_t));
    R.dev = calloc(count, sizeof(uint64_t));
    R.scan = calloc(count, sizeof(uint64_t));
    R.copy = calloc(count, sizeof(uint64_t));
    R.pages = calloc(count, sizeof(uint64_t));
    rc = tguest_start(&R.gopts, &R.gp);
    if (rc < 0)
        return rc;
    rc = tguest_wait_counter_above(R.gp, 1000, 20000);
    if (rc < 0)
        return rc;
    rc = ckpt_mem_qemu_open(R.gp->ram_path, R.ram_size, CKPT_MEM_PRIMARY,
                            &R.pmem);
    if (rc < 0)
        return rc;
    rc = ckpt_mem_qemu_track(R.pmem, R.gp->pid, track_flags, method_why,
                             sizeof(method_why));
    if (rc < 0)
        return rc;
    method = ckpt_mem_dirty_method(R.pmem);
    return ckpt_vm_qemu_new(R.evb, R.gp->qmp_path, -1, 10000, &R.pvm);
}

static int run_colo(enum ckpt_mode mode, size_t ram_mb, size_t dirty_mb,
                    unsigned count, unsigned interval, struct result *res)
{
    static const struct ckpt_secondary_cbs scbs = {.launch = s_launch,
                                                   .done = s_done};
    static const struct ckpt_primary_cbs pcbs = {.event = p_event,
                                                 .done = p_done};
    struct ckpt_secondary_opts so = {0};
    struct ckpt_primary_opts po = {0};
    struct timeval tv = colo_ms_to_tv(300000);
    int a = -1, b = -1, rc;

    rc = setup_run(ram_mb, dirty_mb, count);
    if (rc < 0)
        goto out;
    R.mode = mode;
    po.mode = mode;
    po.vm_name = "bench";
    po.ram_size = R.ram_size;
    po.interval_ms = interval;
    if (!insecure)
        po.link.auth_key = so.link.auth_key = bench_key;
    po.link.timeout_ms = link_timeout;
    so.link.timeout_ms = link_timeout;
    /* COLO: s_launch starts each standby synchronously on the loop the
     * primary shares (colo's own launch is asynchronous): the links must
     * outwait it, and the primary's pause includes it when they meet. */
    if (mode == CKPT_MODE_COLO && link_timeout < 10000)
        po.link.timeout_ms = so.link.timeout_ms = 10000;
    rc = ckpt_secondary_new(R.evb, &so, &scbs, NULL, &R.s);
    if (rc >= 0)
        rc = ckpt_primary_new(R.evb, &po, R.pmem, R.pvm, &pcbs, NULL, &R.p);
    if (rc >= 0)
        rc = tnet_tcp_pair(&a, &b);
    if (rc >= 0)
        rc = ckpt_secondary_start(R.s, b);
    if (rc >= 0)
        rc = ckpt_primary_start(R.p, a);
    if (rc < 0)
        goto out;
    evtimer_add(R.deadline, &tv);
    while (R.acks <= R.want && !R.failed && !R.timed_out)
        event_base_loop(R.evb, EVLOOP_ONCE);
    if (R.failed || R.timed_out) {
        rc = R.failed ? R.failed : -ETIMEDOUT;
        goto out;
    }
    res->per_s = (double)count * 1e9 / (double)(R.t1 - R.t0);
    res->p50 = pct(R.pause, count, 50);
    res->p99 = pct(R.pause, count, 99);
    res->dev50 = pct(R.dev, count, 50);
    res->scan50 = pct(R.scan, count, 50);
    res->copy50 = pct(R.copy, count, 50);
    res->pages50 = pct(R.pages, count, 50);
    res->rss_extra_kib = (int64_t)R.rss1 - (int64_t)R.rss0;
    rc = 0;
out:
    teardown_run();
    return rc;
}

/* ---- baseline: stop + save + cont, no memory ------------------------- */

static unsigned base_left;
static uint64_t base_t;
static int base_rc;
static uint64_t *base_pause;
static unsigned base_i;

static void base_step_stop(void);

static void base_cont_done(void *arg, int rc)
{
    if (rc < 0) {
        base_rc = rc;
        return;
    }
    base_pause[base_i++] = (colo_now_ns() - base_t) / 1000;
    if (--base_left)
        base_step_stop();
}

static void base_saved(void *arg, int rc, uint8_t *blob, size_t len)
{
    free(blob);
    if (rc < 0 || (rc = R.pvm->ops->cont(R.pvm, base_cont_done, NULL)) < 0)
        base_rc = rc;
}

static void base_stop_done(void *arg, int rc)
{
    if (rc < 0 || (rc = R.pvm->ops->save_devices(R.pvm, base_saved, NULL)) < 0)
        base_rc = rc;
}

static void base_step_stop(void)
{
    int rc;

    base_t = colo_now_ns();
    rc = R.pvm->ops->stop(R.pvm, base_stop_done, NULL);
    if (rc < 0)
        base_rc = rc;
}

static int run_baseline(size_t ram_mb, unsigned count, uint64_t *p50,
                        uint64_t *p99)
{
    struct timeval tv = colo_ms_to_tv(120000);
    int rc = setup_run(ram_mb, 0, count);

    if (rc < 0)
        goto out;
    base_pause = calloc(count, sizeof(uint64_t));
    base_left = count;
    base_i = 0;
    base_rc = 0;
    evtimer_add(R.deadline, &tv);
    base_step_stop();
    while (base_left && !base_rc && !R.timed_out)
        event_base_loop(R.evb, EVLOOP_ONCE);
    rc = base_rc ? base_rc : R.timed_out ? -ETIMEDOUT : 0;
    if (rc == 0) {
        *p50 = pct(base_pause, count, 50);
        *p99 = pct(base_pause, count, 99);
    }
    free(base_pause);
out:
    teardown_run();
    return rc;
}

/* The 1-minute load average: the pause is bounded by memory bandwidth and
 * the second core; a busy machine shows in the numbers. */
static double loadavg(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "re");

    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

static void print_result(const char *name, const struct result *r)
{
    printf("%-8s %7.1f ckpt/s  pause p50 %6llu us  p99 %6llu us  "
           "(device state %llu us, scan %llu us, copy %llu us, %llu "
           "pages; RSS +%.1f MiB)\n",
           name, r->per_s, (unsigned long long)r->p50,
           (unsigned long long)r->p99, (unsigned long long)r->dev50,
           (unsigned long long)r->scan50, (unsigned long long)r->copy50,
           (unsigned long long)r->pages50, (double)r->rss_extra_kib / 1024);
    printf("csv,%s,%.1f,%llu,%llu,%llu,%llu,%llu,%llu,%lld\n", name, r->per_s,
           (unsigned long long)r->p50, (unsigned long long)r->p99,
           (unsigned long long)r->dev50, (unsigned long long)r->scan50,
           (unsigned long long)r->copy50, (unsigned long long)r->pages50,
           (long long)r->rss_extra_kib);
}

int main(int argc, char **argv)
{
    size_t ram_mb = 256, dirty_mb = 64, scale_mb = 1024;
    unsigned count = 200, interval = 1;
    struct result idle = {0}, dirty = {0}, big = {0}, colo = {0};
    unsigned colo_count = 50;
    uint64_t b50 = 0, b99 = 0;
    double scale = 0;
    int rc;

    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--insecure"))
            insecure = true;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--insecure"))
            i--; /* a flag without a value */
        else if (!strcmp(argv[i], "--ram"))
            ram_mb = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--dirty"))
            dirty_mb = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--count"))
            count = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--interval"))
            interval = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--colo-count"))
            colo_count = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--link-timeout"))
            link_timeout = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--scale-ram"))
            scale_mb = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--method")) {
            if (!strcmp(argv[i + 1], "compare"))
                track_flags = CKPT_TRACK_COMPARE;
            else if (!strcmp(argv[i + 1], "verify"))
                track_flags = CKPT_TRACK_VERIFY;
            else if (strcmp(argv[i + 1], "auto") != 0) {
                fprintf(stderr, "--method auto|compare|verify\n");
                return 2;
            }
        }
    }
    if (!count || !ram_mb) {
        fprintf(stderr, "--count and --ram must be > 0\n");
        return 2;
    }
    colo_log_set_level(COLO_LOG_WARN);
    if (access(tguest_kernel_path(), R_OK) != 0) {
        fprintf(stderr, "test guest kernel not built\n");
        return 2;
    }
    printf("bench-checkpoint: %zu MiB guest, %u checkpoints, interval %u "
           "ms, %s\n",
           ram_mb, count, interval, tguest_kvm_usable() ? "KVM" : "TCG");
    printf("csv,run,ckpt_per_s,pause_p50_us,pause_p99_us,devstate_us,"
           "scan_us,copy_us,pages,rss_extra_kib\n");
    rc = run_baseline(ram_mb, count, &b50, &b99);
    if (rc < 0) {
        fprintf(stderr, "baseline failed: %s\n", colo_strerror(rc));
        return 1;
    }
    if (method_why[0])
        printf("dirty pages found by: %s (soft-dirty: %s)\n", method,
               method_why);
    else
        printf("dirty pages found by: %s\n", method);
    printf("baseline (stop+save+cont, no memory): pause p50 %llu us, p99 "
           "%llu us\n",
           (unsigned long long)b50, (unsigned long long)b99);
    printf("csv,baseline,,%llu,%llu,,,,,\n", (unsigned long long)b50,
           (unsigned long long)b99);
    rc = run_colo(CKPT_MODE_REMUS, ram_mb, 0, count, interval, &idle);
    if (rc < 0) {
        fprintf(stderr, "idle run failed: %s\n", colo_strerror(rc));
        return 1;
    }
    print_result("idle", &idle);
    rc = run_colo(CKPT_MODE_REMUS, ram_mb, dirty_mb, count, interval, &dirty);
    if (rc < 0) {
        fprintf(stderr, "dirty run failed: %s\n", colo_strerror(rc));
        return 1;
    }
    print_result("dirty", &dirty);
    if (colo_count) {
        /* COLO mode on the idle guest: the secondary's copy runs and is
         * replaced by a fresh standby QEMU at every checkpoint. */
        rc = run_colo(CKPT_MODE_COLO, ram_mb, 0, colo_count, interval, &colo);
        if (rc < 0) {
            fprintf(stderr, "COLO run failed: %s\n", colo_strerror(rc));
            return 1;
        }
        print_result("colo", &colo);
        printf("COLO vs Remus (idle, same guest): pause p50 %.2fx, p99 %.2fx "
               "(goal <= 1.5)\n",
               idle.p50 ? (double)colo.p50 / (double)idle.p50 : 0,
               idle.p99 ? (double)colo.p99 / (double)idle.p99 : 0);
    }
    if (scale_mb) {
        char name[32];

        rc = run_colo(CKPT_MODE_REMUS, scale_mb, 0, count, interval, &big);
        if (rc < 0) {
            fprintf(stderr, "idle run at %zu MiB failed: %s\n", scale_mb,
                    colo_strerror(rc));
            return 1;
        }
        snprintf(name, sizeof(name), "idle%zuM", scale_mb);
        print_result(name, &big);
        scale = idle.p50 ? (double)big.p50 / (double)idle.p50 : 0;
        printf("scaling: idle pause p50 at %zu MiB / at %zu MiB = %.2f "
               "(goal <= 1.2 with soft-dirty; method %s)\n",
               scale_mb, ram_mb, scale, method);
    }
    printf("primary memory beyond guest RAM (anon RSS growth, idle run): "
           "%.1f MiB at %zu MiB%s",
           (double)idle.rss_extra_kib / 1024, ram_mb, scale_mb ? "" : "\n");
    if (scale_mb)
        printf(", %.1f MiB at %zu MiB\n", (double)big.rss_extra_kib / 1024,
               scale_mb);
    printf("{\"bench\":\"checkpoint\",\"method\":\"%s\",\"ram_mib\":%zu,"
           "\"dirty_mib\":%zu,"
           "\"idle_ckpt_per_s\":%.1f,\"idle_pause_p50_us\":%llu,"
           "\"idle_pause_p99_us\":%llu,\"idle_devstate_us\":%llu,"
           "\"idle_scan_us\":%llu,\"idle_copy_us\":%llu,"
           "\"dirty_ckpt_per_s\":%.1f,\"dirty_pause_p50_us\":%llu,"
           "\"dirty_pause_p99_us\":%llu,\"dirty_devstate_us\":%llu,"
           "\"dirty_scan_us\":%llu,\"dirty_copy_us\":%llu,"
           "\"dirty_pages_p50\":%llu,"
           "\"scale_ram_mib\":%zu,\"scale_idle_pause_p50_us\":%llu,"
           "\"scale_ratio\":%.3f,\"goal_scale_ratio\":1.2,"
           "\"rss_extra_kib\":%lld,\"scale_rss_extra_kib\":%lld,"
           "\"colo_pause_p50_us\":%llu,\"colo_pause_p99_us\":%llu,"
           "\"colo_devstate_us\":%llu,\"colo_ckpt_per_s\":%.1f,"
           "\"baseline_pause_p50_us\":%llu,\"baseline_pause_p99_us\":%llu,"
           "\"goal_idle_ckpt_per_s\":40,\"loadavg\":%.2f,\"tls\":%s,"
           "\"ratio\":%.3f}\n",
           method, ram_mb, dirty_mb, idle.per_s, (unsigned long long)idle.p50,
           (unsigned long long)idle.p99, (unsigned long long)idle.dev50,
           (unsigned long long)idle.scan50, (unsigned long long)idle.copy50,
           dirty.per_s, (unsigned long long)dirty.p50,
           (unsigned long long)dirty.p99, (unsigned long long)dirty.dev50,
           (unsigned long long)dirty.scan50, (unsigned long long)dirty.copy50,
           (unsigned long long)dirty.pages50, scale_mb,
           (unsigned long long)big.p50, scale, (long long)idle.rss_extra_kib,
           (long long)big.rss_extra_kib, (unsigned long long)colo.p50,
           (unsigned long long)colo.p99, (unsigned long long)colo.dev50,
           colo.per_s, (unsigned long long)b50, (unsigned long long)b99,
           loadavg(), insecure ? "false" : "true",
           b50 ? (double)idle.p50 / (double)b50 : 0);
    return 0;
}
