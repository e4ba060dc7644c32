/*
 * Disk replication end to end (checkpoint/disk.h): real QEMU on both sides
 * (the test guest, its disk a quorum drive on a raw image of each side's
 * own), colo's NBD tee attached to the primary's quorum, real TCP on
 * 127.0.0.1, both engines on one loop. Guest writes are QEMU's own
 * `qemu-io` (HMP, through a second QMP monitor the test owns, sent
 * asynchronously so the loop keeps serving the tee), issued between
 * checkpoints, as a guest's writes would be.
 *
 *   remus_writes     the full sync overwrites a secondary image full of
 *                    garbage; then after every ACK(n) the secondary's image
 *                    equals the primary's image as it was when n stopped
 *                    the guest (plain, zero, overlapping, 2 MiB and last-
 *                    sector writes); the primary dies between two
 *                    DISK_WRITEs of a checkpoint: the secondary takes over
 *                    with exactly the previous checkpoint's image
 *   secondary_loss   the secondary goes away: the primary's guest writes go
 *                    on (the tee is detached from the quorum), and a new
 *                    secondary gets a full sync and matches again
 *   size_mismatch    a secondary image of another size is refused with a
 *                    clear error and left untouched; the primary runs on
 *   corrupt_record   a DISK_WRITE past the end of the disk in checkpoint n:
 *                    the secondary refuses it (ERROR to the primary, which
 *                    runs on unprotected) and takes over with exactly
 *                    checkpoint n-1's image: nothing of n applied
 */
#include "checkpoint/disk.h"
#include "checkpoint/primary.h"
#include "checkpoint/secondary.h"

#include "common/error.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "qmp/qmp.h"
#include "tguest.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DISK_SIZE (8u << 20)
#define MAXCK     64

struct h {
    struct event_base *evb;
    struct event *deadline;
    bool timed_out;
    char dir[256];
    char pimg[300], simg[300], tqmp[300];
    char parg[1024], sarg[1024], qarg[400];
    const char *pextra[6], *sextra[4];

    struct tguest *gp, *gs;
    struct ckpt_memory *pmem;
    struct ckpt_vm *pvm;
    struct ckpt_primary *p;
    struct ckpt_secondary *s;
    struct ckpt_disk_tee *tee;
    struct ckpt_disk_stage *stage;
    struct qmp_client *q; /* the test's monitor on the primary */
    bool q_up;

    int acks, unprotected, takeovers, s_done, p_done;
    int s_rc, p_rc;
    int64_t takeover_ckpt;
    bool takeover_ok;
    int mismatches;
    uint8_t *snap[MAXCK];
    int writes_pending, writes_failed, writes_done;
};

static struct h H;

static void on_deadline(evutil_socket_t fd, short w, void *arg)
{
    H.timed_out = true;
    event_base_loopbreak(H.evb);
}

static bool run_until(bool (*cond)(void), unsigned ms)
{
    struct timeval tv = colo_ms_to_tv(ms);

    H.timed_out = false;
    evtimer_add(H.deadline, &tv);
    while (!cond() && !H.timed_out)
        event_base_loop(H.evb, EVLOOP_ONCE);
    evtimer_del(H.deadline);
    return cond();
}

static void tcp_pair(int *a, int *b)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    cr_assert_geq(ls, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(ls, 1), 0);
    cr_assert_eq(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
    *a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(*a, 0);
    cr_assert_eq(connect(*a, (struct sockaddr *)&sa, sizeof(sa)), 0);
    *b = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_geq(*b, 0);
    close(ls);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    off_t sz = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
    uint8_t *b;

    cr_assert_geq(sz, 0, "%s", path);
    b = malloc((size_t)sz + 1);
    cr_assert_not_null(b);
    cr_assert_eq(pread(fd, b, (size_t)sz, 0), sz);
    close(fd);
    *len = (size_t)sz;
    return b;
}

static void fill_file(const char *path, size_t size, int seed)
{
    uint8_t *b = calloc(1, size);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    cr_assert_not_null(b);
    cr_assert_geq(fd, 0);
    /* Data in some 64 KiB stretches, zeroes (a hole) elsewhere. */
    srand((unsigned)seed);
    for (size_t off = 0; off < size; off += 65536)
        if (seed == 0xEE || rand() % 3 == 0)
            for (size_t i = 0; i < 65536 && off + i < size; i++)
                b[off + i] = (uint8_t)(seed + i * 7 + off / 65536);
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    for (size_t off = 0; off < size; off += 65536) {
        bool zero = true;

        for (size_t i = 0; i < 65536; i++)
            zero = zero && !b[off + i];
        if (!zero)
            cr_assert_eq(pwrite(fd, b + off, 65536, (off_t)off), 65536);
    }
    close(fd);
    free(b);
}

