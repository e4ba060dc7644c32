/*
 * orchestrator.netns: the colo jobs of test_jobs.c across two "hosts": the
 * primary colo (and its QEMU) in one network namespace, the secondary in
 * another, joined only by a veth pair with a private /30 (10.197.<n>.1 and
 * .2, no other interface but lo, no route out). Every colo command, the
 * control ones included, runs inside its host's namespace
 * (`ip netns exec`); the test reads the guest counter from the RAM files.
 *
 *   - migrate: the VM moves to the other namespace over the veth (its
 *     receive counters show the RAM went through it), the source colo
 *     exits, and the guest counter runs on the destination.
 *   - protect + failover: checkpoints commit over the veth, the primary's
 *     colo is killed -9, the standby fences it (scripts/fence-pid), takes
 *     over from a committed checkpoint, and the counter runs there.
 *
 * Needs root and `ip netns`; otherwise prints "SKIP: ..." and skips. The
 * namespaces are deleted in the fixture's fini (also after a failed
 * assertion) and, left over by a killed run, by the next run (by name:
 * colo-nt-<pid>-a/b with <pid> no longer alive).
 */
#include "fproc.h"
#include "guest_abi.h"
#include "tnet.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

static struct tnet N;
static char skip_reason[160];

/* Returns 0, or -1 with skip_reason set. */
static int ns_setup(void)
{
    skip_reason[0] = '\0';
    if (geteuid() != 0) {
        snprintf(skip_reason, sizeof(skip_reason),
                 "not root, cannot create network namespaces");
        return -1;
    }
    if (access("/usr/bin/qemu-system-x86_64", X_OK) != 0) {
        snprintf(skip_reason, sizeof(skip_reason),
                 "qemu-system-x86_64 not installed");
        return -1;
    }
    return tnet_setup(&N, "nt", 197, skip_reason, sizeof(skip_reason));
}

/* Skips the test (with the reason) when no namespaces. */
static void need_ns(void)
{
    if (ns_setup() < 0) {
        cr_skip_test("%s", skip_reason);
    }
}

/* Process records, output and waits: tests/support/fproc.h. */
static void spawn(struct fproc *p, char *const argv[])
{
    cr_assert_eq(fproc_spawn(p, argv, NULL), 0, "cannot start %s", argv[0]);
}

/* Start `colo ARGS...` inside namespace ns. `ip netns exec` execs colo:
 * the pid is colo's (and PDEATHSIG survives the execs). */
static void spawn_in(struct fproc *p, const char *ns, char *const args[])
{
    char *argv[24] = {"/usr/bin/env", "ip",       "netns",
                      "exec",         (char *)ns, COLO_EXE};
    size_t n = 6;

    for (size_t i = 0; args[i] && n < 23; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    spawn(p, argv);
}

static long wait_out(struct fproc *p, const char *s, size_t from,
                     int timeout_ms)
{
    return fproc_wait_out(p, s, from, timeout_ms);
}

static int wait_exit(struct fproc *p, int timeout_ms)
{
    return fproc_wait_exit(p, timeout_ms);
}

static void reap(struct fproc *p)
{
    fproc_free(p);
}

/* A colo control command inside namespace ns, bounded by timeout(1). */
static int colo_in(const char *ns, const char *args, char *out, size_t outsz)
{
    return tnet_sh_out(out, outsz, "timeout -s KILL 30 ip netns exec %s %s %s",
                       ns, COLO_EXE, args);
}

static uint32_t counter(const char *ram_path)
{
    return fproc_counter(ram_path);
}

static bool counter_above(const char *ram, uint32_t v, int timeout_ms)
{
    return fproc_counter_above(ram, v, timeout_ms);
}

/* Bytes received on the secondary's end of the veth. */
static long long rx_bytes(void)
{
    char out[256];

    if (tnet_sh_out(
            out, sizeof(out),
            "ip netns exec %s cat /sys/class/net/%s/statistics/rx_bytes",
            N.ns_b, N.if_b) != 0)
        return -1;
    return atoll(out);
}

struct env {
    char dir[64];
    char cfg[128], key[128], pdir[128], sdir[128];
    char pram[160], sram[160];
};

static void env_setup(struct env *e)
{
    FILE *f;

    strcpy(e->dir, "/tmp/colo-netns-XXXXXX");
    cr_assert_not_null(mkdtemp(e->dir));
    snprintf(e->cfg, sizeof(e->cfg), "%s/vm.json", e->dir);
    snprintf(e->key, sizeof(e->key), "%s/key", e->dir);
    snprintf(e->pdir, sizeof(e->pdir), "%s/p", e->dir);
    snprintf(e->sdir, sizeof(e->sdir), "%s/s", e->dir);
    snprintf(e->pram, sizeof(e->pram), "%s/jobvm/ram", e->pdir);
    snprintf(e->sram, sizeof(e->sram), "%s/jobvm/ram", e->sdir);
    f = fopen(e->cfg, "w");
    cr_assert_not_null(f);
    /* qboot boots the guest in well under a second; SeaBIOS took more
     * than the 10 s start_primary allows at load average 20. */
    fprintf(f,
            "{\"name\": \"jobvm\", \"memory_mb\": 32, \"vcpus\": 1,\n"
            " \"kernel\": \"%s/tests/guest/colo-test-guest.elf\",\n"
            " \"cmdline\": \"dirty=2 rate=4\"%s}\n",
            COLO_BINARY_DIR,
            access("/usr/share/qemu/qboot.rom", R_OK) == 0
                ? ",\n \"qemu\": {\"extra_args\": [\"-bios\", "
                  "\"/usr/share/qemu/qboot.rom\"]}"
                : "");
    fclose(f);
    f = fopen(e->key, "w");
    cr_assert_not_null(f);
    fprintf(f, "a shared test key of enough length\n");
    fclose(f);
    cr_assert_eq(chmod(e->key, 0600), 0); /* colo refuses a shared key */
}

static void env_teardown(struct env *e)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
    if (system(cmd) != 0)
        cr_log_warn("could not remove %s", e->dir);
    e->dir[0] = '\0';
}

