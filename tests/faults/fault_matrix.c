/*
 * faults.matrix: every wired fault point x {primary, secondary} x {remus,
 * colo}, under real colo processes (start + standby + protect) running the
 * test guest on real QEMU over 127.0.0.1. The side under test gets
 * COLO_FAULT=<n> COLO_FAULT_ACTION=exit, so colo _exit(99)s at the point.
 * Row 0 arms nothing and SIGKILLs that side's colo once checkpoint 10 is
 * committed (a host crash at an arbitrary moment after protection).
 *
 * Invariants checked for every case:
 *   split   never two running copies (primary host alive and running while
 *           the standby printed "now runs here")
 *   counter after a takeover the guest counter is >= the counter the
 *           standby held at the last acked checkpoint, and the takeover
 *           resumed from checkpoint >= the last committed one the primary
 *           reported (status --json last_committed)
 *   alive   once protection was acked, one copy of the VM keeps running
 *           (a double failure -- a secondary-side point that fires only at
 *           failover after we killed the primary -- may lose it)
 *   hang    every step within its deadline
 *   leak    every QEMU (descendant of either colo) is gone at the end
 *
 * Prints a table and appends totals to $COLO_FAULTS_SUMMARY (default
 * <build>/tests/faults/faults-summary.txt). Points not reached in a case
 * are reported as such (not counted as survived).
 */
#include "fproc.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define QEMU_PATH "/usr/bin/qemu-system-x86_64"

struct point {
    int n;
    const char *name;
    bool primary, secondary; /* wired on that side (grep colo_fault() /
                                fault()) */
};

/* Wired points as of checkpoint/src/qemu/primary.c fault() calls and
 * checkpoint/src/qemu/secondary.c + qmp/src/devstate.c colo_fault() calls. */
static const struct point points[] = {
    /* 0: no fault point: SIGKILL the side's colo at checkpoint >= 10 (a
     * host crash at an arbitrary moment, after protection). */
    {0, "SIGKILL@10", true, true},       {1, "BEFORE_SUSPEND", true, false},
    {2, "AFTER_SUSPEND", true, false},   {3, "MID_PAGES", true, true},
    {4, "BEFORE_CKPT_END", true, false}, {5, "AFTER_CKPT_END", true, false},
    {6, "BEFORE_ACK", false, true},      {7, "AFTER_ACK", true, true},
    {8, "DEVICE_LOAD", false, true},     {9, "FAILOVER", false, true},
};

struct result {
    char outcome[48];
    bool fired, ok;
    char why[256];
};

static int n_tried, n_survived, n_notreached, n_failed, n_skipped;