/* Compare the secondary's image with snapshot n (taken when n stopped). */
static bool image_is_snap(int64_t n)
{
    size_t l;
    uint8_t *s;
    bool eq;

    if (n < 0 || n >= MAXCK || !H.snap[n])
        return false;
    s = read_file(H.simg, &l);
    eq = l == DISK_SIZE && memcmp(s, H.snap[n], DISK_SIZE) == 0;
    if (!eq)
        for (size_t off = 0; off < l && off < DISK_SIZE; off += 512)
            if (memcmp(s + off, H.snap[n] + off, 512)) {
                fprintf(stderr, "checkpoint %lld: sector at %zu differs\n",
                        (long long)n, off);
                break;
            }
    free(s);
    return eq;
}

/* ---- secondary ---------------------------------------------------------- */

static int s_launch(void *arg, struct ckpt_secondary *s,
                    const struct ckpt_launch_req *req)
{
    struct tguest_opts o = tguest_opts_default();
    struct ckpt_vm *vm = NULL;
    int rc;

    o.ram_mb = 32;
    o.paused = true;
    o.incoming_defer = true;
    o.extra_args = H.sextra;
    rc = tguest_start(&o, &H.gs);
    if (rc < 0)
        return rc;
    rc = ckpt_vm_qemu_new(H.evb, H.gs->qmp_path, -1, 10000, &vm);
    if (rc < 0)
        return rc;
    ckpt_secondary_launch_done(s, 0, vm, H.gs->ram_path);
    return 0;
}

static int s_may_takeover(void *arg, struct ckpt_secondary *s, int rc)
{
    ckpt_secondary_takeover_answer(s, true);
    return 0;
}

static void s_event(void *arg, const struct ckpt_event *ev)
{
    if (ev->type == CKPT_EV_TAKEOVER) {
        H.takeovers++;
        H.takeover_ckpt = ev->ckpt;
        /* The standby QEMU resumes on this image: it must be exactly the
         * committed checkpoint's. */
        H.takeover_ok = image_is_snap(ev->ckpt);
    }
}

static void s_done(void *arg, int rc, const struct ckpt_stats *st)
{
    H.s_done++;
    H.s_rc = rc;
}

static const struct ckpt_secondary_cbs s_cbs = {
    .launch = s_launch,
    .may_takeover = s_may_takeover,
    .event = s_event,
    .done = s_done,
};

/* ---- primary ------------------------------------------------------------ */

static void p_event(void *arg, const struct ckpt_event *ev)
{
    if (ev->type == CKPT_EV_CHECKPOINT) {
        H.acks++;
        if (!image_is_snap(ev->ckpt))
            H.mismatches++;
    } else if (ev->type == CKPT_EV_UNPROTECTED) {
        H.unprotected++;
    }
}

static void p_done(void *arg, int rc, const struct ckpt_stats *st)
{
    H.p_done++;
    H.p_rc = rc;
}

static void p_capture(void *arg, uint64_t n)
{
    size_t l;

    /* Guest paused, every write of the epoch completed. */
    cr_assert_lt(n, MAXCK);
    free(H.snap[n]);
    H.snap[n] = read_file(H.pimg, &l);
    cr_assert_eq(l, DISK_SIZE);
}

static const struct ckpt_primary_cbs p_cbs = {
    .event = p_event,
    .done = p_done,
};

/* ---- the test's writes --------------------------------------------------- */

static void write_done(struct qmp_client *c, int rc, json_t *ret,
                       const char *desc, void *arg)
{
    H.writes_pending--;
    if (rc < 0 || !json_is_string(ret) || strlen(json_string_value(ret))) {
        fprintf(stderr, "qemu-io: rc %d %s %s\n", rc, desc ? desc : "",
                json_is_string(ret) ? json_string_value(ret) : "");
        H.writes_failed++;
    }
    H.writes_done++;
}

static void qemu_io(const char *cmd)
{
    char line[256];
    json_t *a;

    snprintf(line, sizeof(line), "qemu-io d0 \"%s\"", cmd);
    a = json_pack("{s:s}", "command-line", line);
    cr_assert_eq(qmp_send(H.q, "human-monitor-command", a, -1, 20000,
                          write_done, NULL, NULL),
                 0);
    json_decref(a);
    H.writes_pending++;
}

static bool writes_idle(void)
{
    return H.writes_pending == 0;
}