/* The hosts see only each other: one /30 on the veth, no default route. */
static void check_isolation(void)
{
    char out[1024];

    cr_assert_eq(tnet_sh_out(out, sizeof(out), "ip -n %s route show", N.ns_a),
                 0, "%s", out);
    cr_assert_null(strstr(out, "default"), "route out of %s: %s", N.ns_a, out);
    cr_assert_not_null(strstr(out, "/30"), "%s", out);
    cr_assert_eq(tnet_sh_out(out, sizeof(out), "ip -n %s route show", N.ns_b),
                 0, "%s", out);
    cr_assert_null(strstr(out, "default"), "route out of %s: %s", N.ns_b, out);
}

static void start_primary(struct env *e, struct fproc *p)
{
    char *args[] = {"start",      e->cfg, "--state-dir", e->pdir,
                    "--key-file", e->key, NULL};

    spawn_in(p, N.ns_a, args);
    cr_assert_geq(wait_out(p, "running (QEMU pid", 0, 30000), 0,
                  "primary did not start:\n%s", p->buf);
    cr_assert(counter_above(e->pram, 0, 10000), "guest not running");
}

/* A secondary (receive or standby) on N.addr_b in N.ns_b; returns the port. */
static int start_secondary(struct env *e, struct fproc *s, const char *what,
                           const char *extra1, const char *extra2)
{
    char listen[48], pat[96];
    char *args[] = {(char *)what,   "--listen",   listen, "--state-dir",
                    e->sdir,        "--key-file", e->key, (char *)extra1,
                    (char *)extra2, NULL};
    long off;

    snprintf(listen, sizeof(listen), "%s:0", N.addr_b);
    snprintf(pat, sizeof(pat), "waiting for a primary on %s:", N.addr_b);
    spawn_in(s, N.ns_b, args);
    off = wait_out(s, pat, 0, 10000);
    cr_assert_geq(off, 0, "secondary did not listen:\n%s", s->buf);
    return atoi(s->buf + off);
}

/* The test's processes and files: the fini cleans them up even after a
 * failed assertion. */
static struct env g_env;
static struct fproc g_pri, g_sec;

static void fixture_init(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_env.dir[0] = '\0';
    g_pri.pid = g_sec.pid = -1;
    g_pri.out = g_sec.out = -1;
}

static void fixture_fini(void)
{
    reap(&g_pri);
    reap(&g_sec);
    if (g_env.dir[0])
        env_teardown(&g_env);
    tnet_del(&N);
}

TestSuite(netns, .init = fixture_init, .fini = fixture_fini);

