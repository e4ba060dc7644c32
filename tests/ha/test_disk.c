/*
 * ha.disk_remus: disk replication (checkpoint/disk.h) judged from outside.
 * The Linux test guest (tests/linux) writes each value of its counter to
 * its disk (O_DIRECT | O_DSYNC, a ring of 512-byte sectors: value N in
 * sector 1 + N % 1024) before it sends it by UDP to a peer the test owns.
 * Each host has its own raw image ("replicate": true on the primary,
 * `colo standby --disk vda=PATH` on the secondary); real colo processes
 * protect it in Remus mode; the primary's colo and QEMU are killed -9 at
 * varied moments after a value reached the peer.
 *
 * Invariants (named in the failure messages):
 *   DISK-COMMITTED  after the takeover, the secondary's image holds every
 *                   value the guest wrote before the checkpoint it resumed
 *                   from (the 200 values below the first one the resumed
 *                   guest sent) and every value it wrote since: its disk
 *                   matches the counter its memory resumed with.
 *   RESUMED         the resumed guest goes on counting and writing: the
 *                   values it sends are consecutive.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fproc.h"
#include "lguest.h"
#include "netpeer.h"

#define MAXV      200000
#define RING      1024
#define DISK_SIZE (4u << 20)

struct ha {
    char dir[64], wire[128], cfg[128], key[128], pdir[128], sdir[128];
    char pimg[128], simg[128], diskarg[160], fence[256], extra[512];
    struct netpeer *np;
    struct fproc p, s;
    bool s_up;
    int port;
};

static struct netpeer_udp udp[MAXV];

static void init(void)
{
    fproc_init();
}

TestSuite(ha, .init = init);

static int colo_in(const char *dir, const char *args, char *out, size_t sz)
{
    char a[600];

    snprintf(a, sizeof(a), "%s --state-dir %s", args, dir);
    return fproc_colo(a, out, sz, 60000);
}

static long long status_int(struct ha *h, const char *key)
{
    char out[8192];

    if (colo_in(h->pdir, "status lx --json", out, sizeof(out)) != 0)
        return -1;
    return fproc_json_int(out, key, -1);
}

static void make_image(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    cr_assert_geq(fd, 0, "%s", path);
    cr_assert_eq(ftruncate(fd, DISK_SIZE), 0);
    close(fd);
}

/* True when the image's ring sector for v holds "count v". */
static bool disk_has(const char *img, uint32_t v)
{
    char sec[513], want[32];
    int fd = open(img, O_RDONLY | O_CLOEXEC);
    bool ok;

    if (fd < 0)
        return false;
    ok = pread(fd, sec, 512, (off_t)(1 + v % RING) * 512) == 512;
    close(fd);
    sec[512] = '\0';
    snprintf(want, sizeof(want), "count %u\n", v);
    return ok && strcmp(sec, want) == 0;
}

static void ha_setup(struct ha *h)
{
    struct lguest_cfg c = lguest_cfg_default();
    char why[256];
    FILE *f;

    memset(h, 0, sizeof(*h));
    h->p.pid = h->s.pid = -1;
    if (!lguest_available(why, sizeof(why)))
        cr_skip_test("%s", why);
    strcpy(h->dir, "/tmp/colo-hadisk-XXXXXX");
    cr_assert_not_null(mkdtemp(h->dir));
    snprintf(h->wire, sizeof(h->wire), "%s/wire.sock", h->dir);
    snprintf(h->cfg, sizeof(h->cfg), "%s/vm.json", h->dir);
    snprintf(h->key, sizeof(h->key), "%s/key", h->dir);
    snprintf(h->pdir, sizeof(h->pdir), "%s/p", h->dir);
    snprintf(h->sdir, sizeof(h->sdir), "%s/s", h->dir);
    snprintf(h->pimg, sizeof(h->pimg), "%s/p.raw", h->dir);
    snprintf(h->simg, sizeof(h->simg), "%s/s.raw", h->dir);
    snprintf(h->diskarg, sizeof(h->diskarg), "vda=%s", h->simg);
    make_image(h->pimg);
    cr_assert_eq(netpeer_start(h->wire, &h->np), 0);
    snprintf(h->extra, sizeof(h->extra),
             "\"disks\": [{\"path\": \"%s\", \"format\": \"raw\", \"id\": "
             "\"vda\", \"replicate\": true}]",
             h->pimg);
    c.name = "lx";
    c.cmdline = "cw.interval=20 cw.out=udp,disk";
    c.wire_path = h->wire;
    c.extra_json = h->extra;
    cr_assert_eq(lguest_write_config(h->cfg, &c), 0);
    f = fopen(h->key, "w");
    cr_assert_not_null(f);
    fputs("a shared test key of enough length\n", f);
    fclose(f);
    cr_assert_eq(chmod(h->key, 0600), 0); /* colo refuses a shared key */
    {
        char *argv[] = {(char *)fproc_colo_exe(),
                        "start",
                        h->cfg,
                        "--state-dir",
                        h->pdir,
                        "--key-file",
                        h->key,
                        NULL};

        cr_assert_eq(fproc_spawn(&h->p, argv, NULL), 0);
    }
    cr_assert_geq(fproc_wait_out(&h->p, "running (QEMU pid", 0, 30000), 0,
                  "colo start:\n%s", h->p.buf);
    cr_assert_eq(netpeer_wait_udp_above(h->np, 0, 120000, NULL), 0,
                 "the guest's output never reached the peer");
}

