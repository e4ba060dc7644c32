/*
 * faults.migrate: a migrate that fails at any step leaves the VM running
 * on exactly one host, with a disk image both hosts share (issue 25).
 *
 * Real colo processes (start, receive) and real QEMU running the test
 * guest over 127.0.0.1; the guest has a qcow2 image (made with qemu-img in
 * the test's directory) that both hosts' configurations name, the way
 * shared storage looks. Each host's QEMU also gets a second QMP monitor
 * (qemu.extra_args, a socket in that host's own working directory) that
 * only this test talks to.
 *
 * Rows:
 *   ok          protect --mode colo is refused (the secondary's copy would
 *               share the image), then 4 migrates, A->B->A->B->A: each time the
 * destination runs the guest (counter moving in its RAM file), writes the image
 * (QMP human-monitor-command 'qemu-io disk0 "write"'), and the source's colo
 * ends then one row per failure (COLO_FAULT, common/fault.h): the migrate
 *   fails, the target's colo ends, and the SOURCE runs the guest (counter
 *   moving, `colo status` says "guest": "running") and can write the
 *   image; no QEMU is left behind; for a target-side failure a second
 *   migrate to a fresh target then succeeds (the source let go of nothing).
 *
 * Oracles are the guest's RAM (counter), QEMU's own answer on the test's
 * monitor (qemu-io writes, query-status) and process liveness; never
 * colo's log lines. Prints a table and appends totals to
 * $COLO_FAULTS_SUMMARY.
 */
#include "fproc.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct side {
    char cwd[160];  /* the host's working directory: QEMU's monitor */
    char sdir[160]; /* its state dir */
    char ram[200];
    char mon[200];
    struct fproc p;
};

struct row {
    const char *name;
    const char *src_env; /* COLO_FAULT on the source's colo */
    const char *tgt_env; /* on the target's colo */
    bool tgt_exit;       /* COLO_FAULT_ACTION=exit on the target */
};

static const struct row rows[] = {
    {"link cut after final devstate", "11", NULL, false},
    {"target load fails", NULL, "8", false},
    {"target fails after load", NULL, "12", false},
    {"target dies after load", NULL, "12", true},
    {"target refuses cont", NULL, "13", false},
    {"target dies holding GO", NULL, "13", true},
};

static int n_failed, n_ok;
static char g_why[512];

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    va_list ap;
    size_t l = strlen(g_why);

    if (l && l < sizeof(g_why) - 2) {
        strcat(g_why, "; ");
        l += 2;
    }
    if (l >= sizeof(g_why) - 1)
        return;
    va_start(ap, fmt);
    vsnprintf(g_why + l, sizeof(g_why) - l, fmt, ap);
    va_end(ap);
}

/* ---- a minimal QMP client on the test's own monitor ------------------- */

/* Read one line (QMP ends each message with \r\n) within the deadline. */
static int read_line(int fd, char *buf, size_t sz, uint64_t deadline)
{
    size_t n = 0;

    while (n + 1 < sz) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        uint64_t now = fproc_now_ms();
        ssize_t r;

        if (now >= deadline)
            return -ETIMEDOUT;
        if (poll(&pf, 1, (int)(deadline - now)) <= 0)
            continue;
        r = read(fd, buf + n, 1);
        if (r <= 0)
            return r < 0 ? -errno : -EPIPE;
        if (buf[n] == '\n') {
            buf[n] = '\0';
            return 0;
        }
        n++;
    }
    buf[n] = '\0';
    return 0;
}

/* The reply (not an event) to the last command, into out. */
static int qmp_reply(int fd, char *out, size_t outsz, uint64_t deadline)
{
    for (;;) {
        int rc = read_line(fd, out, outsz, deadline);

        if (rc < 0)
            return rc;
        if (strstr(out, "\"return\"") || strstr(out, "\"error\""))
            return 0;
    }
}

/* Run one QMP command on the monitor socket; out gets the reply line. */
static int mon_cmd(const char *path, const char *json, char *out, size_t outsz)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    uint64_t deadline = fproc_now_ms() + 10000;
    const char *caps = "{\"execute\":\"qmp_capabilities\"}\n";
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = -1;

    out[0] = '\0';
    if (fd < 0)
        return -1;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto out;
    if (read_line(fd, out, outsz, deadline) < 0 || !strstr(out, "QMP"))
        goto out;
    if (write(fd, caps, strlen(caps)) != (ssize_t)strlen(caps) ||
        qmp_reply(fd, out, outsz, deadline) < 0)
        goto out;
    if (write(fd, json, strlen(json)) != (ssize_t)strlen(json) ||
        write(fd, "\n", 1) != 1 || qmp_reply(fd, out, outsz, deadline) < 0)
        goto out;
    rc = 0;
