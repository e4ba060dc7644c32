/*
 * Helper state through `colo protect` and a failover, end to end: real
 * colo processes, real QEMU, a real dbus-daemon per host, the example
 * helper. After the primary is killed, the secondary's helper holds a
 * state that was committed: loaded exactly once, not newer than the last
 * state the primary's helper had saved.
 */
#include "fproc.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

static int sh(const char *cmd, char *out, size_t outsz)
{
    FILE *f = popen(cmd, "r");
    size_t n;
    int st;

    cr_assert_not_null(f);
    n = fread(out, 1, outsz - 1, f);
    out[n] = '\0';
    st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A property of the example helper on the bus of a VM dir, or -1. */
static long long helper_prop(const char *vmdir, const char *prop)
{
    char cmd[768], out[1024];
    char *p;

    snprintf(cmd, sizeof(cmd),
             "dbus-send --bus=unix:path=%s/dbus.sock --print-reply "
             "--reply-timeout=2000 --dest=org.qemu.VMState1 "
             "/org/qemu/VMState1 org.freedesktop.DBus.Properties.Get "
             "string:org.colo.ExampleHelper1 string:%s 2>&1",
             vmdir, prop);
    if (sh(cmd, out, sizeof(out)) != 0)
        return -1;
    p = strstr(out, "int");
    if (!p)
        return -1;
    p = strchr(p, ' ');
    return p ? atoll(p + 1) : -1;
}

Test(dbus_failover, helper_state_follows_committed_checkpoint, .timeout = 150)
{
    char dir[] = "/tmp/colo-dbusfo-XXXXXX";
    char cfg[128], key[128], pdir[128], sdir[128], pvm[160], svm[160];
    char fence[160], cmd[768], out[8192];
    struct fproc p, s;
    long long saved, loaded, loads;
    long off;
    FILE *f;
    int port;

    if (access("/usr/bin/dbus-daemon", X_OK) != 0 ||
        access("/usr/bin/dbus-send", X_OK) != 0) {
        cr_skip_test("dbus-daemon or dbus-send is not installed");
    }
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cfg, sizeof(cfg), "%s/vm.json", dir);
    snprintf(key, sizeof(key), "%s/key", dir);
    snprintf(pdir, sizeof(pdir), "%s/p", dir);
    snprintf(sdir, sizeof(sdir), "%s/s", dir);
    snprintf(pvm, sizeof(pvm), "%s/dvm", pdir);
    snprintf(svm, sizeof(svm), "%s/dvm", sdir);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "{\"name\": \"dvm\", \"memory_mb\": 32, \"vcpus\": 1,\n"
            " \"kernel\": \"%s/tests/guest/colo-test-guest.elf\",\n"
            " \"helpers\": [{\"id\": \"counter\", \"command\": [\"%s\", "
            "\"--id\", \"counter\", \"--interval-ms\", \"10\"]}]}\n",
            COLO_BINARY_DIR, COLO_DBUS_HELPER);
    fclose(f);
    f = fopen(key, "w");
    fprintf(f, "a shared test key of enough length\n");
    fclose(f);
    cr_assert_eq(chmod(key, 0600), 0); /* colo refuses a shared key */

    {
        char *argv[] = {COLO_EXE, "start",      cfg, "--state-dir",
                        pdir,     "--key-file", key, NULL};

        cr_assert_eq(fproc_spawn(&p, argv, NULL), 0);
    }
    cr_assert_geq(fproc_wait_out(&p, "running (QEMU pid", 0, 30000), 0, "%s",
                  p.buf);
    snprintf(fence, sizeof(fence), "%s/scripts/fence-pid %d", COLO_SOURCE_DIR,
             (int)p.pid);
    {
        char *argv[] = {COLO_EXE,      "standby", "--listen",   "127.0.0.1:0",
                        "--state-dir", sdir,      "--key-file", key,
                        "--fence-cmd", fence,     NULL};

        cr_assert_eq(fproc_spawn(&s, argv, NULL), 0);
    }
    off = fproc_wait_out(&s, "waiting for a primary on 127.0.0.1:", 0, 10000);
    cr_assert_geq(off, 0, "%s", s.buf);
    port = atoi(s.buf + off);

    snprintf(cmd, sizeof(cmd),
             "%s protect dvm 127.0.0.1:%d --interval 100 --state-dir %s 2>&1",
             COLO_EXE, port, pdir);
    cr_assert_eq(sh(cmd, out, sizeof(out)), 0, "%s\n%s\n%s", out, p.buf, s.buf);
    /* A few checkpoints: the helper's Save runs at each. */
    snprintf(cmd, sizeof(cmd), "%s status dvm --json --state-dir %s 2>&1",
             COLO_EXE, pdir);
    for (int i = 0; i < 100; i++) {
        char *c;

        cr_assert_eq(sh(cmd, out, sizeof(out)), 0, "%s", out);
        c = strstr(out, "\"checkpoints\":");
        if (c && atoi(c + 14) >= 10)
            break;
        fproc_pump(&p, 100);
    }
    saved = helper_prop(pvm, "LastSaved");
    cr_assert_gt(saved, 0, "primary helper never saved");

    fproc_reap(&p); /* SIGKILL: the primary host dies */
    cr_assert_geq(fproc_wait_out(&s, "now runs here", 0, 30000), 0, "%s",
                  s.buf);

    loads = helper_prop(svm, "Loads");
    loaded = helper_prop(svm, "LastLoaded");
    cr_expect_eq(loads, 1, "secondary helper loaded %lld times", loads);
    cr_expect_gt(loaded, 0);
    cr_expect_leq(loaded, saved,
                  "the secondary's helper state (%lld) is newer than the "
                  "primary's last save (%lld)",
                  loaded, saved);

    snprintf(cmd, sizeof(cmd), "%s stop dvm --state-dir %s 2>&1", COLO_EXE,
             sdir);
    cr_expect_eq(sh(cmd, out, sizeof(out)), 0, "%s", out);
    fproc_free(&p);
    fproc_free(&s);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}
