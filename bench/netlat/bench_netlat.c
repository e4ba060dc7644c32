/*
 * bench-netlat: what output commit costs a TCP service in the guest. The
 * Linux test guest (tests/linux, cw.det=1: each request line makes the
 * next counter value and is answered with it) runs under `colo start`; the
 * recording peer (tests/support/netpeer.h) makes sequential TCP
 * transactions (connect, one request line, the reply line, reset), first
 * unprotected, then protected in Remus mode (`colo protect --interval MS`,
 * a `colo standby` on loopback), in the same run and on the same guest.
 * Under Remus both the SYN-ACK and the reply wait in a filter-buffer until
 * the next checkpoint is acked, so a transaction costs about two intervals
 * plus two checkpoints (the Remus paper: about one interval per output).
 *
 * COLO mode is not measured: colo does not hold or compare COLO output yet
 * (docs/output.md), so its numbers would be those of an unprotected guest.
 *
 * Output: one line per mode and, last, one JSON object:
 *   {"bench":"netlat","interval_ms":..,"unprotected":{p50,p99,tps},
 *    "remus":{...},"colo":null,"ratio":remus_p50/unprotected_p50}
 * Exit 77 (after "SKIP: ...") when the Linux guest is not built here.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fproc.h"
#include "lguest.h"
#include "netpeer.h"

#define MAX_REQ 1000

struct mode_result {
    double p50_ms, p99_ms, tps;
    unsigned n, failed;
};

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;

    return x < y ? -1 : x > y;
}

static long long now_us(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int run_requests(struct netpeer *np, unsigned n, struct mode_result *r)
{
    static long long lat[MAX_REQ];
    long long t0 = now_us(), start;
    char reply[256];
    unsigned ok = 0;

    memset(r, 0, sizeof(*r));
    for (unsigned i = 0; i < n; i++) {
        unsigned v;

        start = now_us();
        if (netpeer_tcp_request(np, "get\n", reply, sizeof(reply), 20000) !=
                0 ||
            sscanf(reply, "count %u", &v) != 1) {
            r->failed++;
            continue;
        }
        lat[ok++] = now_us() - start;
    }
    r->n = ok;
    if (!ok)
        return -1;
    qsort(lat, ok, sizeof(lat[0]), cmp_ll);
    r->p50_ms = (double)lat[(ok - 1) / 2] / 1000.0;
    r->p99_ms = (double)lat[(ok * 99 + 99) / 100 - 1] / 1000.0;
    r->tps = (double)ok * 1e6 / (double)(now_us() - t0 + 1);
    return 0;
}

static int colo_in(const char *dir, const char *args, char *out, size_t sz)
{
    char a[600];

    snprintf(a, sizeof(a), "%s --state-dir %s", args, dir);
    return fproc_colo(a, out, sz, 60000);
}

int main(int argc, char **argv)
{
    unsigned n = 40, interval = 100;
    char dir[] = "/tmp/colo-netlat-XXXXXX", why[256], wire[128], cfg[128],
         key[128], pdir[128], sdir[128], fence[256], out[8192], args[256];
    struct lguest_cfg c = lguest_cfg_default();
    struct mode_result un, re;
    struct netpeer *np;
    struct fproc p = {.pid = -1, .out = -1}, s = {.pid = -1, .out = -1};
    FILE *f;
    int opt, rc = 1;
    long off = -1;

    while ((opt = getopt(argc, argv, "n:i:")) != -1) {
        if (opt == 'n')
            n = (unsigned)atoi(optarg);
        else if (opt == 'i')
            interval = (unsigned)atoi(optarg);
        else {
            fprintf(stderr, "usage: bench-netlat [-n REQUESTS] [-i MS]\n");
            return 2;
        }
    }
    if (n == 0 || n > MAX_REQ)
        n = 40;
    if (!lguest_available(why, sizeof(why))) {
        printf("SKIP: %s\n", why);
        return 77;
    }
    fproc_init();
    if (!mkdtemp(dir))
        return 1;
    snprintf(wire, sizeof(wire), "%s/wire.sock", dir);
    snprintf(cfg, sizeof(cfg), "%s/vm.json", dir);
    snprintf(key, sizeof(key), "%s/key", dir);
    snprintf(pdir, sizeof(pdir), "%s/p", dir);
    snprintf(sdir, sizeof(sdir), "%s/s", dir);
    if (netpeer_start(wire, &np) < 0)
        return 1;
    c.name = "lx";
    c.cmdline = "cw.det=1 cw.out=tcp";
    c.wire_path = wire;
    f = fopen(key, "w");
    if (!f || lguest_write_config(cfg, &c) < 0)
        return 1;
    fputs("a shared test key of enough length\n", f);
    fclose(f);
    if (chmod(key, 0600) < 0) /* colo refuses a key others may read */
        return 1;
    {
        char *av[] = {(char *)fproc_colo_exe(),
                      "start",
                      cfg,
                      "--state-dir",
                      pdir,
                      "--key-file",
                      key,
                      NULL};

        if (fproc_spawn(&p, av, NULL) < 0 ||
            fproc_wait_out(&p, "running (QEMU pid", 0, 30000) < 0) {
            fprintf(stderr, "colo start failed:\n%s\n", p.buf);
            goto out;
        }
    }
    /* Boot: the first answer (refused until the workload listens). */
    {
        struct timespec step = {0, 200 * 1000 * 1000};
        long long dl = now_us() + 120 * 1000000LL;
        char reply[256];
        int r = -1;

        while (r != 0 && now_us() < dl) {
            r = netpeer_tcp_request(np, "get\n", reply, sizeof(reply), 10000);
            if (r != 0)
                nanosleep(&step, NULL); /* polling for boot, bounded */
        }
        if (r != 0) {
            fprintf(stderr, "the guest never answered\n");
            goto out;
        }
    }
    if (run_requests(np, n, &un) < 0)
        goto out;
    printf("unprotected: %u transactions, p50 %.2f ms, p99 %.2f ms, %.1f/s\n",
           un.n, un.p50_ms, un.p99_ms, un.tps);
    fflush(stdout);

    snprintf(fence, sizeof(fence), "%s/scripts/fence-pid %d", COLO_SOURCE_DIR,
             (int)p.pid);
    {
        char *av[] = {(char *)fproc_colo_exe(),
                      "standby",
                      "--listen",
                      "127.0.0.1:0",
                      "--state-dir",
                      sdir,
                      "--key-file",
                      key,
                      "--fence-cmd",
                      fence,
                      NULL};

        if (fproc_spawn(&s, av, NULL) < 0 ||
            (off = fproc_wait_out(&s, "waiting for a primary on 127.0.0.1:", 0,
                                  10000)) < 0) {
            fprintf(stderr, "standby failed:\n%s\n", s.buf);
            goto out;
        }
    }
    snprintf(args, sizeof(args), "protect lx 127.0.0.1:%d --interval %u",
             atoi(s.buf + off), interval);
    if (colo_in(pdir, args, out, sizeof(out)) != 0) {
        fprintf(stderr, "protect failed: %s\n%s\n", out, p.buf);
        goto out;
    }
    if (run_requests(np, n, &re) < 0)
        goto out;
    printf("remus (interval %u ms): %u transactions, p50 %.1f ms, p99 %.1f "
           "ms, %.1f/s\n",
           interval, re.n, re.p50_ms, re.p99_ms, re.tps);
    colo_in(pdir, "status lx --json", out, sizeof(out));
    printf("remus status: pause_p50_us %lld, release_delay_p50_us %lld, "
           "release_delay_p99_us %lld\n",
           fproc_json_int(out, "pause_p50_us", -1),
           fproc_json_int(out, "release_delay_p50_us", -1),
           fproc_json_int(out, "release_delay_p99_us", -1));
    printf("{\"bench\":\"netlat\",\"interval_ms\":%u,\"requests\":%u,"
           "\"unprotected\":{\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"tps\":%.2f},"
           "\"remus\":{\"p50_ms\":%.1f,\"p99_ms\":%.1f,\"tps\":%.2f},"
           "\"colo\":null,\"failed\":%u,\"ratio\":%.1f}\n",
           interval, n, un.p50_ms, un.p99_ms, un.tps, re.p50_ms, re.p99_ms,
           re.tps, un.failed + re.failed,
           re.p50_ms / (un.p50_ms > 0 ? un.p50_ms : 1));
    rc = 0;
out:
    colo_in(pdir, "stop lx", out, sizeof(out));
    fproc_free(&p);
    fproc_free(&s);
    netpeer_free(np);
    snprintf(args, sizeof(args), "rm -rf '%s'", dir);
    if (system(args) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return rc;
}