out:
    close(fd);
    return rc;
}

static char disk[160];

/* The image is writable from this host's QEMU: qemu-io (HMP, through the
 * test's monitor) writes a pattern not used before and flushes; then
 * qemu-io run here (-U: no lock) reads that pattern back from the image.
 * HMP's qemu-io prints to QEMU's stdout, not the reply: the read is the
 * proof. */
static bool image_writable(struct side *h, char *out, size_t outsz)
{
    static unsigned pattern = 0x10;
    char cmd[512];
    FILE *f;
    size_t n;

    pattern = pattern >= 0xfe ? 0x10 : pattern + 1;
    snprintf(cmd, sizeof(cmd),
             "{\"execute\":\"human-monitor-command\",\"arguments\":"
             "{\"command-line\":\"qemu-io disk0 \\\"write -P 0x%x 0 4k\\\"\"}}",
             pattern);
    if (mon_cmd(h->mon, cmd, out, outsz) < 0)
        return false;
    if (mon_cmd(h->mon,
                "{\"execute\":\"human-monitor-command\",\"arguments\":"
                "{\"command-line\":\"qemu-io disk0 flush\"}}",
                out, outsz) < 0)
        return false;
    snprintf(cmd, sizeof(cmd),
             "qemu-io -r -U -f qcow2 -c 'read -P 0x%x 0 4k' %s 2>&1", pattern,
             disk);
    f = popen(cmd, "r");
    if (!f)
        return false;
    n = fread(out, 1, outsz - 1, f);
    out[n] = '\0';
    pclose(f);
    return strstr(out, "read 4096/4096") && !strstr(out, "failed");
}

static bool guest_running_qmp(struct side *h)
{
    char out[1024];

    return mon_cmd(h->mon, "{\"execute\":\"query-status\"}", out,
                   sizeof(out)) == 0 &&
           strstr(out, "\"running\": true") != NULL;
}

/* ---- hosts ------------------------------------------------------------ */

static struct fenv e;

static int spawn_in(struct side *h, char *const argv[], char *const env[])
{
    char here[256];
    int rc;

    if (!getcwd(here, sizeof(here)) || chdir(h->cwd) < 0)
        return -1;
    rc = fproc_spawn(&h->p, argv, env);
    if (chdir(here) < 0)
        return -1;
    return rc;
}

static bool start_vm(struct side *h, char *const env[])
{
    char *argv[] = {(char *)fproc_colo_exe(),
                    "start",
                    e.cfg,
                    "--state-dir",
                    h->sdir,
                    "--key-file",
                    e.key,
                    NULL};

    if (spawn_in(h, argv, env) < 0 ||
        fproc_wait_out(&h->p, "running (QEMU pid", 0, 30000) < 0) {
        fail("the VM did not start");
        return false;
    }
    /* KVM on a loaded CI host takes seconds to run the first guest
     * instruction. */
    if (!fproc_counter_above(h->ram, 0, 30000)) {
        fail("the guest does not run after start");
        return false;
    }
    return true;
}

static int start_receive(struct side *h, char *const env[])
{
    char *argv[] = {(char *)fproc_colo_exe(),
                    "receive",
                    "--listen",
                    "127.0.0.1:0",
                    "--state-dir",
                    h->sdir,
                    "--key-file",
                    e.key,
                    NULL};
    long off;

    if (spawn_in(h, argv, env) < 0)
        return -1;
    off =
        fproc_wait_out(&h->p, "waiting for a primary on 127.0.0.1:", 0, 10000);
    return off < 0 ? -1 : atoi(h->p.buf + off);
}

static int migrate(struct side *from, int port, char *out, size_t outsz)
{
    char args[512];

    snprintf(args, sizeof(args), "migrate jobvm 127.0.0.1:%d --state-dir %s",
             port, from->sdir);
    return fproc_colo(args, out, outsz, 60000);
}

/* The guest runs on h: counter moving, QEMU says running, image
 * writable from there. */
static void check_runs_on(struct side *h, const char *what)
{
    char out[2048];
    uint32_t c = fproc_counter(h->ram);

    if (!fproc_counter_above(h->ram, c, 10000))
        fail("%s: the guest's counter does not move (%u)", what, c);
    if (!guest_running_qmp(h))
        fail("%s: QEMU does not say running", what);
    if (!image_writable(h, out, sizeof(out)))
        fail("%s: image not writable: %.200s", what, out);
}