/* One epoch's worth of writes; waits for them. */
static void write_round(int r)
{
    char cmd[128];
    unsigned off = (unsigned)((r * 2654435761u) % (DISK_SIZE / 65536)) * 65536;

    snprintf(cmd, sizeof(cmd), "write -P 0x%02x %u 64k", 0x10 + r, off);
    qemu_io(cmd);
    /* Overlapping: the later write must win. */
    snprintf(cmd, sizeof(cmd), "write -P 0x%02x %u 4k", 0x80 + r, off + 4096);
    qemu_io(cmd);
    if (r % 3 == 0) {
        snprintf(cmd, sizeof(cmd), "write -z %u 8k",
                 (off + 131072) % DISK_SIZE);
        qemu_io(cmd);
    }
    if (r % 4 == 1) {
        snprintf(cmd, sizeof(cmd), "write -P 0x%02x 2M 2M", 0x40 + r);
        qemu_io(cmd);
    }
    if (r % 5 == 2) {
        snprintf(cmd, sizeof(cmd), "write -P 0x%02x %u 512", 0x60 + r,
                 DISK_SIZE - 512);
        qemu_io(cmd);
    }
    cr_assert(run_until(writes_idle, 30000), "qemu-io writes hang");
    cr_assert_eq(H.writes_failed, 0);
}

/* ---- fixture ------------------------------------------------------------- */

static void q_connected(struct qmp_client *c, int rc, void *arg)
{
    cr_assert_eq(rc, 0);
    H.q_up = true;
}

static bool q_is_up(void)
{
    return H.q_up;
}

static bool no_qemu(void)
{
    return access(tguest_kernel_path(), R_OK) != 0 ||
           access("/usr/bin/qemu-system-x86_64", X_OK) != 0;
}

static bool skip_without_qemu(void)
{
    if (no_qemu())
        cr_skip_test("QEMU or the test guest kernel is missing");
    return false;
}

static void setup(void)
{
    struct tguest_opts o = tguest_opts_default();
    struct ckpt_disk_cfg pc = {"d0", NULL}, sc = {"d0", NULL};
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

    memset(&H, 0, sizeof(H));
    if (no_qemu())
        return; /* each case skips */
    /* As colo's host process does (orchestrator/host.c). */
    signal(SIGPIPE, SIG_IGN);
    colo_log_set_level(getenv("CKPT_TEST_DEBUG") ? COLO_LOG_DEBUG
                                                 : COLO_LOG_WARN);
    snprintf(H.dir, sizeof(H.dir), "%s/colo-disk-XXXXXX", tmp);
    cr_assert_not_null(mkdtemp(H.dir));
    snprintf(H.pimg, sizeof(H.pimg), "%s/p.raw", H.dir);
    snprintf(H.simg, sizeof(H.simg), "%s/s.raw", H.dir);
    snprintf(H.tqmp, sizeof(H.tqmp), "%s/test.qmp", H.dir);
    fill_file(H.pimg, DISK_SIZE, 0x21);
    fill_file(H.simg, DISK_SIZE, 0xEE); /* garbage the sync replaces */
    snprintf(H.parg, sizeof(H.parg),
             "if=none,id=d0,driver=quorum,read-pattern=fifo,vote-threshold=1,"
             "children.0.driver=raw,children.0.file.filename=%s",
             H.pimg);
    snprintf(H.sarg, sizeof(H.sarg),
             "if=none,id=d0,driver=quorum,read-pattern=fifo,vote-threshold=1,"
             "children.0.driver=raw,children.0.file.filename=%s",
             H.simg);
    snprintf(H.qarg, sizeof(H.qarg), "unix:%s,server=on,wait=off", H.tqmp);
    H.pextra[0] = "-drive";
    H.pextra[1] = H.parg;
    H.pextra[2] = "-qmp";
    H.pextra[3] = H.qarg;
    H.sextra[0] = "-drive";
    H.sextra[1] = H.sarg;

    H.evb = event_base_new();
    cr_assert_not_null(H.evb);
    H.deadline = evtimer_new(H.evb, on_deadline, NULL);
    o.ram_mb = 32;
    o.extra_args = H.pextra;
    cr_assert_eq(tguest_start(&o, &H.gp), 0);
    cr_assert_eq(tguest_wait_counter_above(H.gp, 1000, 20000), 0);
    cr_assert_eq(ckpt_mem_qemu_open(H.gp->ram_path, 32u << 20, CKPT_MEM_PRIMARY,
                                    &H.pmem),
                 0);
    cr_assert_eq(ckpt_vm_qemu_new(H.evb, H.gp->qmp_path, -1, 10000, &H.pvm), 0);
    H.q = qmp_client_new(H.evb, NULL);
    cr_assert_not_null(H.q);
    cr_assert_eq(qmp_client_connect_path(H.q, H.tqmp, q_connected, NULL), 0);
    cr_assert(run_until(q_is_up, 10000));
    pc.path = H.pimg;
    sc.path = H.simg;
    cr_assert_eq(ckpt_disk_tee_new(H.evb, &pc, 1, H.dir, NULL, NULL, &H.tee),
                 0);
    cr_assert_eq(ckpt_disk_stage_new(&sc, 1, &H.stage), 0);
}

