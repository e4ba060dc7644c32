/*
 * guest.boot: the test guest boots under real QEMU (KVM when /dev/kvm
 * opens, and forced TCG), its counter in the RAM file increases, its serial
 * ticks appear and increase, -S keeps it still until QMP "cont", and
 * tguest_free() kills QEMU and removes the temp dir.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/timeutil.h"
#include "tguest.h"

/* Parse every "tick <hex>" line of the serial log into vals; returns n. */
static int parse_ticks(const char *log, uint32_t *vals, int max)
{
    int n = 0;
    const char *p = log;

    while (n < max && (p = strstr(p, "tick ")) != NULL) {
        char *end;
        unsigned long v = strtoul(p + 5, &end, 16);

        if (end == p + 13 && *end == '\n')
            vals[n++] = (uint32_t)v;
        p += 5;
    }
    return n;
}

static void boot_and_check(bool force_tcg, bool seabios)
{
    struct tguest_opts o = tguest_opts_default();
    struct tguest *g = NULL;
    uint32_t c1, ticks[64];
    char *log;
    int n;

    o.force_tcg = force_tcg;
    o.seabios = seabios;
    cr_assert_eq(tguest_start(&o, &g), 0);
    cr_log_info("accel %s", g->kvm ? "kvm" : "tcg");
    cr_assert_eq(g->kvm, !force_tcg && tguest_kvm_usable());
    cr_assert_eq(tguest_wait_counter_above(g, 0, 5000), 0);
    cr_assert_eq(tguest_magic(g), TGUEST_MAGIC);
    cr_assert_eq(tguest_mode(g), 0);
    c1 = tguest_counter(g);
    cr_assert_eq(tguest_wait_counter_above(g, c1, 5000), 0);

    /* Three ticks (250 ms apart) with increasing counter values. */
    cr_assert_eq(tguest_wait_serial(g, "colo-test-guest mode=00000000\n", 5000),
                 0);
    cr_assert_eq(tguest_wait_serial_lines(g, "tick ", 3, 5000), 0);
    log = tguest_serial(g);
    cr_assert_not_null(log);
    n = parse_ticks(log, ticks, 64);
    free(log);
    cr_assert_geq(n, 3, "fewer than 3 tick lines");
    for (int i = 1; i < n; i++)
        cr_assert_gt(ticks[i], ticks[i - 1]);
    tguest_free(g);
}

Test(guest, boot_default_accel, .timeout = 20)
{
    boot_and_check(false, false);
}

Test(guest, boot_tcg, .timeout = 20)
{
    boot_and_check(true, false);
}

/* QEMU's default firmware (SeaBIOS) also boots it (TCG: fast enough). */
Test(guest, boot_seabios_tcg, .timeout = 20)
{
    boot_and_check(true, true);
}

static int qmp_command(const struct tguest *g, const char *cmd)
{
    return tguest_qmp(g, cmd, 5000);
}

static void paused_then_cont(bool force_tcg)
{
    struct tguest_opts o = tguest_opts_default();
    struct tguest *g = NULL;

    o.force_tcg = force_tcg;
    o.paused = true;
    cr_assert_eq(tguest_start(&o, &g), 0);
    /* Paused: the guest never ran, so the counter stays 0 (the wait must
     * time out). */
    cr_assert_eq(tguest_wait_counter_above(g, 0, 300), -ETIMEDOUT);
    cr_assert_eq(tguest_magic(g), 0);
    cr_assert_eq(tguest_qmp(g, "{\"execute\":\"no-such-command\"}", 5000),
                 -COLO_EQMP_GENERIC);
    cr_assert_eq(qmp_command(g, "{\"execute\":\"cont\"}\n"), 0);
    cr_assert_eq(tguest_wait_counter_above(g, 0, 5000), 0);
    cr_assert_eq(tguest_magic(g), TGUEST_MAGIC);
    tguest_free(g);
}

Test(guest, paused_until_cont, .timeout = 20)
{
    paused_then_cont(false);
}

Test(guest, paused_until_cont_tcg, .timeout = 20)
{
    paused_then_cont(true);
}