static bool status_says_running(struct side *h)
{
    char args[512], out[8192];

    snprintf(args, sizeof(args), "status jobvm --json --state-dir %s", h->sdir);
    return fproc_colo(args, out, sizeof(out), 10000) == 0 &&
           strstr(out, "\"guest\":\"running\"") != NULL;
}

static void side_init(struct side *h, const char *sub, const char *sdir)
{
    memset(h, 0, sizeof(*h));
    h->p.pid = -1;
    h->p.out = -1;
    snprintf(h->cwd, sizeof(h->cwd), "%s/%s", e.dir, sub);
    mkdir(h->cwd, 0700);
    snprintf(h->sdir, sizeof(h->sdir), "%s", sdir);
    snprintf(h->ram, sizeof(h->ram), "%s/jobvm/ram", sdir);
    snprintf(h->mon, sizeof(h->mon), "%s/mon.sock", h->cwd);
}

/* Every QEMU this side's colo ever had is gone once it ended. */
static void end_side(struct side *h)
{
    if (h->p.pid > 0) {
        kill(h->p.pid, SIGTERM);
        if (fproc_wait_exit(&h->p, 10000) < 0) {
            kill(h->p.pid, SIGKILL);
            fproc_wait_exit(&h->p, 5000);
        }
    }
    fproc_free(&h->p);
    h->p.pid = -1;
    h->p.out = -1;
}

static bool setup(void)
{
    char cmd[512], extra[1024];

    if (access("/usr/bin/qemu-system-x86_64", X_OK) != 0 ||
        access("/usr/bin/qemu-img", X_OK) != 0) {
        printf("SKIP: qemu-system-x86_64 or qemu-img not installed\n");
        return false;
    }
    /* The monitor's socket is relative: each QEMU makes it in its colo's
     * working directory (one per host). TCG: the test guest starts at
     * once, where KVM on a loaded nested CI host took > 30 s to run its
     * first instruction; the handover does not depend on the
     * accelerator. */
    snprintf(extra, sizeof(extra),
             "\"disks\": [{\"path\": \"@DISK@\", \"format\": \"qcow2\"}],\n"
             " \"qemu\": {\"accel\": \"tcg\", \"extra_args\": [\"-chardev\", "
             "\"socket,id=tmon,path=mon.sock,server=on,wait=off\", "
             "\"-mon\", \"chardev=tmon,mode=control\"]}");
    if (fenv_setup_ex(&e, "dirty=8 rate=64", extra) < 0)
        return false;
    snprintf(disk, sizeof(disk), "%s/disk.qcow2", e.dir);
    snprintf(cmd, sizeof(cmd),
             "qemu-img create -q -f qcow2 %s 16M && sed -i 's|@DISK@|%s|' %s",
             disk, disk, e.cfg);
    return system(cmd) == 0;
}

static void report(const char *name, bool ok)
{
    printf("  %-34s %s%s%s\n", name, ok ? "ok" : "FAILED", ok ? "" : ": ",
           ok ? "" : g_why);
    fflush(stdout);
    if (ok)
        n_ok++;
    else
        n_failed++;
    g_why[0] = '\0';
}

/* Four migrates back and forth. */
static void row_ok(void)
{
    struct side s[2];
    char out[8192];
    int cur = 0;

    side_init(&s[0], "a", e.pdir);
    side_init(&s[1], "b", e.sdir);
    if (!start_vm(&s[0], NULL))
        goto out;
    {
        /* COLO mode would run a copy on the same image: refused before
         * anything starts (no peer needed: port 9 is never reached). */
        char args[512];
        int rc;

        snprintf(args, sizeof(args),
                 "protect jobvm 127.0.0.1:9 --mode colo --state-dir %s",
                 s[0].sdir);
        rc = fproc_colo(args, out, sizeof(out), 10000);
        if (rc != 3 || !strstr(out, "disk 'disk0'"))
            fail("protect --mode colo with a shared disk: exit %d: %.200s", rc,
                 out);
        if (!status_says_running(&s[0]))
            fail("after the refused protect, status does not say running");
    }
    for (int i = 0; i < 4 && !g_why[0]; i++) {
        struct side *src = &s[cur], *dst = &s[1 - cur];
        int port = start_receive(dst, NULL), rc;

        if (port <= 0) {
            fail("round %d: receive did not listen", i + 1);
            break;
        }
        rc = migrate(src, port, out, sizeof(out));
        if (rc != 0) {
            fail("round %d: migrate failed (%d): %.300s", i + 1, rc, out);
            break;
        }
        if (fproc_wait_out(&dst->p, "now runs here", 0, 10000) < 0)
            fail("round %d: the target did not take the guest", i + 1);
        if (fproc_wait_exit(&src->p, 10000) != 0)
            fail("round %d: the source's colo did not end", i + 1);
        fproc_free(&src->p);
        src->p.pid = -1;
        src->p.out = -1;
        check_runs_on(dst, "destination");
        cur = 1 - cur;
    }
out:
    end_side(&s[0]);
    end_side(&s[1]);
    report("ok: 4 migrates A<->B", !g_why[0]);
}

