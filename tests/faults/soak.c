/*
 * Soak: `colo protect` for N checkpoints (argv[1], default 500) of a
 * memory-writing guest (dirty=8 MiB at 64 MiB/s) under real colo processes
 * and QEMU, sampling RSS and open fds of both colo processes every ~N/20
 * checkpoints. After a warm-up (the first fifth), neither process may
 * grow by more than the bound: fds by 2, RSS by SOAK_SLACK_KB + 2% (see
 * below). Both are stopped through their control sockets and must exit 0
 * (under ASan, with LeakSanitizer on: no leak at exit).
 *
 * ctest runs faults.soak_short (500); scripts/soak runs 10000.
 * Options (env): COLO_SOAK_INTERVAL_MS (default 20).
 */
#include "fproc.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Allowed growth after warm-up: page buffers reach their high-water mark
 * only when the guest's dirty set (8 MiB here) peaks, so up to 8 MiB of
 * late growth is legitimate; ASan's allocator adds its own steps. A leak
 * of 1 KiB per checkpoint exceeds this over a 10000-checkpoint soak; the
 * short run relies on LeakSanitizer at exit for small leaks. */
#if defined(__SANITIZE_ADDRESS__)
#define SOAK_SLACK_KB (16 * 1024)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SOAK_SLACK_KB (16 * 1024)
#endif
#endif
#ifndef SOAK_SLACK_KB
#define SOAK_SLACK_KB (8 * 1024)
#endif

struct sample {
    long long ckpt;
    long prss, srss;
    int pfd, sfd;
};

#define MAX_SAMPLES 64

