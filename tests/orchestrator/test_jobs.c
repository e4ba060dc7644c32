/*
 * The colo binary's jobs end to end: real colo processes (start, receive,
 * standby) and real QEMU running the test guest, over real TCP on
 * 127.0.0.1. Every wait has a deadline; output is read through pipes.
 */
#include "fproc.h"
#include "guest_abi.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Thin names over the shared process support (tests/support/fproc.h):
 * output through pipes, every wait bounded. */
static void spawn(struct fproc *p, char *const argv[])
{
    cr_assert_eq(fproc_spawn(p, argv, NULL), 0, "cannot start %s", argv[0]);
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

static int run_colo(const char *args, char *out, size_t outsz)
{
    return fproc_colo(args, out, outsz, 60000);
}

static uint32_t counter(const char *ram_path)
{
    return fproc_counter(ram_path);
}

static bool counter_above(const char *ram, uint32_t v, int timeout_ms)
{
    return fproc_counter_above(ram, v, timeout_ms);
}

/* The test VM: the test guest with a virtio-serial bus (for hot-plugged
 * ports) and a balloon (for mem-set). */
static void env_setup(struct fenv *e)
{
    cr_assert_eq(
        fenv_setup_ex(e, "dirty=2 rate=4",
                      "\"devices\": [{\"driver\": \"virtio-serial-pci\", "
                      "\"id\": \"vser0\"},\n"
                      "   {\"driver\": \"virtio-balloon-pci\", \"id\": "
                      "\"balloon0\"}]"),
        0);
}

static void env_teardown(struct fenv *e)
{
    fenv_teardown(e);
}

static void start_primary(struct fenv *e, struct fproc *p)
{
    char *argv[] = {COLO_EXE, "start",      e->cfg, "--state-dir",
                    e->pdir,  "--key-file", e->key, NULL};

    spawn(p, argv);
    cr_assert_geq(wait_out(p, "running (QEMU pid", 0, 30000), 0,
                  "primary did not start:\n%s", p->buf);
    cr_assert(counter_above(e->pram, 0, 10000), "guest not running");
}

/* Start a secondary (receive or standby) on an ephemeral port; returns
 * the port. */
static int start_secondary(struct fenv *e, struct fproc *s, const char *what,
                           const char *extra1, const char *extra2)
{
    char *argv[] = {COLO_EXE,       (char *)what,   "--listen",   "127.0.0.1:0",
                    "--state-dir",  e->sdir,        "--key-file", e->key,
                    (char *)extra1, (char *)extra2, NULL};
    long off;

    spawn(s, argv);
    off = wait_out(s, "waiting for a primary on 127.0.0.1:", 0, 10000);
    cr_assert_geq(off, 0, "secondary did not listen:\n%s", s->buf);
    return atoi(s->buf + off);
}

Test(jobs, migrate_counter_continues, .timeout = 120)
{
    struct fenv e;
    struct fproc p, s;
    char args[512], out[8192];
    uint32_t at_source;
    int port, rc;

    env_setup(&e);
    start_primary(&e, &p);
    port = start_secondary(&e, &s, "receive", NULL, NULL);

    snprintf(args, sizeof(args), "migrate jobvm 127.0.0.1:%d --state-dir %s",
             port, e.pdir);
    rc = run_colo(args, out, sizeof(out));
    cr_assert_eq(rc, 0,
                 "migrate failed (%d): %s\nprimary:\n%s\nsecondary:"
                 "\n%s",
                 rc, out, p.buf, s.buf);
    cr_expect(strstr(out, "migrated to") != NULL, "%s", out);
    /* The source colo exits once the guest runs on the destination. */
    cr_expect_eq(wait_exit(&p, 10000), 0, "%s", p.buf);
    cr_assert_geq(wait_out(&s, "now runs here", 0, 10000), 0, "%s", s.buf);
    at_source = counter(e.pram); /* the source's file is gone: 0 */
    (void)at_source;
    /* The destination's counter moves on. */
    cr_expect(counter_above(e.sram, 1000, 10000), "destination not running");
    {
        uint32_t a = counter(e.sram);

        cr_expect(counter_above(e.sram, a, 10000));
    }
    snprintf(args, sizeof(args), "status jobvm --json --state-dir %s", e.sdir);
    cr_expect_eq(run_colo(args, out, sizeof(out)), 0, "%s", out);
    cr_expect(strstr(out, "\"role\":\"primary\"") ||
                  strstr(out, "\"host_state\":\"running\""),
              "%s", out);
    snprintf(args, sizeof(args), "stop jobvm --state-dir %s", e.sdir);
    cr_expect_eq(run_colo(args, out, sizeof(out)), 0, "%s", out);
    cr_expect_eq(wait_exit(&s, 10000), 0);
    reap(&p);
    reap(&s);
    env_teardown(&e);
}

Test(jobs, protect_then_primary_killed_failover, .timeout = 120)
{
    struct fenv e;
    struct fproc p, s;
    char args[512], out[8192], fence[160];
    int port, rc;

    env_setup(&e);
    start_primary(&e, &p);
    /* Gone, or a zombie not yet reaped by this test. */
    snprintf(fence, sizeof(fence), "%s/scripts/fence-pid %d", COLO_SOURCE_DIR,
             (int)p.pid);
    port = start_secondary(&e, &s, "standby", "--fence-cmd", fence);

    snprintf(args, sizeof(args),
             "protect jobvm 127.0.0.1:%d --interval 50 --state-dir %s", port,
             e.pdir);
    rc = run_colo(args, out, sizeof(out));
    cr_assert_eq(rc, 0,
                 "protect failed (%d): %s\nprimary:\n%s\nsecondary:"
                 "\n%s",
                 rc, out, p.buf, s.buf);
    /* Let a few checkpoints commit. */
    snprintf(args, sizeof(args), "status jobvm --json --state-dir %s", e.pdir);
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(run_colo(args, out, sizeof(out)), 0, "%s", out);
        if (strstr(out, "\"checkpoints\":1") == NULL &&
            strstr(out, "\"checkpoints\":") &&
            atoi(strstr(out, "\"checkpoints\":") + 14) >= 10)
            break;
        wait_out(&p, "\x01never", p.len, 50);
    }
    cr_assert(atoi(strstr(out, "\"checkpoints\":") + 14) >= 10, "%s", out);
    cr_expect(strstr(out, "\"protected\":true") != NULL, "%s", out);

    /* The primary host dies: colo and (through PDEATHSIG) its QEMU. */
    kill(p.pid, SIGKILL);
    waitpid(p.pid, NULL, 0);
    p.pid = -1;

    cr_assert_geq(wait_out(&s, "now runs here", 0, 20000), 0,
                  "no takeover:\n%s", s.buf);
    cr_expect(strstr(s.buf, "fence command exited 0") != NULL, "%s", s.buf);
    /* The secondary resumed from a committed checkpoint (the engine tests
     * check the image itself) and the guest runs there. */
    snprintf(args, sizeof(args), "status jobvm --json --state-dir %s", e.sdir);
    cr_assert_eq(run_colo(args, out, sizeof(out)), 0, "%s", out);
    cr_assert_not_null(strstr(out, "\"took_over_from\":"), "%s", out);
    cr_expect_geq(atoi(strstr(out, "\"took_over_from\":") + 17), 10, "%s", out);
    cr_expect_gt(counter(e.sram), 0);
    cr_expect(counter_above(e.sram, counter(e.sram), 10000),
              "secondary not running");
    snprintf(args, sizeof(args), "stop jobvm --state-dir %s", e.sdir);
    cr_expect_eq(run_colo(args, out, sizeof(out)), 0, "%s", out);
    cr_expect_eq(wait_exit(&s, 10000), 0);
    reap(&p);
    reap(&s);
    env_teardown(&e);
}

