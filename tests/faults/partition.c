/*
 * faults.partition: a link partition between two hosts never leaves two
 * running copies of the VM. Two network namespaces joined by a veth pair
 * (10.198.<n>.1/30 and .2/30, no route out); the primary colo runs in one
 * (`ip netns exec`), the standby in the other with a fence command that
 * refuses while the primary colo process lives (the tie-breaker).
 *
 *   1. protect over the veth; with `tc netem` delay 10 ms + 1% loss +
 *      reordering on the primary's side (if tc exists) checkpoints still
 *      commit.
 *   2. `ip link set down` on the primary's side: the primary reports the VM
 *      unprotected and its guest keeps running; the standby notices the
 *      primary is lost, asks the tie-breaker, is refused, and does NOT take
 *      over (checked for a while after).
 *
 * Needs root and `ip netns`; prints SKIP otherwise. The namespaces are
 * deleted whatever happens (also on the next run, by name prefix + pid).
 */
#include "fproc.h"
#include "tnet.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static struct tnet N;

static int ns_setup(void)
{
    char why[160];

    return tnet_setup(&N, "fp", 198, why, sizeof(why));
}

static long long status_int(const char *dir, const char *key, char *out,
                            size_t outsz)
{
    char args[300];

    snprintf(args, sizeof(args), "status jobvm --json --state-dir %s", dir);
    if (fproc_colo(args, out, outsz, 5000) != 0)
        return -1;
    return fproc_json_int(out, key, -1);
}

static bool wait_ckpts(struct fenv *e, struct fproc *p, long long n,
                       int timeout_ms, long long *got)
{
    uint64_t d = fproc_now_ms() + (uint64_t)timeout_ms;
    char out[8192];

    *got = -1;
    while (fproc_now_ms() < d) {
        *got = status_int(e->pdir, "last_committed", out, sizeof(out));
        if (*got >= n)
            return true;
        fproc_pump(p, 100);
    }
    return false;
}

/* A witness for the standby: a TCP listener on the primary's side of the
 * link (in N.ns_a), in a child that dies with us. Returns its pid. */
static pid_t witness_start(int port)
{
    int ready[2];
    pid_t pid;
    char c;

    if (pipe2(ready, O_CLOEXEC) < 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        char path[96];
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port)};
        int nfd, fd, one = 1;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        snprintf(path, sizeof(path), "/var/run/netns/%s", N.ns_a);
        nfd = open(path, O_RDONLY | O_CLOEXEC);
        if (nfd < 0 || setns(nfd, CLONE_NEWNET) < 0)
            _exit(1);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            listen(fd, 16) < 0)
            _exit(1);
        if (write(ready[1], "r", 1) != 1)
            _exit(1);
        for (;;) { /* ends by SIGKILL (ours or PDEATHSIG) */
            int c2 = accept(fd, NULL, NULL);

            if (c2 >= 0)
                close(c2);
        }
    }
    close(ready[1]);
    if (pid < 0 || read(ready[0], &c, 1) != 1) {
        close(ready[0]);
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        return -1;
    }
    close(ready[0]);
    return pid;
}

/* One partition scenario; the tie-breaker is a fence command (witness
 * false) or a witness next to the primary. Returns the failures. */