int main(int argc, char **argv)
{
    long long target = argc > 1 ? atoll(argv[1]) : 500;
    const char *iv = getenv("COLO_SOAK_INTERVAL_MS");
    struct sample smp[MAX_SAMPLES];
    int ns = 0, rc = 1, port, prc = -1, src = -1;
    struct fenv e;
    struct fproc p = {.pid = -1}, s = {.pid = -1};
    char args[512], out[8192], asan[512];
    const char *old_asan = getenv("ASAN_OPTIONS");
    long long step, ck = 0;
    uint64_t t0 = fproc_now_ms(), deadline;
    char *extra[] = {asan, NULL};

    setvbuf(stdout, NULL, _IOLBF, 0);
    fproc_init();
    if (target < 50 || target > 1000000) {
        fprintf(stderr, "usage: soak [CHECKPOINTS>=50]\n");
        return 2;
    }
    if (access("/usr/bin/qemu-system-x86_64", X_OK) != 0) {
        printf("SKIP: qemu-system-x86_64 not installed\n");
        return 77; /* SKIP_RETURN_CODE: ctest counts it skipped */
    }
    /* ASan's quarantine would look like growth: keep it small. */
    snprintf(asan, sizeof(asan), "ASAN_OPTIONS=%s%squarantine_size_mb=1",
             old_asan ? old_asan : "", old_asan ? ":" : "");
    step = target / 20;
    if (fenv_setup(&e, "dirty=8 rate=64") < 0)
        return 1;
    {
        char *av[] = {(char *)fproc_colo_exe(),
                      "start",
                      e.cfg,
                      "--state-dir",
                      e.pdir,
                      "--key-file",
                      e.key,
                      NULL};

        fproc_spawn(&p, av, extra);
    }
    if (fproc_wait_out(&p, "running (QEMU pid", 0, 30000) < 0) {
        fprintf(stderr, "primary did not start:\n%s\n", p.buf);
        goto out;
    }
    {
        char *av[] = {(char *)fproc_colo_exe(),
                      "standby",
                      "--listen",
                      "127.0.0.1:0",
                      "--state-dir",
                      e.sdir,
                      "--key-file",
                      e.key,
                      NULL};
        long off;

        fproc_spawn(&s, av, extra);
        off =
            fproc_wait_out(&s, "waiting for a primary on 127.0.0.1:", 0, 10000);
        if (off < 0) {
            fprintf(stderr, "standby did not listen:\n%s\n", s.buf);
            goto out;
        }
        port = atoi(s.buf + off);
    }
    snprintf(args, sizeof(args),
             "protect jobvm 127.0.0.1:%d --interval %d --state-dir %s", port,
             iv ? atoi(iv) : 20, e.pdir);
    if (fproc_colo(args, out, sizeof(out), 30000) != 0) {
        fprintf(stderr, "protect failed: %s\n%s\n%s\n", out, p.buf, s.buf);
        goto out;
    }
    /* Bounded: at least 1 s per 10 checkpoints is far slower than any
     * interval we run with. */
    deadline = fproc_now_ms() + 60000 + (uint64_t)target * 100;
    snprintf(args, sizeof(args), "status jobvm --json --state-dir %s", e.pdir);
    printf("%10s %10s %10s %6s %6s\n", "checkpoint", "prim_rss", "sec_rss",
           "p_fds", "s_fds");
    while (ck < target && fproc_now_ms() < deadline) {
        fproc_pump(&p, 100);
        fproc_pump(&s, 0);
        if (!fproc_alive(&p) || !fproc_alive(&s)) {
            fprintf(stderr, "a colo process died:\n%s\n%s\n", p.buf, s.buf);
            goto out;
        }
        if (fproc_colo(args, out, sizeof(out), 5000) != 0)
            continue;
        ck = fproc_json_int(out, "last_committed", 0);
        if (strstr(out, "\"protected\":false")) {
            fprintf(stderr, "unprotected at %lld: %s\n", ck, out);
            goto out;
        }
        if (ns < MAX_SAMPLES && (ns == 0 || ck >= smp[ns - 1].ckpt + step)) {
            struct sample *x = &smp[ns++];

            x->ckpt = ck;
            x->prss = fproc_rss_kb(p.pid);
            x->srss = fproc_rss_kb(s.pid);
            x->pfd = fproc_fd_count(p.pid);
            x->sfd = fproc_fd_count(s.pid);
            printf("%10lld %8ld K %8ld K %6d %6d\n", x->ckpt, x->prss, x->srss,
                   x->pfd, x->sfd);
        }
    }
    if (ck < target) {
        fprintf(stderr, "only %lld of %lld checkpoints by the deadline\n", ck,
                target);
        goto out;
    }
    {
        /* Baseline: the first sample past warm-up (a fifth). */
        struct sample *b = NULL, *l = &smp[ns - 1];
        long pbound, sbound;

        for (int i = 0; i < ns && !b; i++)
            if (smp[i].ckpt >= target / 5)
                b = &smp[i];
        if (!b || b == l) {
            fprintf(stderr, "too few samples\n");
            goto out;
        }
        pbound = SOAK_SLACK_KB + b->prss / 50;
        sbound = SOAK_SLACK_KB + b->srss / 50;
        printf("after warm-up (ckpt %lld -> %lld): primary rss %+ld K "
               "(bound %ld), fds %+d; secondary rss %+ld K (bound %ld), "
               "fds %+d; %.1f checkpoints/s\n",
               b->ckpt, l->ckpt, l->prss - b->prss, pbound, l->pfd - b->pfd,
               l->srss - b->srss, sbound, l->sfd - b->sfd,
               (double)l->ckpt * 1000.0 / (double)(fproc_now_ms() - t0));
        {
            char line[300];

            snprintf(line, sizeof(line),
                     "soak: %lld checkpoints, after warm-up primary rss "
                     "%+ld K fds %+d, secondary rss %+ld K fds %+d",
                     l->ckpt, l->prss - b->prss, l->pfd - b->pfd,
                     l->srss - b->srss, l->sfd - b->sfd);
            fproc_summary("soak:", line);
        }
        if (l->prss - b->prss > pbound || l->srss - b->srss > sbound ||
            l->pfd - b->pfd > 2 || l->sfd - b->sfd > 2) {
            fprintf(stderr, "GROWTH beyond the bound\n");
            goto out;
        }
    }
    snprintf(args, sizeof(args), "stop jobvm --state-dir %s", e.pdir);
    fproc_colo(args, out, sizeof(out), 10000);
    prc = fproc_wait_exit(&p, 15000);
    if (fproc_alive(&s)) {
        snprintf(args, sizeof(args), "stop jobvm --state-dir %s", e.sdir);
        fproc_colo(args, out, sizeof(out), 10000);
        src = fproc_wait_exit(&s, 15000);
    } else {
        src = s.status;
    }
    printf("primary exit %d, standby exit %d\n", prc, src);
    if (prc != 0 || strstr(p.buf, "Sanitizer") || strstr(s.buf, "Sanitizer")) {
        fprintf(stderr, "bad exit:\n%s\n%s\n", p.buf, s.buf);
        goto out;
    }
    rc = 0;
out:
    fproc_free(&p);
    fproc_free(&s);
    fenv_teardown(&e);
    return rc;
}