Test(guest, free_kills_and_cleans, .timeout = 20)
{
    struct tguest_opts o = tguest_opts_default();
    struct tguest *g = NULL;
    char dir[sizeof(g->dir)];
    struct stat st;
    pid_t pid;

    cr_assert_eq(tguest_start(&o, &g), 0);
    pid = g->pid;
    cr_assert_gt(pid, 0);
    snprintf(dir, sizeof(dir), "%s", g->dir);
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert_eq(stat(g->ram_path, &st), 0);
    cr_assert_eq(st.st_size, (off_t)64 << 20);
    cr_assert_eq(kill(pid, 0), 0);
    tguest_free(g);
    /* Reaped: the pid no longer exists (not even as a zombie). */
    cr_assert_eq(kill(pid, 0), -1);
    cr_assert_eq(errno, ESRCH);
    cr_assert_eq(stat(dir, &st), -1);
    cr_assert_eq(errno, ENOENT);
}

Test(guest, start_failure_reports, .timeout = 20)
{
    static const char *const bad[] = {"-no-such-option", NULL};
    struct tguest_opts o = tguest_opts_default();
    struct tguest *g = (struct tguest *)1;
    uint64_t t0 = colo_now_ns();

    o.extra_args = bad;
    cr_assert_eq(tguest_start(&o, &g), -COLO_EQEMU_DIED);
    cr_assert_null(g);
    cr_assert_lt(colo_now_ns() - t0, 5000000000ull);
}

Test(guest, argv_has_the_options)
{
    struct tguest_opts o = tguest_opts_default();
    struct tguest g = {.pid = -1};
    char **argv;
    bool incoming = false, kernel = false, paused = false;

    snprintf(g.ram_path, sizeof(g.ram_path), "/x/ram");
    snprintf(g.serial_path, sizeof(g.serial_path), "/x/serial");
    o.incoming_defer = true;
    o.no_kernel = true;
    o.paused = true;
    argv = tguest_build_argv(&o, &g, 7);
    cr_assert_not_null(argv);
    for (char **p = argv; *p; p++) {
        if (!strcmp(*p, "-incoming"))
            incoming = !strcmp(p[1], "defer");
        if (!strcmp(*p, "-kernel"))
            kernel = true;
        if (!strcmp(*p, "-S"))
            paused = true;
        if (strstr(*p, "socket,id=qmp,fd=7,"))
            cr_assert(strstr(*p, "server=on"));
    }
    cr_assert(incoming && paused && !kernel);
    tguest_argv_free(argv);
}

/*
 * The incoming_defer/no_kernel options load a device state saved by
 * xen-save-devices-state over a shared RAM file (the way a checkpoint
 * secondary resumes): the guest continues where it stopped.
 */
static void device_state_resume(bool force_tcg)
{
    struct tguest_opts o = tguest_opts_default();
    struct tguest *a = NULL, *b = NULL;
    char cmd[600];
    uint32_t stopped;

    o.force_tcg = force_tcg;
    cr_assert_eq(tguest_start(&o, &a), 0);
    cr_assert_eq(tguest_wait_serial_lines(a, "tick ", 1, 5000), 0);
    cr_assert_eq(qmp_command(a, "{\"execute\":\"stop\"}\n"), 0);
    snprintf(cmd, sizeof(cmd),
             "{\"execute\":\"xen-save-devices-state\",\"arguments\":"
             "{\"filename\":\"%s/state\",\"live\":false}}\n",
             a->dir);
    cr_assert_eq(qmp_command(a, cmd), 0);
    tguest_kill(a);
    stopped = tguest_counter(a);
    cr_assert_gt(stopped, 0);

    o.no_kernel = true;
    o.incoming_defer = true;
    o.ram_path = a->ram_path;
    cr_assert_eq(tguest_start(&o, &b), 0);
    cr_assert_eq(tguest_counter(b), stopped);
    /* The saved device state is a migration stream without configuration
     * section or vmdesc (hence those options): feed it as the incoming
     * migration; RAM comes from the shared file. (xen-load-devices-state
     * is no use here in QEMU 7.2: under -S it aborts on the unregistered
     * migration yank instance, under -incoming defer it leaves the VM in
     * "inmigrate" and cont only arms autostart.) */
    snprintf(cmd, sizeof(cmd),
             "{\"execute\":\"migrate-incoming\",\"arguments\":"
             "{\"uri\":\"exec:cat %s/state\"}}\n",
             a->dir);
    cr_assert_eq(qmp_command(b, cmd), 0);
    /* colo's builder starts an incoming QEMU with -S (the guest must not
     * run before colo says so): cont, which during "inmigrate" arms the
     * start at the end of the load, and after it starts the guest. */
    cr_assert_eq(qmp_command(b, "{\"execute\":\"cont\"}\n"), 0);
    cr_assert_eq(tguest_wait_counter_above(b, stopped, 5000), 0);
    cr_assert_eq(tguest_wait_serial_lines(b, "tick ", 1, 5000), 0);
    tguest_free(b);
    tguest_free(a);
}