static int scenario(bool use_witness)
{
    struct fenv e = {.dir = ""};
    struct fproc p = {.pid = -1}, s = {.pid = -1};
    char fence[200], args[600], out[8192], wit[64];
    int rc = 1, port, fails = 0;
    long long got = -1, before;
    pid_t wpid = -1;

    printf("-- tie-breaker: %s\n",
           use_witness ? "witness beside the primary" : "fence command");
    tnet_sh("ip -n %s link set %s up", N.ns_a, N.if_a);
    if (use_witness) {
        wpid = witness_start(7499);
        if (wpid < 0) {
            printf("FAIL: witness did not start\n");
            return 1;
        }
        snprintf(wit, sizeof(wit), "%s:7499", N.addr_a);
    }
    if (fenv_setup(&e, "dirty=2 rate=16") < 0)
        goto out;
    {
        char *av[] = {"/usr/bin/env",
                      "ip",
                      "netns",
                      "exec",
                      N.ns_a,
                      (char *)fproc_colo_exe(),
                      "start",
                      e.cfg,
                      "--state-dir",
                      e.pdir,
                      "--key-file",
                      e.key,
                      NULL};

        fproc_spawn(&p, av, NULL);
    }
    if (fproc_wait_out(&p, "running (QEMU pid", 0, 30000) < 0) {
        fprintf(stderr, "primary did not start:\n%s\n", p.buf);
        goto out;
    }
    snprintf(fence, sizeof(fence),
             "! grep -qsE '^State:[[:space:]]+[RSDTt]' /proc/%d/status",
             (int)p.pid);
    (void)fence;
    {
        char listen[64];
        char *av[] = {"/usr/bin/env",
                      "ip",
                      "netns",
                      "exec",
                      N.ns_b,
                      (char *)fproc_colo_exe(),
                      "standby",
                      "--listen",
                      listen,
                      "--state-dir",
                      e.sdir,
                      "--key-file",
                      e.key,
                      use_witness ? "--witness" : "--fence-cmd",
                      use_witness ? wit : fence,
                      NULL};
        char pat[80];
        long off;

        snprintf(listen, sizeof(listen), "%s:0", N.addr_b);
        fproc_spawn(&s, av, NULL);
        snprintf(pat, sizeof(pat), "waiting for a primary on %s:", N.addr_b);
        off = fproc_wait_out(&s, pat, 0, 10000);
        if (off < 0) {
            fprintf(stderr, "standby did not listen:\n%s\n", s.buf);
            goto out;
        }
        port = atoi(s.buf + off);
    }
    snprintf(args, sizeof(args),
             "protect jobvm %s:%d --interval 50 --state-dir %s", N.addr_b, port,
             e.pdir);
    if (fproc_colo(args, out, sizeof(out), 30000) != 0) {
        fprintf(stderr, "protect failed: %s\n%s\n%s\n", out, p.buf, s.buf);
        goto out;
    }
    if (!wait_ckpts(&e, &p, 10, 20000, &got)) {
        fprintf(stderr, "no 10 checkpoints (%lld)\n", got);
        goto out;
    }
    printf("protected over the veth: checkpoint %lld committed\n", got);
    if (tnet_sh("ip netns exec %s tc qdisc add dev %s root netem delay 10ms "
                "loss 1%% reorder 5%% 50%%",
                N.ns_a, N.if_a) == 0) {
        before = got;
        if (!wait_ckpts(&e, &p, before + 20, 30000, &got)) {
            printf("FAIL: netem delay+loss+reorder: stuck at %lld\n", got);
            fails++;
        } else {
            printf("held: with netem delay 10ms loss 1%% reorder 5%%: "
                   "%lld -> %lld committed\n",
                   before, got);
        }
        tnet_sh("ip netns exec %s tc qdisc del dev %s root", N.ns_a, N.if_a);
    } else {
        printf("note: tc netem unavailable, delay/loss step not run\n");
    }

    /* The partition: both hosts stay up. */
    before = status_int(e.pdir, "last_committed", out, sizeof(out));
    if (tnet_sh("ip -n %s link set %s down", N.ns_a, N.if_a) != 0) {
        fprintf(stderr, "link down failed\n");
        goto out;
    }
    {
        bool unprot = fproc_wait_out(&p, "UNPROTECTED", 0, 15000) >= 0;
        bool lost = fproc_wait_out(&s, "primary lost", 0, 15000) >= 0;
        bool refused = fproc_wait_out(&s, "NOT taking over", 0, 15000) >= 0 &&
                       strstr(s.buf, use_witness ? "witness unreachable"
                                                 : "fence command exited 1");
        bool took = fproc_wait_out(&s, "now runs here", 0, 3000) >= 0;
        uint32_t c0 = fproc_counter(e.pram);
        bool runs = false;
        uint64_t d = fproc_now_ms() + 10000;

        while (fproc_now_ms() < d && !runs) {
            fproc_pump(&p, 20);
            runs = fproc_counter(e.pram) > c0;
        }
        status_int(e.pdir, "last_committed", out, sizeof(out));
        printf("%s: primary reports unprotected\n", unprot ? "held" : "FAIL");
        printf("%s: status says \"protected\":false\n",
               strstr(out, "\"protected\":false") ? "held" : "FAIL");
        printf("%s: standby noticed the primary lost\n",
               lost ? "held" : "FAIL");
        printf("%s: tie-breaker refused (primary alive)\n",
               refused ? "held" : "FAIL");
        printf("%s: standby did NOT take over (no two copies)\n",
               !took ? "held" : "FAIL");
        printf("%s: primary alive and its guest runs (last committed %lld)\n",
               fproc_alive(&p) && runs ? "held" : "FAIL", before);
        fails += !unprot + !strstr(out, "\"protected\":false") + !lost +
                 !refused + took + !(fproc_alive(&p) && runs);
    }
    if (fails)
        fprintf(stderr, "primary:\n%s\nstandby:\n%s\n", p.buf, s.buf);
    rc = fails;
out:
    fproc_free(&p);
    fproc_free(&s);
    if (wpid > 0) {
        kill(wpid, SIGKILL);
        waitpid(wpid, NULL, 0);
    }
    fenv_teardown(&e);
    return rc;
}

int main(void)
{
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);
    fproc_init();
    if (geteuid() != 0) {
        printf("SKIP: not root, cannot create network namespaces\n");
        fproc_summary("partition:", "partition: SKIP (not root)");
        return 77; /* SKIP_RETURN_CODE: ctest counts it skipped */
    }
    if (access("/usr/bin/qemu-system-x86_64", X_OK) != 0) {
        printf("SKIP: qemu-system-x86_64 not installed\n");
        return 77; /* SKIP_RETURN_CODE: ctest counts it skipped */
    }
    if (ns_setup() < 0) {
        tnet_del(&N);
        printf("SKIP: `ip netns` / veth setup failed here\n");
        fproc_summary("partition:", "partition: SKIP (no ip netns)");
        return 77; /* SKIP_RETURN_CODE: ctest counts it skipped */
    }
    rc = scenario(false);
    rc += scenario(true);
    tnet_del(&N);
    fproc_summary("partition:", rc ? "partition: FAILED"
                                   : "partition: held (fence and witness)");
    return rc ? 1 : 0;
}