Test(jobs, standby_without_tiebreaker_waits_for_failover, .timeout = 120)
{
    struct fenv e;
    struct fproc p, s;
    char args[512], out[8192];
    int port, rc;

    env_setup(&e);
    start_primary(&e, &p);
    port = start_secondary(&e, &s, "standby", NULL, NULL);
    snprintf(args, sizeof(args),
             "protect jobvm 127.0.0.1:%d --interval 50 --state-dir %s", port,
             e.pdir);
    rc = run_colo(args, out, sizeof(out));
    cr_assert_eq(rc, 0, "protect failed: %s\n%s\n%s", out, p.buf, s.buf);
    kill(p.pid, SIGKILL);
    waitpid(p.pid, NULL, 0);
    p.pid = -1;
    cr_assert_geq(wait_out(&s, "NOT taking over automatically", 0, 20000), 0,
                  "%s", s.buf);
    cr_expect_lt(wait_out(&s, "now runs here", 0, 500), 0,
                 "took over without a tie-breaker");
    snprintf(args, sizeof(args), "failover jobvm --state-dir %s", e.sdir);
    cr_expect_eq(run_colo(args, out, sizeof(out)), 0, "%s", out);
    cr_assert_geq(wait_out(&s, "now runs here", 0, 20000), 0, "%s", s.buf);
    cr_expect(counter_above(e.sram, counter(e.sram), 10000));
    reap(&p);
    reap(&s);
    env_teardown(&e);
}

