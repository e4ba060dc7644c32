/*
 * bench-disk: what disk replication (checkpoint/disk.h) costs a guest's
 * writes, measured in one run on one QEMU (the test guest, its disk a
 * one-child quorum on a raw image, as `colo start` makes it):
 *
 *   baseline   unprotected: N writes of 4 KiB (latency) and W writes of
 *              8 MiB (throughput), each a QEMU `qemu-io` write through the
 *              quorum drive (HMP over a QMP monitor of the bench's own,
 *              timed from request to reply); measured before protection
 *              (after a warm-up pass that allocates the image's blocks)
 *              and again after it ended, the better of the two counting
 *              (this shared machine's load varies);
 *   protected  the same while colo protects the VM in Remus mode (100 ms
 *              interval) with a secondary engine on the same host over
 *              127.0.0.1: every write also goes through colo's NBD tee and
 *              travels with its checkpoint;
 *   sync       the full sync of a 256 MiB image (half of it data) at
 *              pairing, against the rate of a plain TCP stream over the
 *              same loopback (a thread reading, 512 MiB).
 *
 * Prints one JSON object, "ratio" last: protected 4 KiB write latency p50 /
 * baseline p50 (>= 1; lower is better).
 */
#include "checkpoint/disk.h"
#include "checkpoint/primary.h"
#include "checkpoint/secondary.h"

#include "common/error.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "qmp/qmp.h"
#include "tguest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define IMG_SIZE (256ull << 20)
#define N_SMALL  300
#define N_BIG    8
#define RAM_MB   32

static struct event_base *evb;
static struct qmp_client *q;
static bool q_up, p_acked, s_launched, timed_out;
static int acks, reply_rc;
static bool replied;
static struct tguest *gs;
static const char *sextra[3];
static struct ckpt_primary *prim;

static void die(const char *what) __attribute__((noreturn));

static void die(const char *what)
{
    fprintf(stderr, "bench-disk: %s\n", what);
    exit(1);
}

static void on_deadline(evutil_socket_t fd, short w, void *arg)
{
    timed_out = true;
}

static bool run_until(const bool *flag, unsigned ms)
{
    struct event *t = evtimer_new(evb, on_deadline, NULL);
    struct timeval tv = colo_ms_to_tv(ms);

    timed_out = false;
    evtimer_add(t, &tv);
    while (!*flag && !timed_out)
        event_base_loop(evb, EVLOOP_ONCE);
    event_free(t);
    return *flag;
}

static void on_reply(struct qmp_client *c, int rc, json_t *ret,
                     const char *desc, void *arg)
{
    reply_rc = rc;
    if (rc == 0 && json_is_string(ret) && strlen(json_string_value(ret)))
        reply_rc = -EIO;
    replied = true;
}

/* One qemu-io command, timed (µs); the loop serves the tee meanwhile. */
static uint64_t qemu_io(const char *cmd)
{
    char line[160];
    json_t *a;
    uint64_t t0 = colo_now_ns();

    snprintf(line, sizeof(line), "qemu-io d0 \"%s\"", cmd);
    a = json_pack("{s:s}", "command-line", line);
    replied = false;
    if (qmp_send(q, "human-monitor-command", a, -1, 60000, on_reply, NULL,
                 NULL) < 0)
        die("qmp_send");
    json_decref(a);
    if (!run_until(&replied, 60000) || reply_rc < 0)
        die("qemu-io failed");
    return (colo_now_ns() - t0) / 1000;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

struct result {
    uint64_t p50_us, p99_us;
    double mib_s;
};

static void measure(struct result *r)
{
    static uint64_t lat[N_SMALL];
    uint64_t big_us = 0;
    char cmd[96];

    for (int i = 0; i < N_SMALL; i++) {
        snprintf(cmd, sizeof(cmd), "write -P 0x%02x %llu 4k", i & 0xff,
                 (unsigned long long)((i * 7919ull) % (IMG_SIZE / 4096)) *
                     4096);
        lat[i] = qemu_io(cmd);
    }
    qsort(lat, N_SMALL, sizeof(lat[0]), cmp_u64);
    r->p50_us = lat[N_SMALL / 2];
    r->p99_us = lat[N_SMALL * 99 / 100];
    for (int i = 0; i < N_BIG; i++) {
        snprintf(cmd, sizeof(cmd), "write -P 0x%02x %llu 8M", 0x30 + i,
                 (unsigned long long)i * (8ull << 20));
        big_us += qemu_io(cmd);
    }
    r->mib_s = (double)N_BIG * 8 / ((double)big_us / 1e6);
}

/* ---- the link's rate: a plain TCP stream over loopback ----------------- */

static void *reader(void *arg)
{
    int fd = *(int *)arg;
    static char buf[1 << 20];

    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    return NULL;
}

static void tcp_pair(int *a, int *b)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) ||
        listen(ls, 1) || getsockname(ls, (struct sockaddr *)&sa, &sl))
        die("listen");
    *a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*a < 0 || connect(*a, (struct sockaddr *)&sa, sizeof(sa)))
        die("connect");
    *b = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (*b < 0)
        die("accept");
    close(ls);
}