static void teardown(void)
{
    ckpt_primary_free(H.p);
    ckpt_secondary_free(H.s);
    ckpt_disk_stage_free(H.stage);
    qmp_client_free(H.q);
    ckpt_vm_free(H.pvm);
    ckpt_disk_tee_free(H.tee);
    ckpt_memory_free(H.pmem);
    tguest_free(H.gp);
    tguest_free(H.gs);
    for (int i = 0; i < MAXCK; i++)
        free(H.snap[i]);
    if (H.deadline)
        event_free(H.deadline);
    if (H.evb)
        event_base_free(H.evb);
    if (H.dir[0]) {
        char cmd[300];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", H.dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cleanup of %s failed\n", H.dir);
    }
}

static void new_secondary(void)
{
    struct ckpt_secondary_opts so = {0};

    so.vm_name = "dvm";
    so.link.timeout_ms = 8000;
    so.disks = H.stage;
    cr_assert_eq(ckpt_secondary_new(H.evb, &so, &s_cbs, NULL, &H.s), 0);
}

static void new_primary(void)
{
    struct ckpt_primary_opts po = {0};

    po.mode = CKPT_MODE_REMUS;
    po.vm_name = "dvm";
    po.vm_config = "{\"test\":true}";
    po.ram_size = 32u << 20;
    po.interval_ms = 3600000; /* the test asks for each checkpoint */
    po.link.timeout_ms = 8000;
    po.disks = H.tee;
    cr_assert_eq(
        ckpt_primary_new(H.evb, &po, H.pmem, H.pvm, &p_cbs, NULL, &H.p), 0);
    ckpt_primary_set_capture_hook(H.p, p_capture, NULL);
}

static void pair(void)
{
    int a, b;

    tcp_pair(&a, &b);
    cr_assert_eq(ckpt_secondary_start(H.s, b), 0);
    cr_assert_eq(ckpt_primary_start(H.p, a), 0);
}

static int want_acks;
static bool acks_reached(void)
{
    return H.acks >= want_acks;
}

static bool interval_or_gone(void)
{
    return !H.p || ckpt_primary_state(H.p) == CKPT_P_INTERVAL ||
           H.unprotected || H.p_done;
}

/* A round of writes, then checkpoint now, then its ACK. */
static void round_and_checkpoint(int r)
{
    cr_assert(run_until(interval_or_gone, 30000));
    write_round(r);
    want_acks = H.acks + 1;
    cr_assert_eq(ckpt_primary_checkpoint_now(H.p), 0);
    cr_assert(run_until(acks_reached, 30000), "no ACK (state %s)",
              ckpt_primary_state_name(ckpt_primary_state(H.p)));
}

TestSuite(disk, .init = setup, .fini = teardown, .timeout = 300);

static bool took_over(void)
{
    return H.s_done > 0;
}

Test(disk, remus_writes)
{
    if (skip_without_qemu())
        return;
    new_secondary();
    new_primary();
    pair();
    want_acks = 1;
    cr_assert(run_until(acks_reached, 60000), "first checkpoint not acked");
    cr_assert_eq(H.mismatches, 0, "the full sync differs");
    for (int r = 1; r <= 10; r++)
        round_and_checkpoint(r);
    cr_assert_eq(H.mismatches, 0);
    cr_assert_geq(ckpt_disk_tee_total_writes(H.tee), 20);

    /* The primary dies between two DISK_WRITEs of the next checkpoint. */
    ckpt_primary_set_fault(H.p, COLO_FAULT_MID_DISK, (uint64_t)H.acks + 1);
    cr_assert(run_until(interval_or_gone, 30000));
    write_round(11);
    cr_assert_eq(ckpt_primary_checkpoint_now(H.p), 0);
    cr_assert(run_until(took_over, 60000), "no takeover");
    cr_assert_eq(H.p_rc, -COLO_EFAULT_INJECTED);
    cr_assert_eq(H.s_rc, 0, "takeover failed: %s", colo_strerror(H.s_rc));
    cr_assert_eq(H.takeovers, 1);
    cr_assert_eq(H.takeover_ckpt, H.acks, "took over at %lld, acked %d",
                 (long long)H.takeover_ckpt, H.acks);
    cr_assert(H.takeover_ok, "the image at takeover is not checkpoint %lld's",
              (long long)H.takeover_ckpt);
}