Test(guest, device_state_resume_default_accel, .timeout = 20)
{
    device_state_resume(false);
}

Test(guest, device_state_resume_tcg, .timeout = 20)
{
    device_state_resume(true);
}

/* tguest-leftover boots a guest and reports QEMU's pid and the temp dir,
 * then leaves without tguest_free(): by exit() (like a test that failed
 * half-way) or by being SIGKILLed. */
struct leftover {
    pid_t child, qemu;
    char dir[256];
};

static void start_leftover(struct leftover *l, const char *how)
{
    char line[400] = "";
    int p[2];
    ssize_t n;
    size_t len = 0;

    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    l->child = fork();
    if (l->child == 0) {
        /* No cr_assert here: with --full-stats even a passing assertion
         * sends a message to the runner, which must come from the test. */
        dup2(p[1], 1);
        execl(COLO_BINARY_DIR "/tests/guest/tguest-leftover", "tguest-leftover",
              how, (char *)NULL);
        _exit(127);
    }
    cr_assert_gt(l->child, 0);
    colo_close(&p[1]);
    /* One line; the helper then exits or hangs (EOF comes with SIGKILL). */
    while (len + 1 < sizeof(line) && !strchr(line, '\n') &&
           (n = read(p[0], line + len, sizeof(line) - 1 - len)) > 0) {
        len += (size_t)n;
        line[len] = '\0';
    }
    colo_close(&p[0]);
    cr_assert_eq(sscanf(line, "%d %255s", &l->qemu, l->dir), 2,
                 "tguest-leftover said \"%s\"", line);
    cr_assert_gt(l->qemu, 0);
}

/* Wait (bounded) for a process that is not our child to die. */
static bool pid_dies(pid_t pid, int timeout_ms)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct pollfd pfd;
    bool dead;

    if (fd < 0)
        return errno == ESRCH;
    pfd.fd = fd;
    pfd.events = POLLIN;
    dead = poll(&pfd, 1, timeout_ms) == 1;
    colo_close(&fd);
    return dead;
}

Test(guest, exit_kills_and_cleans_leftovers, .timeout = 20)
{
    struct leftover l;
    struct stat st;
    int status;

    start_leftover(&l, "exit");
    cr_assert_eq(waitpid(l.child, &status, 0), l.child);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* The atexit handler killed and reaped QEMU and removed the dir. */
    cr_assert_eq(kill(l.qemu, 0), -1);
    cr_assert_eq(errno, ESRCH);
    cr_assert_eq(stat(l.dir, &st), -1);
}

Test(guest, sigkill_kills_qemu, .timeout = 20)
{
    struct leftover l;
    char cmd[300];

    start_leftover(&l, "hang");
    cr_assert_eq(kill(l.child, SIGKILL), 0);
    cr_assert_eq(waitpid(l.child, NULL, 0), l.child);
    /* PR_SET_PDEATHSIG: QEMU dies with its parent. */
    cr_assert(pid_dies(l.qemu, 5000), "QEMU %d outlived its parent", l.qemu);
    /* Nobody ran our cleanup: the temp dir stays; remove it here. */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", l.dir);
    cr_assert_eq(system(cmd), 0);
}

/* True when process pid holds an fd on the same pipe as our fd. */
static bool proc_holds(pid_t pid, int fd)
{
    char want[64], path[64], got[64];
    struct stat st;
    bool found = false;

    if (fstat(fd, &st) < 0)
        return false;
    snprintf(want, sizeof(want), "pipe:[%lu]", (unsigned long)st.st_ino);
    for (int i = 0; i < 1024 && !found; i++) {
        ssize_t n;

        snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, i);
        n = readlink(path, got, sizeof(got) - 1);
        if (n > 0) {
            got[n] = '\0';
            found = !strcmp(got, want);
        }
    }
    return found;
}