static double link_rate(void)
{
    static char buf[1 << 20];
    pthread_t th;
    int a, b;
    uint64_t t0, sent = 0;

    tcp_pair(&a, &b);
    if (pthread_create(&th, NULL, reader, &b))
        die("thread");
    t0 = colo_now_ns();
    while (sent < (512ull << 20)) {
        ssize_t w = write(a, buf, sizeof(buf));

        if (w <= 0)
            die("write");
        sent += (uint64_t)w;
    }
    close(a);
    pthread_join(th, NULL);
    close(b);
    return (double)sent / (1 << 20) / ((double)(colo_now_ns() - t0) / 1e9);
}

/* ---- engines ------------------------------------------------------------- */

static int s_launch(void *arg, struct ckpt_secondary *s,
                    const struct ckpt_launch_req *req)
{
    struct tguest_opts o = tguest_opts_default();
    struct ckpt_vm *vm = NULL;
    int rc;

    o.ram_mb = RAM_MB;
    o.paused = true;
    o.incoming_defer = true;
    o.extra_args = sextra;
    rc = tguest_start(&o, &gs);
    if (rc < 0)
        return rc;
    rc = ckpt_vm_qemu_new(evb, gs->qmp_path, -1, 10000, &vm);
    if (rc < 0)
        return rc;
    s_launched = true;
    ckpt_secondary_launch_done(s, 0, vm, gs->ram_path);
    return 0;
}

static const struct ckpt_secondary_cbs s_cbs = {.launch = s_launch};

static void p_event(void *arg, const struct ckpt_event *ev)
{
    if (ev->type == CKPT_EV_CHECKPOINT) {
        acks++;
        p_acked = true;
    } else if (ev->type == CKPT_EV_UNPROTECTED) {
        die("the secondary was lost");
    }
}

static bool p_finished;

static void p_done(void *arg, int rc, const struct ckpt_stats *st)
{
    p_finished = true;
}

static const struct ckpt_primary_cbs p_cbs = {.event = p_event, .done = p_done};

static void q_connected(struct qmp_client *c, int rc, void *arg)
{
    if (rc < 0)
        die("test monitor");
    q_up = true;
}

static void make_image(const char *path, bool data)
{
    static uint8_t chunk[1 << 20];
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    if (fd < 0 || ftruncate(fd, (off_t)IMG_SIZE) < 0)
        die("image");
    for (uint64_t off = 0; data && off < IMG_SIZE; off += 2 << 20) {
        for (size_t i = 0; i < sizeof(chunk); i++)
            chunk[i] = (uint8_t)(i * 31 + off / 4096);
        if (pwrite(fd, chunk, sizeof(chunk), (off_t)off) != sizeof(chunk))
            die("image write");
    }
    close(fd);
}