static void why(struct result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void why(struct result *r, const char *fmt, ...)
{
    va_list ap;
    size_t l = strlen(r->why);

    if (l)
        l += (size_t)snprintf(r->why + l, sizeof(r->why) - l, "; ");
    if (l >= sizeof(r->why))
        return;
    va_start(ap, fmt);
    vsnprintf(r->why + l, sizeof(r->why) - l, fmt, ap);
    va_end(ap);
    r->ok = false;
}

static long long status_int(const char *dir, const char *key)
{
    char args[512], out[8192];

    snprintf(args, sizeof(args), "status jobvm --json --state-dir %s", dir);
    if (fproc_colo(args, out, sizeof(out), 5000) != 0)
        return -1;
    return fproc_json_int(out, key, -1);
}

static int track(struct fproc *p, pid_t *pids, int n)
{
    if (p->pid > 0)
        n = fproc_add_descendants(p->pid, pids, n, FPROC_MAX_PIDS);
    return n;
}

static void run_case(const struct point *pt, bool on_primary, const char *mode,
                     struct result *r)
{
    char fault_env[32], fence[160], args[512];
    /* Points fire from checkpoint 5 on: in steady state, after the
     * first acks (COLO_FAULT_CKPT, common/fault.h). */
    char *fenv_[] = {fault_env, "COLO_FAULT_ACTION=exit", "COLO_FAULT_CKPT=5",
                     NULL};
    struct fenv e;
    struct fproc p = {.pid = -1, .out = -1}, s = {.pid = -1, .out = -1};
    struct fproc c = {.pid = -1, .out = -1};
    pid_t pids[FPROC_MAX_PIDS];
    int npids = 0, port, prc;
    long off;
    long long committed = -1, took = -1;
    uint32_t sec_low = 0, after = 0;
    bool acked = false, took_over = false, killed_primary = false;
    bool killed_side = false;
    uint64_t deadline;

    memset(r, 0, sizeof(*r));
    r->ok = true;
    snprintf(fault_env, sizeof(fault_env), "COLO_FAULT=%d", pt->n);
    if (pt->n == 0) /* nothing armed: "COLO_FAULT=0" is off */
        snprintf(fault_env, sizeof(fault_env), "COLO_FAULT=");
    if (fenv_setup(&e, "dirty=8 rate=64") < 0) {
        why(r, "setup");
        return;
    }
    {
        char *argv[] = {(char *)fproc_colo_exe(),
                        "start",
                        e.cfg,
                        "--state-dir",
                        e.pdir,
                        "--key-file",
                        e.key,
                        NULL};

        fproc_spawn(&p, argv, on_primary ? fenv_ : NULL);
    }
    if (fproc_wait_out(&p, "running (QEMU pid", 0, 30000) < 0) {
        why(r, "primary did not start");
        goto out;
    }
    npids = track(&p, pids, npids);
    /* Consent only once the primary colo is dead: the fence makes sure
     * (scripts/fence-pid), bounded, as a real fence would. */
    snprintf(fence, sizeof(fence), "%s/scripts/fence-pid %d", COLO_SOURCE_DIR,
             (int)p.pid);
    {
        char *argv[] = {(char *)fproc_colo_exe(),
                        "standby",
                        "--listen",
                        "127.0.0.1:0",
                        "--state-dir",
                        e.sdir,
                        "--key-file",
                        e.key,
                        "--fence-cmd",
                        fence,
                        NULL};

        fproc_spawn(&s, argv, on_primary ? NULL : fenv_);
    }
    off = fproc_wait_out(&s, "waiting for a primary on 127.0.0.1:", 0, 10000);
    if (off < 0) {
        why(r, "standby did not listen");
        goto out;
    }
    port = atoi(s.buf + off);
    snprintf(args, sizeof(args),
             "protect jobvm 127.0.0.1:%d --mode %s --interval 50 "
             "--state-dir %s",
             port, mode, e.pdir);
    {
        char *argv[] = {"/bin/sh", "-c", NULL, NULL};
        char cmd[700];

        snprintf(cmd, sizeof(cmd), "exec %s %s", fproc_colo_exe(), args);
        argv[2] = cmd;
        fproc_spawn(&c, argv, NULL);
    }
    prc = fproc_wait_exit(&c, 30000);
    if (prc < 0) {
        why(r, "hang: protect did not return in 30 s");
        goto out;
    }
    acked = prc == 0;
    npids = track(&p, pids, npids);
    npids = track(&s, pids, npids);

    /* Observe: until the fault fired and the outcome settled, or 25
     * checkpoints went by without it (point not reached). */
    deadline = fproc_now_ms() + 20000;
    while (fproc_now_ms() < deadline) {
        bool pa = fproc_alive(&p), sa = fproc_alive(&s);
        long long ck;

        fproc_pump(&s, 0);
        fproc_pump(&p, 50);
        npids = track(&p, pids, npids);
        npids = track(&s, pids, npids);
        if (strstr(s.buf, "now runs here")) {
            took_over = true;
            break;
        }
        if (!pa && (strstr(s.buf, "NOT taking over") ||
                    strstr(s.buf, "waiting for a primary again")))
            break; /* decided not to take over; check it stays so */
        if (!sa && pa && strstr(p.buf, "UNPROTECTED"))
            break;
        if (!pa && !sa)
            break;
        if (pa && sa && acked) {
            ck = status_int(e.pdir, "last_committed");
            if (ck > committed) {
                committed = ck;
                sec_low = fproc_counter(e.sram);
                if (strcmp(mode, "colo") == 0)
                    sec_low = 0; /* the secondary runs: no lower bound */
            }
            if (pt->n == 0 && ck >= 10 && !killed_side) {
                killed_side = true;
                kill(on_primary ? p.pid : s.pid, SIGKILL);
                fproc_wait_exit(on_primary ? &p : &s, 5000);
                continue;
            }
            if (ck >= 25 && !killed_primary) {
                /* Not reached in normal running: for a secondary-side
                 * point, drive a failover (the point may be on that
                 * path); otherwise it is simply not reached. */
                if (on_primary)
                    break;
                killed_primary = true;
                kill(p.pid, SIGKILL);
                fproc_wait_exit(&p, 5000);
            }
        }
    }
    if (fproc_now_ms() >= deadline)
        why(r, "hang: no outcome in 20 s");
    r->fired = killed_side ||
               strstr(on_primary ? p.buf : s.buf, "fault point") != NULL;
    if (r->fired && (on_primary ? fproc_alive(&p) : fproc_alive(&s)))
        why(r, "fault fired but the process lives");
    if (took_over) {
        /* No two copies: the primary host must be gone. */
        if (fproc_alive(&p))
            why(r, "SPLIT BRAIN: standby took over, primary alive");
        took = status_int(e.sdir, "took_over_from");
        if (took < committed)
            why(r, "took over from %lld < last committed %lld", took,
                committed);
        after = fproc_counter(e.sram);
        if (after < sec_low)
            why(r, "counter went back: %u < %u", after, sec_low);
        off = (long)s.len;
        (void)off;
        /* The guest runs on the new primary. */
        {
            uint64_t d2 = fproc_now_ms() + 10000;
            bool moved = false;

            while (fproc_now_ms() < d2 && !moved) {
                fproc_pump(&s, 20);
                moved = fproc_counter(e.sram) > after;
            }
            if (!moved)
                why(r, "taken-over VM not running");
        }
        snprintf(r->outcome, sizeof(r->outcome), "takeover@%lld", took);
    } else if (fproc_alive(&p)) {
        uint32_t a = fproc_counter(e.pram);
        uint64_t d2 = fproc_now_ms() + 10000;
        bool moved = false;

        while (fproc_now_ms() < d2 && !moved) {
            fproc_pump(&p, 20);
            moved = fproc_counter(e.pram) > a;
        }
        if (!moved)
            why(r, "primary VM not running");
        if (!fproc_alive(&s) && !strstr(p.buf, "UNPROTECTED"))
            why(r, "secondary gone, primary never said UNPROTECTED");
        snprintf(r->outcome, sizeof(r->outcome), "%s",
                 fproc_alive(&s) ? "both up (not reached)"
                                 : "primary runs, unprotected");
    } else {
        /* The primary died and the standby did not take over: fine only
         * before protection was acked, or on a double failure. */
        if (fproc_wait_out(&s, "now runs here", s.len, 1000) >= 0)
            why(r, "late takeover");
        if (acked && !(killed_primary && r->fired))
            why(r, "VM LOST after protection was acked");
        snprintf(r->outcome, sizeof(r->outcome), "%s",
                 !acked           ? "lost before protection"
                 : killed_primary ? "VM lost (double failure)"
                                  : "VM lost");
    }
    if (!r->fired && (killed_primary || on_primary)) {
        char o[sizeof(r->outcome)];

        snprintf(o, sizeof(o), "%s", r->outcome);
        snprintf(r->outcome, sizeof(r->outcome), "not reached; %.20s", o);
    }
out:
    npids = track(&p, pids, npids);
    npids = track(&s, pids, npids);
    if (!r->ok || getenv("COLO_FAULTS_VERBOSE"))
        fprintf(stderr, "---- primary:\n%s\n---- standby:\n%s\n",
                p.buf ? p.buf : "", s.buf ? s.buf : "");
    fproc_free(&c);
    fproc_free(&p);
    fproc_free(&s);
    /* Every QEMU must go with its colo (PDEATHSIG / clean exit). */
    {
        uint64_t d2 = fproc_now_ms() + 5000;
        int leaked;

        do {
            leaked = 0;
            for (int i = 0; i < npids; i++)
                leaked += fproc_pid_running(pids[i]);
            if (leaked)
                fproc_pump(&p, 20);
        } while (leaked && fproc_now_ms() < d2);
        if (leaked) {
            why(r, "LEAK: %d child process(es) outlived colo", leaked);
            for (int i = 0; i < npids; i++)
                if (fproc_pid_running(pids[i]))
                    kill(pids[i], SIGKILL);
        }
    }
    fproc_reap_orphans();
    if (!r->outcome[0])
        snprintf(r->outcome, sizeof(r->outcome), "error");
    fenv_teardown(&e);
}

int main(int argc, char **argv)
{
    const char *modes[] = {"remus", "colo"};
    const char *only = getenv("COLO_FAULTS_ONLY"); /* e.g. "3" */
    char sumpath[512];
    bool all = getenv("COLO_FAULTS_ALL") != NULL;
    uint64_t t0 = fproc_now_ms();

    (void)argc;
    (void)argv;
    setvbuf(stdout, NULL, _IOLBF, 0);
    fproc_init();
    if (access(QEMU_PATH, X_OK) != 0) {
        printf("SKIP: %s not installed\n", QEMU_PATH);
        return 77; /* SKIP_RETURN_CODE: ctest counts it skipped */
    }
    printf("%-3s %-16s %-9s %-5s %-5s %-26s %s\n", "pt", "name", "side", "mode",
           "fired", "outcome", "invariants");
    for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
        const struct point *pt = &points[i];

        if (only && atoi(only) != pt->n)
            continue;
        for (int side = 0; side < 2; side++) {
            bool wired = side == 0 ? pt->primary : pt->secondary;

            for (int m = 0; m < 2; m++) {
                struct result r;

                if (!wired && !all) {
                    printf("%-3d %-16s %-9s %-5s %-5s %-26s %s\n", pt->n,
                           pt->name, side ? "secondary" : "primary", modes[m],
                           "-", "not wired", "-");
                    n_skipped++;
                    continue;
                }
                run_case(pt, side == 0, modes[m], &r);
                n_tried++;
                if (!r.ok)
                    n_failed++;
                else if (!r.fired)
                    n_notreached++;
                else
                    n_survived++;
                printf("%-3d %-16s %-9s %-5s %-5s %-26s %s\n", pt->n, pt->name,
                       side ? "secondary" : "primary", modes[m],
                       r.fired ? "yes" : "no", r.outcome,
                       r.ok ? "held" : r.why);
            }
        }
    }
    printf("faults: tried %d, fired+survived %d, not reached %d, "
           "FAILED %d, not wired %d (%.1f s)\n",
           n_tried, n_survived, n_notreached, n_failed, n_skipped,
           (double)(fproc_now_ms() - t0) / 1000.0);
    snprintf(sumpath, sizeof(sumpath),
             "fault matrix: tried %d survived %d not_reached %d failed %d "
             "not_wired %d",
             n_tried, n_survived, n_notreached, n_failed, n_skipped);
    fproc_summary("fault matrix:", sumpath);
    return n_failed ? 1 : 0;
}