static void ha_secondary(struct ha *h)
{
    char *argv[] = {(char *)fproc_colo_exe(),
                    "standby",
                    "--listen",
                    "127.0.0.1:0",
                    "--state-dir",
                    h->sdir,
                    "--key-file",
                    h->key,
                    "--fence-cmd",
                    h->fence,
                    "--disk",
                    h->diskarg,
                    NULL};
    long off;

    /* Garbage where the full sync must put the primary's image. */
    make_image(h->simg);
    {
        int fd = open(h->simg, O_RDWR | O_CLOEXEC);
        char junk[4096];

        cr_assert_geq(fd, 0);
        memset(junk, 'J', sizeof(junk));
        for (off_t o = 0; o < 65536; o += 4096)
            cr_assert_eq(pwrite(fd, junk, sizeof(junk), o), 4096);
        close(fd);
    }
    snprintf(h->fence, sizeof(h->fence), "%s/scripts/fence-pid %d",
             COLO_SOURCE_DIR, (int)h->p.pid);
    cr_assert_eq(fproc_spawn(&h->s, argv, NULL), 0);
    h->s_up = true;
    off =
        fproc_wait_out(&h->s, "waiting for a primary on 127.0.0.1:", 0, 10000);
    cr_assert_geq(off, 0, "secondary did not listen:\n%s", h->s.buf);
    h->port = atoi(h->s.buf + off);
}

static void ha_protect(struct ha *h, unsigned interval_ms, int min_ckpts)
{
    char args[256], out[8192];
    uint64_t dl;
    int rc;

    snprintf(args, sizeof(args), "protect lx 127.0.0.1:%d --interval %u",
             h->port, interval_ms);
    rc = colo_in(h->pdir, args, out, sizeof(out));
    cr_assert_eq(rc, 0, "protect failed (%d): %s\nprimary:\n%s\nsecondary:\n%s",
                 rc, out, h->p.buf, h->s.buf);
    dl = fproc_now_ms() + 90000;
    while (status_int(h, "checkpoints") < min_ckpts && fproc_now_ms() < dl)
        fproc_pump(&h->p, 50);
    cr_assert_geq(status_int(h, "checkpoints"), min_ckpts,
                  "fewer than %d checkpoints in 90 s\n%s\n%s", min_ckpts,
                  h->p.buf, h->s.buf);
}

static void ha_teardown(struct ha *h)
{
    char cmd[128];

    fproc_free(&h->p);
    if (h->s_up)
        fproc_free(&h->s);
    netpeer_free(h->np);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", h->dir);
}

static void failover_run(int delay_ms)
{
    struct ha h;
    char out[8192];
    long long qemu;
    uint32_t min_b = UINT32_MAX, max_b = 0, max_a = 0, v;
    size_t n, n_b = 0;
    uint64_t dl;

    ha_setup(&h);
    ha_secondary(&h);
    ha_protect(&h, 100, 8);
    cr_assert_eq(colo_in(h.pdir, "status lx --json", out, sizeof(out)), 0);
    qemu = fproc_json_int(out, "qemu_pid", -1);
    cr_assert_gt(qemu, 0, "%s", out);

    n = netpeer_udp_get(h.np, udp, MAXV);
    cr_assert(n > 0);
    cr_assert(netpeer_wait_udp_above(h.np, udp[n - 1].v, 10000, &v) == 0,
              "no output while protected");
    if (delay_ms)
        fproc_pump(&h.p, delay_ms);
    kill((pid_t)qemu, SIGKILL);
    kill(h.p.pid, SIGKILL);
    waitpid(h.p.pid, NULL, 0);
    h.p.pid = -1;

    cr_assert_geq(fproc_wait_out(&h.s, "now runs here", 0, 60000), 0,
                  "no takeover:\n%s", h.s.buf);
    dl = fproc_now_ms() + 60000;
    while (fproc_now_ms() < dl) {
        n = netpeer_udp_get(h.np, udp, MAXV);
        cr_assert_lt(n, MAXV);
        n_b = 0;
        for (size_t i = 0; i < n; i++)
            if (udp[i].conn >= 2)
                n_b++;
        if (n_b >= 30)
            break;
        netpeer_wait_udp_above(h.np, UINT32_MAX - 1, 100, NULL);
    }
    cr_assert_geq(n_b, 30, "RESUMED: the resumed guest sent %zu values\n%s",
                  n_b, h.s.buf);
    for (size_t i = 0; i < n; i++) {
        if (udp[i].conn == 1 && udp[i].v > max_a)
            max_a = udp[i].v;
        if (udp[i].conn >= 2) {
            if (udp[i].v < min_b)
                min_b = udp[i].v;
            if (udp[i].v > max_b)
                max_b = udp[i].v;
        }
    }
    cr_assert_eq(max_b - min_b + 1, n_b,
                 "RESUMED: the resumed guest's values are not consecutive");
    /* Everything the guest wrote before its checkpoint, and since. */
    for (uint32_t x = min_b > 200 ? min_b - 200 : 1; x <= max_b; x++)
        cr_assert(disk_has(h.simg, x),
                  "DISK-COMMITTED: the secondary's image lacks count %u (the "
                  "resumed guest went on from %u, sent up to %u; the primary "
                  "had sent up to %u; kill %d ms after a value)",
                  x, min_b, max_b, max_a, delay_ms);
    fprintf(stderr,
            "ha.disk_remus: kill %d ms after a value: the primary had sent "
            "%u, the guest resumed at %u; the secondary's disk holds %u..%u\n",
            delay_ms, max_a, min_b, min_b > 200 ? min_b - 200 : 1, max_b);
    ha_teardown(&h);
}

Test(ha, disk_remus_failover, .timeout = 500)
{
    static const int delays[] = {0, 37, 83};

    for (size_t i = 0; i < sizeof(delays) / sizeof(delays[0]); i++)
        failover_run(delays[i]);
}