int main(void)
{
    struct tguest_opts o = tguest_opts_default();
    struct tguest *gp = NULL;
    struct ckpt_memory *pmem = NULL;
    struct ckpt_vm *pvm = NULL;
    struct ckpt_disk_tee *tee = NULL;
    struct ckpt_disk_stage *stage = NULL;
    struct ckpt_secondary *sec = NULL;
    struct ckpt_primary_opts po = {0};
    struct ckpt_secondary_opts so = {0};
    struct ckpt_stats st;
    struct result base, prot;
    char dir[] = "/tmp/colo-bench-disk-XXXXXX";
    char pimg[64], simg[64], tqmp[64], parg[512], sarg[512], qarg[128];
    const char *pextra[5];
    struct ckpt_disk_cfg pc = {"d0", pimg}, sc = {"d0", simg};
    double lrate, srate;
    int a, b;
    char cmd[128];

    signal(SIGPIPE, SIG_IGN);
    colo_log_set_level(COLO_LOG_WARN);
    if (access(tguest_kernel_path(), R_OK) != 0) {
        printf("SKIP: test guest kernel not built\n");
        return 77;
    }
    if (!mkdtemp(dir))
        die("mkdtemp");
    snprintf(pimg, sizeof(pimg), "%s/p.raw", dir);
    snprintf(simg, sizeof(simg), "%s/s.raw", dir);
    snprintf(tqmp, sizeof(tqmp), "%s/b.qmp", dir);
    make_image(pimg, true);
    make_image(simg, false);
    snprintf(parg, sizeof(parg),
             "if=none,id=d0,driver=quorum,read-pattern=fifo,vote-threshold=1,"
             "children.0.driver=raw,children.0.file.filename=%s",
             pimg);
    snprintf(sarg, sizeof(sarg),
             "if=none,id=d0,driver=quorum,read-pattern=fifo,vote-threshold=1,"
             "children.0.driver=raw,children.0.file.filename=%s",
             simg);
    snprintf(qarg, sizeof(qarg), "unix:%s,server=on,wait=off", tqmp);
    pextra[0] = "-drive";
    pextra[1] = parg;
    pextra[2] = "-qmp";
    pextra[3] = qarg;
    pextra[4] = NULL;
    sextra[0] = "-drive";
    sextra[1] = sarg;
    sextra[2] = NULL;

    evb = event_base_new();
    o.ram_mb = RAM_MB;
    o.extra_args = pextra;
    if (tguest_start(&o, &gp) < 0 ||
        tguest_wait_counter_above(gp, 1000, 30000) < 0)
        die("guest");
    if (ckpt_mem_qemu_open(gp->ram_path, (size_t)RAM_MB << 20, CKPT_MEM_PRIMARY,
                           &pmem) < 0 ||
        ckpt_vm_qemu_new(evb, gp->qmp_path, -1, 10000, &pvm) < 0)
        die("primary");
    q = qmp_client_new(evb, NULL);
    if (!q || qmp_client_connect_path(q, tqmp, q_connected, NULL) < 0 ||
        !run_until(&q_up, 10000))
        die("monitor");
    if (ckpt_disk_tee_new(evb, &pc, 1, dir, NULL, NULL, &tee) < 0 ||
        ckpt_disk_stage_new(&sc, 1, &stage) < 0)
        die("tee/stage");

    /* A warm-up pass (allocates the image's blocks), then the baseline. */
    measure(&base);
    measure(&base);

    so.vm_name = "bvm";
    so.link.timeout_ms = 8000;
    so.disks = stage;
    po.mode = CKPT_MODE_REMUS;
    po.vm_name = "bvm";
    po.ram_size = (uint64_t)RAM_MB << 20;
    po.interval_ms = 100;
    po.link.timeout_ms = 8000;
    po.disks = tee;
    if (ckpt_secondary_new(evb, &so, &s_cbs, NULL, &sec) < 0 ||
        ckpt_primary_new(evb, &po, pmem, pvm, &p_cbs, NULL, &prim) < 0)
        die("engines");
    tcp_pair(&a, &b);
    if (ckpt_secondary_start(sec, b) < 0 || ckpt_primary_start(prim, a) < 0)
        die("start");
    if (!run_until(&p_acked, 300000))
        die("no first checkpoint");
    ckpt_primary_get_stats(prim, &st);
    srate = st.disk_sync_us ? (double)st.disk_sync_total / (1 << 20) /
                                  ((double)st.disk_sync_us / 1e6)
                            : 0;

    measure(&prot);
    ckpt_primary_get_stats(prim, &st);
    /* A last write and checkpoint: the images must agree. */
    snprintf(cmd, sizeof(cmd), "write -P 0x77 0 4k");
    qemu_io(cmd);

    /* Unprotected again (the tee detached): a second baseline, so that
     * the load of this shared machine weighs on both sides alike; the
     * better of the two counts. */
    ckpt_primary_cancel(prim);
    if (!run_until(&p_finished, 30000))
        die("cancel");
    {
        struct result b2;

        measure(&b2);
        if (b2.p50_us < base.p50_us)
            base.p50_us = b2.p50_us;
        if (b2.p99_us < base.p99_us)
            base.p99_us = b2.p99_us;
        if (b2.mib_s > base.mib_s)
            base.mib_s = b2.mib_s;
    }

    lrate = link_rate();
    fprintf(stderr,
            "bench-disk: 4 KiB write p50 %llu us -> %llu us, p99 %llu -> "
            "%llu us; 8 MiB writes %.1f -> %.1f MiB/s; full sync of %llu MiB "
            "image at %.1f MiB/s, link %.1f MiB/s; %d checkpoints\n",
            (unsigned long long)base.p50_us, (unsigned long long)prot.p50_us,
            (unsigned long long)base.p99_us, (unsigned long long)prot.p99_us,
            base.mib_s, prot.mib_s, (unsigned long long)(IMG_SIZE >> 20), srate,
            lrate, acks);
    printf("{\"write4k_p50_us_base\":%llu,\"write4k_p50_us_protected\":%llu,"
           "\"write4k_p99_us_base\":%llu,\"write4k_p99_us_protected\":%llu,"
           "\"write8m_mib_s_base\":%.1f,\"write8m_mib_s_protected\":%.1f,"
           "\"throughput_ratio\":%.3f,\"sync_mib_s\":%.1f,\"link_mib_s\":%.1f,"
           "\"sync_link_ratio\":%.3f,\"checkpoints\":%d,\"ratio\":%.3f}\n",
           (unsigned long long)base.p50_us, (unsigned long long)prot.p50_us,
           (unsigned long long)base.p99_us, (unsigned long long)prot.p99_us,
           base.mib_s, prot.mib_s, base.mib_s ? prot.mib_s / base.mib_s : 0,
           srate, lrate, lrate ? srate / lrate : 0, acks,
           base.p50_us ? (double)prot.p50_us / (double)base.p50_us : 0);
    ckpt_primary_free(prim);
    ckpt_secondary_free(sec);
    ckpt_disk_stage_free(stage);
    qmp_client_free(q);
    ckpt_vm_free(pvm);
    ckpt_disk_tee_free(tee);
    ckpt_memory_free(pmem);
    tguest_free(gp);
    tguest_free(gs);
    event_base_free(evb);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return 0;
}
