/*
 * The real libxenguest path: `colo __xen-helper` opening the Xen interface.
 * On a machine without a hypervisor it must fail cleanly with "no Xen
 * hypervisor" through the ordinary DONE path (no crash, no hang); with a
 * hypervisor the test prints SKIP (the nested Xen tests cover that).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/xen_helper.h"
#include "common/error.h"
#include "xen_tutil.h"

Test(real, no_hypervisor_fails_cleanly)
{
    char why[512] = "";
    struct tctx t;
    int fd;
    struct ckpt_xen_helper_params p = {.op = CKPT_XEN_OP_SAVE,
                                       .stream = CKPT_XEN_STREAM_PLAIN,
                                       .domid = 1,
                                       .back_fd = -1};

    if (ckpt_xen_probe(why, sizeof(why)) == 0) {
        cr_skip_test("a Xen hypervisor is present; real save/restore is "
                     "tested by the nested Xen tests");
    }
    cr_assert(strstr(why, "no Xen hypervisor"), "%s", why);
    fd = tutil_tmpfile();
    p.io_fd = fd;
    tctx_init(&t);
    tctx_start(&t, COLO_EXE, &p);
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, -COLO_EXEN, "rc %d (%s)", t.rc, t.res.error);
    cr_assert_eq(t.res.exit_status, 1);
    cr_assert(strstr(t.res.error, "no Xen hypervisor"), "%s", t.res.error);
    /* libxc's own complaint arrived as a forwarded log line. */
    cr_assert(strstr(t.logs, "privileged command interface"), "%s", t.logs);
    cr_assert_eq(lseek(fd, 0, SEEK_END), 0); /* nothing written */
    close(fd);
    tctx_dispose(&t);

    /* Restore too. */
    fd = tutil_tmpfile();
    tctx_init(&t);
    p.op = CKPT_XEN_OP_RESTORE;
    p.io_fd = fd;
    tctx_start(&t, COLO_EXE, &p);
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, -COLO_EXEN);
    cr_assert(strstr(t.res.error, "no Xen hypervisor"), "%s", t.res.error);
    close(fd);
    tctx_dispose(&t);
}

Test(real, usage_error_exit_2)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "%s __xen-helper bogus 2>/dev/null", COLO_EXE);
    cr_assert_eq(WEXITSTATUS(system(cmd)), 2);
}

/* Run `colo ARGS`, capture stderr; returns the exit status. */
static int run_colo(const char *args, char *err, size_t errsz)
{
    char cmd[1024];
    FILE *f;
    size_t n;
    int st;

    snprintf(cmd, sizeof(cmd), "%s %s 2>&1 >/dev/null", COLO_EXE, args);
    f = popen(cmd, "r");
    cr_assert(f);
    n = fread(err, 1, errsz - 1, f);
    err[n] = '\0';
    st = pclose(f);
    cr_assert(WIFEXITED(st), "colo did not exit normally: %s", err);
    return WEXITSTATUS(st);
}

Test(real, cli_save_restore_without_xen)
{
    char why[512], err[2048];
    const char *out = "/tmp/colo-xen-save-test.sav";

    if (ckpt_xen_probe(why, sizeof(why)) == 0) {
        cr_skip_test("a Xen hypervisor is present");
    }
    unlink(out);
    cr_assert_eq(
        run_colo("save 1 /tmp/colo-xen-save-test.sav", err, sizeof(err)), 1,
        "%s", err);
    cr_assert(strstr(err, "colo: save: no Xen hypervisor"), "%s", err);
    cr_assert_eq(access(out, F_OK), -1); /* FILE untouched */
    cr_assert_eq(run_colo("restore /proc/self/exe", err, sizeof(err)), 1);
    cr_assert(strstr(err, "colo: restore: no Xen hypervisor"), "%s", err);
    /* A name is a QEMU VM under colo (none runs here); usage errors stay
     * usage errors (exit 2). */
    cr_assert_eq(run_colo("save notadomid x", err, sizeof(err)), 1, "%s", err);
    cr_assert(strstr(err, "is the VM running"), "%s", err);
    cr_assert_eq(run_colo("save 1", err, sizeof(err)), 2, "%s", err);
    cr_assert_eq(run_colo("restore", err, sizeof(err)), 2);
    cr_assert_eq(run_colo("restore /nonexistent/file", err, sizeof(err)), 1);
    /* The other Xen forms: a domid selects Xen, which is not here. */
    cr_assert_eq(run_colo("migrate 3 127.0.0.1:1 --insecure", err, sizeof(err)),
                 1, "%s", err);
    cr_assert(strstr(err, "colo: migrate: no Xen hypervisor"), "%s", err);
    cr_assert_eq(run_colo("protect 3 127.0.0.1:1 --insecure", err, sizeof(err)),
                 1, "%s", err);
    cr_assert(strstr(err, "colo: protect: no Xen hypervisor"), "%s", err);
    cr_assert_eq(run_colo("failover 3", err, sizeof(err)), 1, "%s", err);
    cr_assert(strstr(err, "colo: failover: no Xen hypervisor"), "%s", err);
    cr_assert_eq(run_colo("protect 3 127.0.0.1:1 --insecure --mode colo", err,
                          sizeof(err)),
                 1, "%s", err);
    cr_assert(strstr(err, "colo: protect: no Xen hypervisor"), "%s", err);
    cr_assert_eq(run_colo("protect 3 127.0.0.1:1 --insecure --mode lockstep",
                          err, sizeof(err)),
                 2, "%s", err);
    cr_assert(strstr(err, "remus or colo"), "%s", err);
    cr_assert_eq(run_colo("migrate 3 127.0.0.1:1", err, sizeof(err)), 3, "%s",
                 err); /* no key and not --insecure */
    cr_assert(strstr(err, "--insecure"), "%s", err);
}