static void row_fault(const struct row *r)
{
    struct side a, b;
    char fenv[32], out[8192], line[64];
    char *src_env[] = {fenv, NULL};
    char *tgt_env[] = {fenv, r->tgt_exit ? "COLO_FAULT_ACTION=exit" : NULL,
                       NULL};
    pid_t pids[FPROC_MAX_PIDS];
    int npids = 0, port, rc;

    snprintf(fenv, sizeof(fenv), "COLO_FAULT=%s",
             r->src_env ? r->src_env : r->tgt_env);
    side_init(&a, "a", e.pdir);
    side_init(&b, "b", e.sdir);
    if (!start_vm(&a, r->src_env ? src_env : NULL))
        goto out;
    port = start_receive(&b, r->tgt_env ? tgt_env : NULL);
    if (port <= 0) {
        fail("receive did not listen");
        goto out;
    }
    rc = migrate(&a, port, out, sizeof(out));
    npids = fproc_add_descendants(b.p.pid, pids, npids, FPROC_MAX_PIDS);
    if (rc == 0)
        fail("the migrate succeeded (fault not reached?)");
    /* The target gives the guest up: its colo ends, its QEMU with it. */
    if (fproc_wait_exit(&b.p, 15000) < 0)
        fail("the target's colo did not end");
    if (strstr(b.p.buf, "now runs here"))
        fail("the target ran the guest");
    /* The row is about its point: it must have been reached. */
    snprintf(line, sizeof(line), "fault point %s fired",
             r->src_env ? r->src_env : r->tgt_env);
    fproc_pump(&a.p, 100);
    if (!strstr(r->src_env ? a.p.buf : b.p.buf, line))
        fail("fault point %s not reached",
             r->src_env ? r->src_env : r->tgt_env);
    for (int i = 0; i < npids; i++)
        if (fproc_pid_running(pids[i]))
            fail("the target's QEMU %d is left", (int)pids[i]);
    if (!fproc_alive(&a.p)) {
        fail("the source's colo ended (%d)", a.p.status);
        goto out;
    }
    check_runs_on(&a, "source");
    if (!status_says_running(&a))
        fail("colo status does not say the guest runs");
    if (r->tgt_env && !g_why[0]) {
        /* Nothing was left half-handed-over: a second try works. */
        fproc_free(&b.p);
        port = start_receive(&b, NULL);
        rc = port > 0 ? migrate(&a, port, out, sizeof(out)) : -1;
        if (rc != 0)
            fail("the retry failed (%d): %.300s", rc, out);
        else if (fproc_wait_out(&b.p, "now runs here", 0, 10000) < 0)
            fail("retry: the target did not take the guest");
        else
            check_runs_on(&b, "retry's destination");
    }
out:
    if (getenv("COLO_TEST_VERBOSE"))
        printf("--- source:\n%s\n--- target:\n%s\n", a.p.buf ? a.p.buf : "",
               b.p.buf ? b.p.buf : "");
    end_side(&a);
    end_side(&b);
    snprintf(line, sizeof(line), "%s (COLO_FAULT=%s%s)", r->name,
             r->src_env ? r->src_env : r->tgt_env, r->tgt_exit ? ",exit" : "");
    report(line, !g_why[0]);
}

int main(void)
{
    char sum[128];

    fproc_init();
    if (!setup()) {
        if (!e.dir[0])
            return 0;
        fenv_teardown(&e);
        printf("SKIP: setup failed (qemu-img)\n");
        return 0;
    }
    printf("faults.migrate: shared qcow2 image %s\n", disk);
    row_ok();
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        row_fault(&rows[i]);
    snprintf(sum, sizeof(sum), "faults.migrate: %d rows ok, %d failed", n_ok,
             n_failed);
    printf("%s\n", sum);
    fproc_summary("faults.migrate:", sum);
    fenv_teardown(&e);
    return n_failed ? 1 : 0;
}