Test(jobs, bad_config_is_exit_3)
{
    struct fenv e;
    char args[512], out[4096];
    FILE *f;

    env_setup(&e);
    f = fopen(e.cfg, "w");
    fprintf(f, "{\"name\": 5}");
    fclose(f);
    snprintf(args, sizeof(args), "start %s --state-dir %s --insecure", e.cfg,
             e.pdir);
    cr_expect_eq(run_colo(args, out, sizeof(out)), 3, "%s", out);
    cr_expect(strstr(out, "$.name") != NULL, "%s", out);
    env_teardown(&e);
}

Test(jobs, control_command_without_vm)
{
    char out[4096];

    cr_expect_eq(run_colo("status novm --state-dir /tmp/colo-none-xyz", out,
                          sizeof(out)),
                 1);
    cr_expect(strstr(out, "is the VM running") != NULL, "%s", out);
}

Test(jobs, start_requires_key_or_insecure)
{
    char out[4096];

    cr_expect_eq(run_colo("start /nonexistent.json", out, sizeof(out)), 2);
    cr_expect(strstr(out, "--key-file") != NULL, "%s", out);
}

/* ---- Reconfiguration: mem-set, device-add, device-remove ---- */

#define PORT1                                                        \
    "'{\"driver\": \"virtserialport\", \"id\": \"port1\", \"bus\": " \
    "\"vser0.0\", \"name\": \"org.colo.port1\"}'"

static int colo_in(const char *dir, const char *args, char *out, size_t outsz)
{
    char full[1024];

    snprintf(full, sizeof(full), "%s --state-dir %s", args, dir);
    return run_colo(full, out, outsz);
}

Test(jobs, reconfigure_then_migrate_keeps_config, .timeout = 120)
{
    struct fenv e;
    struct fproc p, s;
    char args[512], out[16384];
    int port;

    env_setup(&e);
    start_primary(&e, &p);

    /* Bad requests change nothing. */
    cr_expect_eq(
        colo_in(e.pdir, "device-add jobvm '{not json'", out, sizeof(out)), 3,
        "%s", out);
    cr_expect_neq(colo_in(e.pdir,
                          "device-add jobvm '{\"driver\": "
                          "\"virtio-serial-pci\", \"id\": \"vser0\"}'",
                          out, sizeof(out)),
                  0, "duplicate id accepted: %s", out);
    cr_expect(strstr(out, "exists already") != NULL, "%s", out);
    cr_expect_neq(colo_in(e.pdir, "mem-set jobvm 33", out, sizeof(out)), 0,
                  "over max_mb accepted");
    cr_expect_neq(
        colo_in(e.pdir, "device-remove jobvm nosuch", out, sizeof(out)), 0);
    cr_expect(strstr(out, "no device with id 'nosuch'") != NULL, "%s", out);
    /* QEMU refusing is reported, and the configuration stays. */
    cr_expect_neq(colo_in(e.pdir,
                          "device-add jobvm '{\"driver\": \"no-such-dev\", "
                          "\"id\": \"x1\"}'",
                          out, sizeof(out)),
                  0);
    cr_expect(strstr(out, "QEMU said no") != NULL, "%s", out);

    snprintf(args, sizeof(args), "device-add jobvm %s", PORT1);
    cr_assert_eq(colo_in(e.pdir, args, out, sizeof(out)), 0, "%s\n%s", out,
                 p.buf);
    cr_assert_eq(colo_in(e.pdir, "mem-set jobvm 24", out, sizeof(out)), 0, "%s",
                 out);
    cr_assert_eq(colo_in(e.pdir, "config jobvm", out, sizeof(out)), 0);
    cr_expect(strstr(out, "\"port1\"") != NULL, "%s", out);
    cr_expect(strstr(out, "\"target_mb\": 24") != NULL, "%s", out);
    cr_expect(strstr(out, "x1") == NULL, "refused device recorded: %s", out);

    /* Migrate: the destination's QEMU is built from the updated
     * configuration, loads the device state (which has port1) and runs. */
    port = start_secondary(&e, &s, "receive", NULL, NULL);
    snprintf(args, sizeof(args), "migrate jobvm 127.0.0.1:%d", port);
    cr_assert_eq(colo_in(e.pdir, args, out, sizeof(out)), 0, "%s\n%s\n%s", out,
                 p.buf, s.buf);
    cr_assert_geq(wait_out(&s, "now runs here", 0, 10000), 0, "%s", s.buf);
    cr_expect(counter_above(e.sram, counter(e.sram), 10000));
    cr_assert_eq(colo_in(e.sdir, "config jobvm", out, sizeof(out)), 0);
    cr_expect(strstr(out, "\"port1\"") != NULL, "%s", out);
    cr_expect(strstr(out, "\"target_mb\": 24") != NULL, "%s", out);

    /* Remove it on the new host; the configuration follows. */
    cr_assert_eq(colo_in(e.sdir, "device-remove jobvm port1", out, sizeof(out)),
                 0, "%s\n%s", out, s.buf);
    cr_assert_eq(colo_in(e.sdir, "config jobvm", out, sizeof(out)), 0);
    cr_expect(strstr(out, "port1") == NULL, "%s", out);
    cr_expect_eq(colo_in(e.sdir, "stop jobvm", out, sizeof(out)), 0);
    reap(&p);
    reap(&s);
    env_teardown(&e);
}