static bool is_unprotected(void)
{
    return H.unprotected > 0;
}

static bool tee_node_gone(void)
{
    return !ckpt_disk_tee_attached(H.tee);
}

Test(disk, secondary_loss)
{
    size_t l;
    uint8_t *img;

    if (skip_without_qemu())
        return;
    new_secondary();
    new_primary();
    pair();
    want_acks = 1;
    cr_assert(run_until(acks_reached, 60000));
    for (int r = 1; r <= 3; r++)
        round_and_checkpoint(r);
    cr_assert_eq(H.mismatches, 0);

    /* The secondary goes away. */
    ckpt_secondary_free(H.s);
    H.s = NULL;
    tguest_free(H.gs);
    H.gs = NULL;
    cr_assert(run_until(is_unprotected, 30000));
    cr_assert(run_until(tee_node_gone, 1000));
    /* Guest writes go on, on the local image only. */
    qemu_io("write -P 0x5a 1M 64k");
    cr_assert(run_until(writes_idle, 10000));
    cr_assert_eq(H.writes_failed, 0);
    img = read_file(H.pimg, &l);
    for (size_t i = 0; i < 65536; i++)
        cr_assert_eq(img[(1u << 20) + i], 0x5a);
    free(img);

    /* A new secondary: full sync, then it matches again. */
    fill_file(H.simg, DISK_SIZE, 0xEE);
    ckpt_disk_stage_reset(H.stage);
    new_secondary();
    want_acks = H.acks + 1;
    {
        int a, b;

        tcp_pair(&a, &b);
        cr_assert_eq(ckpt_secondary_start(H.s, b), 0);
        cr_assert_eq(ckpt_primary_start(H.p, a), 0);
    }
    cr_assert(run_until(acks_reached, 60000), "re-pair not acked");
    for (int r = 4; r <= 6; r++)
        round_and_checkpoint(r);
    cr_assert_eq(H.mismatches, 0);
}

static bool s_gone(void)
{
    return H.s_done > 0 && H.unprotected > 0;
}

Test(disk, size_mismatch)
{
    size_t l0, l1;
    uint8_t *before, *after;
    int fd;

    if (skip_without_qemu())
        return;
    /* The secondary's image is 1 MiB short. */
    ckpt_disk_stage_free(H.stage);
    fd = open(H.simg, O_RDWR | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, DISK_SIZE - (1u << 20)), 0);
    close(fd);
    {
        struct ckpt_disk_cfg sc = {"d0", H.simg};

        cr_assert_eq(ckpt_disk_stage_new(&sc, 1, &H.stage), 0);
    }
    before = read_file(H.simg, &l0);
    new_secondary();
    new_primary();
    pair();
    cr_assert(run_until(s_gone, 60000));
    cr_assert_lt(H.s_rc, 0);
    cr_assert_eq(H.acks, 0);
    after = read_file(H.simg, &l1);
    cr_assert_eq(l0, l1);
    cr_assert(memcmp(before, after, l0) == 0, "a refused image was changed");
    free(before);
    free(after);
    /* The primary's guest runs on. */
    qemu_io("write -P 0x33 0 4k");
    cr_assert(run_until(writes_idle, 10000));
    cr_assert_eq(H.writes_failed, 0);
}

Test(disk, corrupt_record)
{
    int64_t last;

    if (skip_without_qemu())
        return;
    new_secondary();
    new_primary();
    pair();
    want_acks = 1;
    cr_assert(run_until(acks_reached, 60000));
    for (int r = 1; r <= 3; r++)
        round_and_checkpoint(r);
    cr_assert_eq(H.mismatches, 0);
    last = H.acks;
    ckpt_disk_tee_test_corrupt(H.tee);
    cr_assert(run_until(interval_or_gone, 30000));
    write_round(4);
    cr_assert_eq(ckpt_primary_checkpoint_now(H.p), 0);
    cr_assert(run_until(took_over, 60000), "the secondary did not end");
    cr_assert(run_until(is_unprotected, 30000),
              "the primary did not notice the refusal");
    cr_assert_eq(H.acks, last, "a checkpoint with a corrupt record was acked");
    cr_assert_eq(H.s_rc, 0, "takeover failed: %s", colo_strerror(H.s_rc));
    cr_assert_eq(H.takeover_ckpt, last);
    cr_assert(H.takeover_ok,
              "the image at takeover is not checkpoint %lld's (half-applied)",
              (long long)last);
}