Test(guest, only_pass_fds_are_inherited, .timeout = 20)
{
    struct tguest_opts o = tguest_opts_default();
    struct tguest *g = NULL;
    int passed[2], leaked[2];
    char addfd[64];
    const char *extra[3] = {"-add-fd", addfd, NULL};

    cr_assert_eq(pipe2(passed, O_CLOEXEC), 0);
    cr_assert_eq(pipe(leaked), 0); /* no O_CLOEXEC, as a careless caller */
    snprintf(addfd, sizeof(addfd), "fd=%d,set=1", passed[1]);
    o.force_tcg = true;
    o.pass_fds = &passed[1];
    o.n_pass_fds = 1;
    o.extra_args = extra;
    cr_assert_eq(tguest_start(&o, &g), 0);
    cr_assert(proc_holds(g->pid, passed[1]));
    cr_assert(!proc_holds(g->pid, leaked[1]));
    tguest_free(g);
    colo_close(&passed[0]);
    colo_close(&passed[1]);
    colo_close(&leaked[0]);
    colo_close(&leaked[1]);
}

/* No cap on live guests (a COLO test may start hundreds of standbys). */
Test(guest, many_prepared_guests)
{
    struct tguest_opts o = tguest_opts_default();
    static struct tguest *g[300];

    o.ram_mb = 8;
    for (int i = 0; i < 300; i++)
        cr_assert_eq(tguest_prepare(&o, &g[i]), 0, "guest %d", i);
    /* Free in an order that unlinks from the middle, both ends. */
    for (int i = 1; i < 300; i += 2)
        tguest_free(g[i]);
    for (int i = 0; i < 300; i += 2)
        tguest_free(g[i]);
}

/* Kill and launch again on the same RAM file: the guest boots afresh, the
 * serial log keeps both boots. */
Test(guest, relaunch_after_kill, .timeout = 20)
{
    struct tguest_opts o = tguest_opts_default();
    struct tguest *g = NULL;
    char *log;
    int boots = 0;

    o.force_tcg = true;
    cr_assert_eq(tguest_start(&o, &g), 0);
    cr_assert_eq(tguest_wait_serial_lines(g, "tick ", 1, 5000), 0);
    tguest_kill(g);
    cr_assert_eq(g->pid, -1);
    cr_assert_eq(tguest_launch(g, &o), 0);
    cr_assert_gt(g->pid, 0);
    cr_assert_eq(tguest_wait_serial_lines(g, "colo-test-guest ", 2, 5000), 0);
    log = tguest_serial(g);
    cr_assert_not_null(log);
    for (const char *p = log; (p = strstr(p, "colo-test-guest ")); p++)
        boots++;
    free(log);
    cr_assert_eq(boots, 2);
    cr_assert_eq(tguest_wait_counter_above(g, 0, 5000), 0);
    tguest_free(g);
}

/* dirty=<more than the RAM> is clamped to the RAM that multiboot reports:
 * the guest keeps running and the top page of RAM gets dirtied. */
Test(guest, dirty_clamped_to_ram, .timeout = 20)
{
    struct tguest_opts o = tguest_opts_default();
    struct tguest *g = NULL;
    bool pattern = false;

    o.force_tcg = true;
    o.ram_mb = 8;
    o.dirty_mb = 100;
    cr_assert_eq(tguest_start(&o, &g), 0);
    cr_assert_eq(tguest_wait_passes_above(g, 0, 5000), 0);
    cr_assert_eq(tguest_mode(g), 1);
    /* The last two dwords of RAM carry one pass's pattern (a ^ key) | 1;
     * retry when we caught the guest between the two writes. */
    for (int i = 0; i < 5 && !pattern; i++) {
        uint32_t a1 = (uint32_t)g->ram_size - 8, a2 = a1 + 4, v1, v2;

        cr_assert_eq(tguest_wait_passes_above(g, tguest_passes(g), 5000), 0);
        memcpy(&v1, g->ram + a1, 4);
        memcpy(&v2, g->ram + a2, 4);
        pattern = v1 != 0 && ((v1 ^ a1) & ~1u) == ((v2 ^ a2) & ~1u);
    }
    cr_assert(pattern, "the top of RAM is not being dirtied");
    tguest_free(g);
}