Test(jobs, hotplug_while_protected_then_failover, .timeout = 120)
{
    struct fenv e;
    struct fproc p, s;
    char args[512], out[16384], fence[160];
    int port;

    env_setup(&e);
    start_primary(&e, &p);
    snprintf(fence, sizeof(fence), "%s/scripts/fence-pid %d", COLO_SOURCE_DIR,
             (int)p.pid);
    port = start_secondary(&e, &s, "standby", "--fence-cmd", fence);
    snprintf(args, sizeof(args), "protect jobvm 127.0.0.1:%d --interval 50",
             port);
    cr_assert_eq(colo_in(e.pdir, args, out, sizeof(out)), 0, "%s", out);

    snprintf(args, sizeof(args), "device-add jobvm %s", PORT1);
    cr_assert_eq(colo_in(e.pdir, args, out, sizeof(out)), 0, "%s\n%s\n%s", out,
                 p.buf, s.buf);
    cr_expect(strstr(out, "protection re-paired") != NULL, "%s", out);
    /* The secondary has the device before any checkpoint with it is
     * applied: it was re-launched from the new configuration. */
    for (int i = 0; i < 200; i++) {
        char *c;

        cr_assert_eq(colo_in(e.pdir, "status jobvm --json", out, sizeof(out)),
                     0, "%s", out);
        c = strstr(out, "\"checkpoints\":");
        if (strstr(out, "\"protected\":true") && c && atoi(c + 14) >= 5)
            break;
        wait_out(&p, "\x01never", p.len, 50);
    }
    cr_expect(strstr(out, "\"protected\":true") != NULL, "%s", out);
    cr_assert_eq(colo_in(e.sdir, "config jobvm", out, sizeof(out)), 0, "%s",
                 out);
    cr_expect(strstr(out, "\"port1\"") != NULL,
              "secondary lacks the device: %s", out);

    /* Failover: the VM that runs on the secondary has the device (its
     * device state, which includes port1, loaded). */
    kill(p.pid, SIGKILL);
    waitpid(p.pid, NULL, 0);
    p.pid = -1;
    cr_assert_geq(wait_out(&s, "now runs here", 0, 20000), 0, "%s", s.buf);
    cr_expect(counter_above(e.sram, counter(e.sram), 10000));
    cr_assert_eq(colo_in(e.sdir, "config jobvm", out, sizeof(out)), 0);
    cr_expect(strstr(out, "\"port1\"") != NULL, "%s", out);
    cr_expect_eq(colo_in(e.sdir, "stop jobvm", out, sizeof(out)), 0);
    reap(&p);
    reap(&s);
    env_teardown(&e);
}