Test(netns, migrate_across_namespaces, .timeout = 150)
{
    struct env *e = &g_env;
    struct fproc *p = &g_pri, *s = &g_sec;
    char args[1024], out[8192];
    long long rx0, rx1;
    int port, rc;

    need_ns();
    check_isolation();
    env_setup(e);
    start_primary(e, p);
    port = start_secondary(e, s, "receive", NULL, NULL);

    rx0 = rx_bytes();
    snprintf(args, sizeof(args), "migrate jobvm %s:%d --state-dir %s", N.addr_b,
             port, e->pdir);
    rc = colo_in(N.ns_a, args, out, sizeof(out));
    cr_assert_eq(rc, 0,
                 "migrate failed (%d): %s\nprimary:\n%s\nsecondary:"
                 "\n%s",
                 rc, out, p->buf, s->buf);
    cr_expect(strstr(out, "migrated to") != NULL, "%s", out);
    rx1 = rx_bytes();
    /* What colo says it sent (RAM pages and device state) crossed the
     * veth: the secondary's end received at least that many bytes. */
    {
        const char *mib = strstr(out, " rounds, ");
        double sent = mib ? atof(mib + 9) * 1048576.0 : -1;

        cr_assert_gt(sent, 64 * 1024, "%s", out);
        /* sent is printed rounded to 0.1 MiB. */
        cr_expect_geq((double)(rx1 - rx0), sent - 0.05 * 1048576.0,
                      "%lld bytes over the veth, colo sent %.0f", rx1 - rx0,
                      sent);
    }
    cr_expect_eq(wait_exit(p, 10000), 0, "%s", p->buf);
    cr_assert_geq(wait_out(s, "now runs here", 0, 10000), 0, "%s", s->buf);
    cr_expect(counter_above(e->sram, 1000, 10000), "destination not running");
    {
        uint32_t a = counter(e->sram);

        cr_expect(counter_above(e->sram, a, 10000), "counter stuck at %u", a);
    }
    snprintf(args, sizeof(args), "status jobvm --json --state-dir %s", e->sdir);
    cr_expect_eq(colo_in(N.ns_b, args, out, sizeof(out)), 0, "%s", out);
    cr_expect(strstr(out, "\"role\":\"primary\"") ||
                  strstr(out, "\"host_state\":\"running\""),
              "%s", out);
    snprintf(args, sizeof(args), "stop jobvm --state-dir %s", e->sdir);
    cr_expect_eq(colo_in(N.ns_b, args, out, sizeof(out)), 0, "%s", out);
    cr_expect_eq(wait_exit(s, 10000), 0);
    reap(p);
    reap(s);
    env_teardown(e);
}

Test(netns, protect_then_primary_killed_failover, .timeout = 150)
{
    struct env *e = &g_env;
    struct fproc *p = &g_pri, *s = &g_sec;
    char args[1024], out[8192], fence[160];
    const char *ck;
    long long rx0;
    int port, rc;

    need_ns();
    check_isolation();
    env_setup(e);
    start_primary(e, p);
    snprintf(fence, sizeof(fence), "%s/scripts/fence-pid %d", COLO_SOURCE_DIR,
             (int)p->pid);
    port = start_secondary(e, s, "standby", "--fence-cmd", fence);

    rx0 = rx_bytes();
    snprintf(args, sizeof(args),
             "protect jobvm %s:%d --interval 50 --state-dir %s", N.addr_b, port,
             e->pdir);
    rc = colo_in(N.ns_a, args, out, sizeof(out));
    cr_assert_eq(rc, 0,
                 "protect failed (%d): %s\nprimary:\n%s\nsecondary:"
                 "\n%s",
                 rc, out, p->buf, s->buf);
    /* Checkpoints commit (acked by the standby) over the veth. */
    snprintf(args, sizeof(args), "status jobvm --json --state-dir %s", e->pdir);
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(colo_in(N.ns_a, args, out, sizeof(out)), 0, "%s", out);
        ck = strstr(out, "\"checkpoints\":");
        if (ck && atoi(ck + 14) >= 10)
            break;
        wait_out(p, "\x01never", p->len, 50);
    }
    ck = strstr(out, "\"checkpoints\":");
    cr_assert(ck && atoi(ck + 14) >= 10, "%s", out);
    cr_expect(strstr(out, "\"protected\":true") != NULL, "%s", out);
    cr_expect_geq(rx_bytes() - rx0, 1LL << 20,
                  "the checkpoints did not cross the veth");

    /* The primary host dies: colo and (through PDEATHSIG) its QEMU. */
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = -1;

    cr_assert_geq(wait_out(s, "now runs here", 0, 20000), 0, "no takeover:\n%s",
                  s->buf);
    cr_expect(strstr(s->buf, "fence command exited 0") != NULL, "%s", s->buf);
    snprintf(args, sizeof(args), "status jobvm --json --state-dir %s", e->sdir);
    cr_assert_eq(colo_in(N.ns_b, args, out, sizeof(out)), 0, "%s", out);
    cr_assert_not_null(strstr(out, "\"took_over_from\":"), "%s", out);
    cr_expect_geq(atoi(strstr(out, "\"took_over_from\":") + 17), 10, "%s", out);
    cr_expect_gt(counter(e->sram), 0);
    cr_expect(counter_above(e->sram, counter(e->sram), 10000),
              "secondary not running");
    snprintf(args, sizeof(args), "stop jobvm --state-dir %s", e->sdir);
    cr_expect_eq(colo_in(N.ns_b, args, out, sizeof(out)), 0, "%s", out);
    cr_expect_eq(wait_exit(s, 10000), 0);
    reap(p);
    reap(s);
    env_teardown(e);
}
