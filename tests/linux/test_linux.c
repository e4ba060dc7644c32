/*
 * guest.linux: the Linux test guest (tests/linux/README.md) boots under colo
 * (`colo start`, the VM configuration from lguest.h: kernel, initramfs, a
 * virtio-blk disk, a virtio-net NIC on a stream socket) and its workload's
 * four outputs are seen from outside: the counter on the serial console,
 * in UDP datagrams at the recording peer, in the answer to a TCP request,
 * and in the disk image (written before it is sent).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fproc.h"
#include "lguest.h"
#include "netpeer.h"

static void init(void)
{
    fproc_init();
}

TestSuite(guest, .init = init);

/* Poll a file the guest's serial console goes to (no event to wait on)
 * until it contains s; -1 past the deadline. */
static long long wait_file(const char *path, const char *s, int timeout_ms,
                           struct fproc *colo)
{
    uint64_t start = fproc_now_ms(), dl = start + (uint64_t)timeout_ms;
    struct timespec step = {0, 20 * 1000 * 1000};
    char buf[65536];

    while (fproc_now_ms() < dl) {
        FILE *f = fopen(path, "r");
        size_t n = 0;

        if (f) {
            n = fread(buf, 1, sizeof(buf) - 1, f);
            fclose(f);
        }
        buf[n] = '\0';
        if (strstr(buf, s))
            return (long long)(fproc_now_ms() - start);
        if (colo && !fproc_alive(colo))
            return -1;
        if (colo)
            fproc_pump(colo, 20); /* keeps colo's output drained */
        else
            nanosleep(&step, NULL);
    }
    return -1;
}

Test(guest, linux_under_colo, .timeout = 200)
{
    char dir[] = "/tmp/colo-lx-XXXXXX", why[256], wire[128], cfg[128], key[128],
         sdir[128], serial[192], disk[128], reply[256], args[512], out[4096];
    struct lguest_cfg c = lguest_cfg_default();
    struct netpeer *np;
    struct fproc p;
    uint32_t v, udp[4096], on_disk, answered;
    size_t n;
    long long boot_ms;

    if (!lguest_available(why, sizeof(why)))
        cr_skip_test("%s", why);
    cr_assert_not_null(mkdtemp(dir));
    snprintf(wire, sizeof(wire), "%s/wire.sock", dir);
    snprintf(cfg, sizeof(cfg), "%s/vm.json", dir);
    snprintf(key, sizeof(key), "%s/key", dir);
    snprintf(sdir, sizeof(sdir), "%s/p", dir);
    snprintf(serial, sizeof(serial), "%s/lx/serial.log", sdir);
    snprintf(disk, sizeof(disk), "%s/disk.img", dir);
    cr_assert_eq(netpeer_start(wire, &np), 0);
    c.name = "lx";
    c.cmdline = "cw.interval=100";
    c.disk_path = disk;
    c.wire_path = wire;
    cr_assert_eq(lguest_write_config(cfg, &c), 0);
    {
        FILE *f = fopen(key, "w");

        cr_assert_not_null(f);
        fputs("a shared test key of enough length\n", f);
        fclose(f);
        cr_assert_eq(chmod(key, 0600), 0); /* colo refuses a shared key */
    }

    {
        char *argv[] = {(char *)fproc_colo_exe(),
                        "start",
                        cfg,
                        "--state-dir",
                        sdir,
                        "--key-file",
                        key,
                        NULL};

        cr_assert_eq(fproc_spawn(&p, argv, NULL), 0);
    }
    cr_assert_geq(fproc_wait_out(&p, "running (QEMU pid", 0, 30000), 0,
                  "colo start did not start the Linux guest:\n%s", p.buf);
    boot_ms = wait_file(serial, "colo-workload ready", 90000, &p);
    cr_assert_geq(boot_ms, 0,
                  "the Linux guest's workload did not come up (accel %s)\n"
                  "colo:\n%s",
                  lguest_accel(), p.buf);
    fprintf(stderr, "guest.linux: workload up %lld ms after QEMU ran (%s)\n",
            boot_ms, lguest_accel());

    /* Serial: the counter is printed. */
    cr_assert_geq(wait_file(serial, "count 3", 30000, &p), 0,
                  "serial: no \"count N\" lines from the workload");
    /* UDP: the peer receives increasing values. */
    cr_assert_eq(netpeer_wait_udp_above(np, 5, 20000, &v), 0,
                 "udp: the peer received no \"count N\" datagram above 5 "
                 "(frames seen: %zu, connections: %u)",
                 netpeer_frames(np), netpeer_connections(np));
    n = netpeer_udp_values(np, udp, 4096);
    for (size_t i = 1; i < n && i < 4096; i++)
        cr_assert_gt(udp[i], udp[i - 1],
                     "udp: values must increase (the guest sends each once, "
                     "in order): #%zu = %u after %u",
                     i, udp[i], udp[i - 1]);
    /* TCP: the answer is the current counter, at least what was sent. */
    cr_assert_eq(netpeer_tcp_request(np, "get\n", reply, sizeof(reply), 20000),
                 0, "tcp: no answer from the guest's TCP port (got \"%s\")",
                 reply);
    cr_assert_eq(sscanf(reply, "count %u", &answered), 1, "tcp: reply \"%s\"",
                 reply);
    cr_assert_geq(answered, v,
                  "tcp: the answer (%u) is below a value already sent (%u)",
                  answered, v);

    /* Disk: after QEMU is gone, the image holds every value sent (each is
     * written, synchronously, before it is sent). */
    snprintf(args, sizeof(args), "stop lx --state-dir %s", sdir);
    cr_assert_eq(fproc_colo(args, out, sizeof(out), 30000), 0, "%s", out);
    cr_assert_eq(fproc_wait_exit(&p, 20000), 0, "%s", p.buf);
    n = netpeer_udp_values(np, udp, 4096);
    cr_assert_gt(n, 0);
    cr_assert_eq(lguest_disk_max(disk, &on_disk), 0);
    cr_assert_geq(on_disk, udp[(n < 4096 ? n : 4096) - 1],
                  "disk: the last value sent (%u) is not on the disk (max %u)",
                  udp[(n < 4096 ? n : 4096) - 1], on_disk);
    cr_expect_geq(lguest_serial_max(serial), 3);
    fprintf(stderr,
            "guest.linux: %zu datagrams, tcp answer %u, disk max %u, serial "
            "max %u\n",
            n, answered, on_disk, lguest_serial_max(serial));
    fproc_free(&p);
    netpeer_free(np);
    snprintf(args, sizeof(args), "rm -rf '%s'", dir);
    cr_expect_eq(system(args), 0);
}