/* ---- Save and restore (QEMU guests) ---- */

static void flip_byte(const char *path, long off)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    uint8_t b;

    cr_assert_geq(fd, 0);
    cr_assert_eq(pread(fd, &b, 1, off), 1);
    b ^= 0x5a;
    cr_assert_eq(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

Test(jobs, save_restore_keeps_state_and_config, .timeout = 120)
{
    struct fenv e;
    struct fproc p, r;
    char args[768], out[16384], img[160], bad[160], rdir[160], rram[200];
    uint32_t at_save;
    struct stat st;

    env_setup(&e);
    snprintf(img, sizeof(img), "%s/vm.img", e.dir);
    snprintf(bad, sizeof(bad), "%s/bad.img", e.dir);
    snprintf(rdir, sizeof(rdir), "%s/r", e.dir);
    snprintf(rram, sizeof(rram), "%s/jobvm/ram", rdir);
    start_primary(&e, &p);
    snprintf(args, sizeof(args), "device-add jobvm %s", PORT1);
    cr_assert_eq(colo_in(e.pdir, args, out, sizeof(out)), 0, "%s", out);

    /* save: the guest pauses, the file appears whole, colo stops. */
    snprintf(args, sizeof(args), "save jobvm %s", img);
    cr_assert_eq(colo_in(e.pdir, args, out, sizeof(out)), 0, "%s\n%s", out,
                 p.buf);
    cr_expect_eq(wait_exit(&p, 10000), 0, "%s", p.buf);
    cr_assert_eq(stat(img, &st), 0);
    snprintf(args, sizeof(args), "%s.tmp", img);
    cr_expect_neq(access(args, F_OK), 0, "temporary file left behind");
    snprintf(args, sizeof(args), "verify-stream %s", img);
    cr_expect_eq(run_colo(args, out, sizeof(out)), 0, "%s", out);

    /* A corrupted page, a truncated file: refused, nothing left running
     * and no RAM file left behind. */
    snprintf(args, sizeof(args), "cp %s %s", img, bad);
    cr_assert_eq(system(args), 0);
    flip_byte(bad, (long)st.st_size / 2);
    snprintf(args, sizeof(args), "restore %s --state-dir %s --insecure", bad,
             rdir);
    cr_expect_eq(run_colo(args, out, sizeof(out)), 6, "%s", out);
    cr_expect(strstr(out, "corrupt") != NULL, "%s", out);
    cr_expect_neq(access(rram, F_OK), 0, "RAM file of a refused restore");
    cr_assert_eq(truncate(bad, st.st_size - 100), 0);
    cr_expect_eq(run_colo(args, out, sizeof(out)), 6, "%s", out);

    /* restore: the configuration (with port1) and the guest come back;
     * the counter goes on from where it was saved. */
    {
        char *argv[] = {COLO_EXE, "restore",    img, "--state-dir",
                        rdir,     "--insecure", NULL};

        spawn(&r, argv);
    }
    cr_assert_geq(wait_out(&r, "restored and running", 0, 30000), 0, "%s",
                  r.buf);
    at_save = counter(rram);
    cr_expect_gt(at_save, 0, "RAM not restored");
    cr_expect(counter_above(rram, at_save, 10000), "restored VM not running");
    cr_assert_eq(colo_in(rdir, "config jobvm", out, sizeof(out)), 0);
    cr_expect(strstr(out, "\"port1\"") != NULL, "%s", out);
    cr_expect_eq(colo_in(rdir, "stop jobvm", out, sizeof(out)), 0);
    cr_expect_eq(wait_exit(&r, 10000), 0);
    reap(&p);
    reap(&r);
    env_teardown(&e);
}

Test(jobs, save_continue_keeps_running)
{
    struct fenv e;
    struct fproc p;
    char args[512], out[8192], img[160];

    env_setup(&e);
    snprintf(img, sizeof(img), "%s/c.img", e.dir);
    start_primary(&e, &p);
    snprintf(args, sizeof(args), "save jobvm %s --continue", img);
    cr_assert_eq(colo_in(e.pdir, args, out, sizeof(out)), 0, "%s", out);
    cr_expect(counter_above(e.pram, counter(e.pram), 10000),
              "not running after save --continue");
    /* An unwritable target: an error, the guest runs on. */
    cr_expect_neq(
        colo_in(e.pdir, "save jobvm /nonexistent-dir/x.img", out, sizeof(out)),
        0);
    cr_expect(counter_above(e.pram, counter(e.pram), 10000),
              "not running after a failed save");
    cr_expect_eq(colo_in(e.pdir, "stop jobvm", out, sizeof(out)), 0);
    reap(&p);
    env_teardown(&e);
}

/* The status of jobvm on one side, as JSON text. */
static void status_of(const char *dir, char *out, size_t outsz)
{
    char args[512];

    snprintf(args, sizeof(args), "status jobvm --json --state-dir %s", dir);
    cr_assert_eq(run_colo(args, out, outsz), 0, "%s", out);
}

static long long json_int(const char *out, const char *key)
{
    return fproc_json_int(out, key, -1);
}

/* Protect to a standby started with extra1/extra2; returns its port. */
static int protect_to_standby(struct fenv *e, struct fproc *p, struct fproc *s,
                              const char *extra1, const char *extra2)
{
    char args[512], out[8192];
    int port, rc;

    start_primary(e, p);
    port = start_secondary(e, s, "standby", extra1, extra2);
    snprintf(args, sizeof(args),
             "protect jobvm 127.0.0.1:%d --interval 50 --state-dir %s", port,
             e->pdir);
    rc = run_colo(args, out, sizeof(out));
    cr_assert_eq(rc, 0, "protect failed: %s\n%s\n%s", out, p->buf, s->buf);
    return port;
}

/* --takeover cluster: the standby never decides; it shows
 * awaiting_promotion until 'colo failover', then resumes from exactly the
 * checkpoint it had committed. */
Test(jobs, standby_takeover_cluster_waits_for_promotion, .timeout = 120)
{
    struct fenv e;
    struct fproc p, s;
    char out[8192];
    long long lc = -1;
    int i;

    env_setup(&e);
    protect_to_standby(&e, &p, &s, "--takeover", "cluster");
    status_of(e.sdir, out, sizeof(out));
    cr_expect(strstr(out, "\"takeover\":\"cluster\"") != NULL, "%s", out);
    kill(p.pid, SIGKILL);
    waitpid(p.pid, NULL, 0);
    p.pid = -1;
    for (i = 0; i < 200; i++) {
        status_of(e.sdir, out, sizeof(out));
        if (strstr(out, "\"host_state\":\"awaiting_promotion\""))
            break;
        wait_out(&s, "\x01never", s.len, 50);
    }
    cr_assert(strstr(out, "\"host_state\":\"awaiting_promotion\"") != NULL,
              "%s\n%s", out, s.buf);
    lc = json_int(out, "last_committed");
    cr_assert_geq(lc, 0, "%s", out);
    /* Still waiting a while later: no decision of its own. */
    cr_expect_lt(wait_out(&s, "now runs here", 0, 1500), 0,
                 "took over without being promoted:\n%s", s.buf);
    status_of(e.sdir, out, sizeof(out));
    cr_expect(strstr(out, "\"host_state\":\"awaiting_promotion\"") != NULL,
              "%s", out);
    {
        char args[512];

        snprintf(args, sizeof(args), "failover jobvm --state-dir %s", e.sdir);
        cr_expect_eq(run_colo(args, out, sizeof(out)), 0, "%s", out);
    }
    cr_assert_geq(wait_out(&s, "now runs here", 0, 20000), 0, "%s", s.buf);
    status_of(e.sdir, out, sizeof(out));
    cr_expect_eq(json_int(out, "took_over_from"), lc, "%s", out);
    cr_expect(counter_above(e.sram, counter(e.sram), 10000));
    reap(&p);
    reap(&s);
    env_teardown(&e);
}

/* colo handover: the VM moves to the standby whole (the counter goes on
 * from where it was), the old primary's colo exits, and it refuses when
 * there is no synced peer. */
Test(jobs, handover_moves_vm_to_standby, .timeout = 120)
{
    struct fenv e;
    struct fproc p, s;
    char args[512], out[8192];
    uint32_t c0;
    int rc;

    env_setup(&e);
    protect_to_standby(&e, &p, &s, "--takeover", "cluster");
    c0 = counter(e.pram);
    cr_assert_gt(c0, 0);
    snprintf(args, sizeof(args), "handover jobvm --state-dir %s", e.pdir);
    rc = run_colo(args, out, sizeof(out));
    cr_assert_eq(rc, 0, "handover failed (%d): %s\n%s\n%s", rc, out, p.buf,
                 s.buf);
    cr_expect(strstr(out, "handed over to 127.0.0.1:") != NULL, "%s", out);
    cr_expect_eq(wait_exit(&p, 10000), 0, "old primary did not exit:\n%s",
                 p.buf);
    status_of(e.sdir, out, sizeof(out));
    cr_expect(strstr(out, "\"role\":\"primary\"") != NULL, "%s", out);
    cr_expect_geq(counter(e.sram), c0);
    cr_expect(counter_above(e.sram, counter(e.sram), 10000),
              "the guest does not run after the handover");
    /* Not protected now: nothing to hand over to. */
    snprintf(args, sizeof(args), "handover jobvm --state-dir %s", e.sdir);
    rc = run_colo(args, out, sizeof(out));
    cr_expect_neq(rc, 0, "%s", out);
    cr_expect(strstr(out, "not protected") != NULL, "%s", out);
    cr_expect(counter_above(e.sram, counter(e.sram), 10000),
              "a refused handover stopped the guest");
    reap(&p);
    reap(&s);
    env_teardown(&e);
}

/* --fence-timeout: a fence command that hangs is refused after that long
 * (it was a fixed 10 s). */
Test(jobs, fence_timeout_refuses_hanging_fence_cmd, .timeout = 120)
{
    struct fenv e;
    struct fproc p, s;
    char *argv[] = {COLO_EXE,      "standby",  "--listen",        "127.0.0.1:0",
                    "--state-dir", NULL,       "--key-file",      NULL,
                    "--fence-cmd", "sleep 30", "--fence-timeout", "300",
                    NULL};
    char args[512], out[8192];
    uint64_t t0;
    long off;
    int rc;

    env_setup(&e);
    start_primary(&e, &p);
    argv[5] = e.sdir;
    argv[7] = e.key;
    spawn(&s, argv);
    off = wait_out(&s, "waiting for a primary on 127.0.0.1:", 0, 10000);
    cr_assert_geq(off, 0, "%s", s.buf);
    snprintf(args, sizeof(args),
             "protect jobvm 127.0.0.1:%d --interval 50 --state-dir %s",
             atoi(s.buf + off), e.pdir);
    rc = run_colo(args, out, sizeof(out));
    cr_assert_eq(rc, 0, "%s\n%s", out, s.buf);
    kill(p.pid, SIGKILL);
    waitpid(p.pid, NULL, 0);
    p.pid = -1;
    cr_assert_geq(wait_out(&s, "primary lost:", 0, 20000), 0, "%s", s.buf);
    t0 = fproc_now_ms();
    cr_assert_geq(wait_out(&s, "NOT taking over automatically", 0, 8000), 0,
                  "%s", s.buf);
    cr_expect_lt(fproc_now_ms() - t0, 5000, "refused only after %llu ms",
                 (unsigned long long)(fproc_now_ms() - t0));
    reap(&p);
    reap(&s);
    env_teardown(&e);
}

Test(jobs, cluster_options_usage_errors)
{
    char out[4096];

    cr_expect_eq(
        run_colo("standby --insecure --takeover sometimes", out, sizeof(out)),
        2, "%s", out);
    cr_expect_eq(run_colo("standby --insecure --takeover cluster --fence-cmd "
                          "true",
                          out, sizeof(out)),
                 2, "%s", out);
    cr_expect(strstr(out, "leaves the decision to the cluster") != NULL, "%s",
              out);
    cr_expect_eq(
        run_colo("standby --insecure --fence-timeout 100", out, sizeof(out)), 2,
        "%s", out);
    cr_expect_eq(run_colo("standby --insecure --fence-cmd true --fence-timeout "
                          "0",
                          out, sizeof(out)),
                 2, "%s", out);
    cr_expect_eq(
        run_colo("receive --insecure --takeover cluster", out, sizeof(out)), 2,
        "%s", out);
    cr_expect_eq(run_colo("handover", out, sizeof(out)), 2, "%s", out);
}
