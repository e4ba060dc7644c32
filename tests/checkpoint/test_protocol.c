/*
 * The secondary engine against a scripted primary (real TCP on 127.0.0.1,
 * real transport links, a fake VM: no QEMU needed): records a real primary
 * never sends. Each case commits checkpoint 1, then misbehaves, and checks
 * that the secondary refuses with ERROR, keeps its committed image
 * untouched and treats the primary as lost.
 */
#include "checkpoint/secondary.h"

#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "transport/colo_rec.h"
#include "transport/link.h"

#include "tloop.h"
#include "tnet.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define RAM_SIZE (4u << 20)
#define NPAGES   (RAM_SIZE / CKPT_PAGE_SIZE)

/* ---- a fake VM: every operation succeeds from the loop ----------------- */

struct fvm {
    struct ckpt_vm base;
    struct event *ev;
    ckpt_vm_done_fn *cb;
    void *arg;
    int loads;
};

static void fvm_fire(evutil_socket_t fd, short w, void *a)
{
    struct fvm *v = a;
    ckpt_vm_done_fn *cb = v->cb;

    v->cb = NULL;
    if (cb)
        cb(v->arg, 0);
}

static int fvm_op(struct ckpt_vm *vm, ckpt_vm_done_fn *cb, void *arg)
{
    struct fvm *v = (struct fvm *)vm;

    v->cb = cb;
    v->arg = arg;
    event_active(v->ev, 0, 0);
    return 0;
}

static int fvm_save(struct ckpt_vm *vm, ckpt_vm_saved_fn *cb, void *arg)
{
    return -ENOTSUP;
}

static int fvm_load(struct ckpt_vm *vm, const uint8_t *blob, size_t len,
                    ckpt_vm_done_fn *cb, void *arg)
{
    ((struct fvm *)vm)->loads++;
    return fvm_op(vm, cb, arg);
}

static void fvm_cancel(struct ckpt_vm *vm)
{
    ((struct fvm *)vm)->cb = NULL;
}

static void fvm_free(struct ckpt_vm *vm)
{
    struct fvm *v = (struct fvm *)vm;

    event_free(v->ev);
    free(v);
}

static const struct ckpt_vm_ops fvm_ops = {
    .name = "fake",
    .stop = fvm_op,
    .cont = fvm_op,
    .save_devices = fvm_save,
    .load_devices_and_cont = fvm_load,
    .cancel = fvm_cancel,
    .free = fvm_free,
};

/* ---- harness ------------------------------------------------------------ */

static struct {
    struct event_base *evb;
    char dir[64];
    char ram_path[128];
    struct ckpt_secondary *s;
    struct xprt_link *pl; /* the scripted primary's link */
    bool p_up, p_hello, p_err;
    int p_err_rc;
    int acks;
    int64_t last_ack;
    int errors;
    int32_t error_code;
    int s_lost, s_done, s_rc;
    uint8_t image1[RAM_SIZE];
} T;

static bool run_until(bool (*cond)(void), unsigned ms)
{
    return tloop_until_fn(T.evb, cond, ms);
}

static int s_launch(void *arg, struct ckpt_secondary *s,
                    const struct ckpt_launch_req *req)
{
    struct fvm *v = calloc(1, sizeof(*v));
    int fd;

    cr_assert_not_null(v);
    cr_assert_eq(req->ram_size, RAM_SIZE);
    v->base.ops = &fvm_ops;
    v->ev = event_new(T.evb, -1, 0, fvm_fire, v);
    fd = open(T.ram_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, RAM_SIZE), 0);
    close(fd);
    ckpt_secondary_launch_done(s, 0, &v->base, T.ram_path);
    return 0;
}

static int s_may_takeover(void *arg, struct ckpt_secondary *s, int rc)
{
    ckpt_secondary_takeover_answer(s, false); /* stay in Lost */
    return 0;
}

static void s_event(void *arg, const struct ckpt_event *ev)
{
    if (ev->type == CKPT_EV_PRIMARY_LOST)
        T.s_lost++;
}

static void s_done(void *arg, int rc, const struct ckpt_stats *st)
{
    T.s_done++;
    T.s_rc = rc;
}

static const struct ckpt_secondary_cbs s_cbs = {
    .launch = s_launch,
    .may_takeover = s_may_takeover,
    .event = s_event,
    .done = s_done,
};

static void p_up(struct xprt_link *l, void *arg)
{
    T.p_up = true;
}

static void p_record(struct xprt_link *l, const struct xprt_item *it, void *arg)
{
    uint64_t n;
    int32_t st;
    char text[128];

    if (it->type == XPRT_COLO_HELLO) {
        T.p_hello = true;
    } else if (it->type == XPRT_COLO_ACK) {
        cr_assert_eq(xprt_ack_decode(it->body, it->length, &n, &st), 0);
        cr_assert_eq(st, 0);
        T.acks++;
        T.last_ack = (int64_t)n;
    } else if (it->type == XPRT_COLO_ERROR) {
        cr_assert_eq(xprt_error_decode(it->body, it->length, &T.error_code,
                                       text, sizeof(text)),
                     0);
        T.errors++;
    }
}

static void p_error(struct xprt_link *l, int rc, void *arg)
{
    T.p_err = true;
    T.p_err_rc = rc;
}

static const struct xprt_link_cbs p_cbs = {
    .up = p_up,
    .record = p_record,
    .error = p_error,
};

static void tcp_pair(int *a, int *b)
{
    cr_assert_eq(tnet_tcp_pair(a, b), 0);
}

static bool link_up(void)
{
    return T.p_up || T.p_err;
}
static bool got_error(void)
{
    return T.errors > 0 || T.p_err;
}
static bool s_finished(void)
{
    return T.s_done > 0;
}
static bool got_hello(void)
{
    return T.p_hello || T.s_done;
}
static bool got_ack(void)
{
    return T.acks > 0 || T.s_done;
}
static bool got_lost(void)
{
    return T.s_lost > 0 || T.s_done > 0;
}

static void send_rec(uint32_t type, const void *body, size_t len)
{
    cr_assert_eq(xprt_link_send(T.pl, type, body, len), 0);
}

static void send_begin(uint64_t n, uint32_t flags)
{
    uint8_t b[16];

    xprt_ckpt_begin_encode(b, n, flags);
    send_rec(XPRT_COLO_CHECKPOINT_BEGIN, b, 16);
}

static void send_end(uint64_t n)
{
    uint8_t b[16];

    xprt_ckpt_end_encode(b, n);
    send_rec(XPRT_COLO_CHECKPOINT_END, b, 16);
}

/* count pages, pfns[i] = first + i, each filled with fill + i. */
static void send_pages(uint32_t count, uint64_t first, uint8_t fill)
{
    size_t head = XPRT_RAM_PAGES_HEAD_SIZE(count);
    uint64_t *pfns = calloc(count, sizeof(*pfns));
    uint8_t *h = malloc(head);
    uint8_t *data = malloc((size_t)count * CKPT_PAGE_SIZE);
    struct iovec iov[2];

    for (uint32_t i = 0; i < count; i++) {
        pfns[i] = first + i;
        memset(data + (size_t)i * CKPT_PAGE_SIZE, fill + (int)i,
               CKPT_PAGE_SIZE);
    }
    cr_assert_eq(xprt_ram_pages_head_encode(h, count, 12, pfns), 0);
    iov[0].iov_base = h;
    iov[0].iov_len = head;
    iov[1].iov_base = data;
    iov[1].iov_len = (size_t)count * CKPT_PAGE_SIZE;
    cr_assert_eq(xprt_link_sendv(T.pl, XPRT_COLO_RAM_PAGES, iov, 2), 0);
    free(pfns);
    free(h);
    free(data);
}

static void send_devstate(void)
{
    uint8_t b[XPRT_DEVSTATE_HEAD_SIZE + 4];

    xprt_devstate_head_encode(b, XPRT_DEVSTATE_QEMU_XEN_SAVE);
    memcpy(b + XPRT_DEVSTATE_HEAD_SIZE, "QEVM", 4);
    send_rec(XPRT_COLO_DEVICE_STATE, b, sizeof(b));
}

static const uint8_t *sec_ram(void)
{
    return ckpt_mem_qemu_ram(ckpt_secondary_memory(T.s));
}

/* Pair, and commit checkpoint 1 (pages 0..3). */
static void setup(void)
{
    struct ckpt_secondary_opts so = {0};
    struct xprt_link_cfg cfg;
    struct xprt_colo_hello h = {0};
    struct colo_buf b;
    int a, c;

    memset(&T, 0, sizeof(T));
    colo_log_set_level(COLO_LOG_ERROR);
    snprintf(T.dir, sizeof(T.dir), "/tmp/colo-proto-XXXXXX");
    cr_assert_not_null(mkdtemp(T.dir));
    snprintf(T.ram_path, sizeof(T.ram_path), "%s/ram", T.dir);
    T.evb = event_base_new();
    cr_assert_eq(ckpt_secondary_new(T.evb, &so, &s_cbs, NULL, &T.s), 0);
    tcp_pair(&a, &c);
    cr_assert_eq(ckpt_secondary_start(T.s, c), 0);
    xprt_link_cfg_init(&cfg);
    cfg.plain = true;
    cfg.heartbeat_ms = 200;
    cr_assert_eq(
        xprt_link_new_from_fd(T.evb, a, true, &cfg, &p_cbs, NULL, &T.pl), 0);
    h.version = XPRT_COLO_VERSION;
    h.role = XPRT_ROLE_PRIMARY;
    h.page_size = CKPT_PAGE_SIZE;
    h.ram_size = RAM_SIZE;
    snprintf(h.vm_name, sizeof(h.vm_name), "t");
    colo_buf_init(&b, 0);
    cr_assert_eq(xprt_colo_hello_write(&b, &h), 0);
    cr_assert_eq(xprt_colo_config_write(&b, "{}", 2), 0);
    /* Wait for the link to come up, then send. */
    cr_assert(run_until(link_up, 5000));
    cr_assert(T.p_up);
    cr_assert_eq(xprt_link_send_raw(T.pl, b.data, b.len), 0);
    colo_buf_dispose(&b);
    cr_assert(run_until(got_hello, 5000), "no HELLO from the secondary");
    send_begin(1, XPRT_CKPT_FLAG_FULL);
    send_pages(4, 0, 0x10);
    send_devstate();
    send_end(1);
    cr_assert(run_until(got_ack, 5000), "no ACK(1)");
    cr_assert_eq(T.last_ack, 1);
    memcpy(T.image1, sec_ram(), RAM_SIZE);
    cr_assert_eq(T.image1[0], 0x10);
    cr_assert_eq(T.image1[3 * CKPT_PAGE_SIZE], 0x13);
}

static void teardown(void)
{
    char p[160];

    xprt_link_free(T.pl);
    ckpt_secondary_free(T.s);
    event_base_free(T.evb);
    unlink(T.ram_path);
    snprintf(p, sizeof(p), "%s", T.dir);
    rmdir(p);
}

TestSuite(protocol, .init = setup, .fini = teardown, .timeout = 60);

/* The secondary refused (code) and kept checkpoint 1. */
static void expect_refused(int code)
{
    cr_assert(run_until(got_lost, 5000), "the secondary did not react");
    cr_assert_eq(T.s_done, 0);
    cr_assert_eq(ckpt_secondary_state(T.s), CKPT_S_LOST);
    if (code) {
        /* The ERROR went out before the link was dropped. */
        run_until(got_error, 5000);
        cr_assert_eq(T.errors, 1, "no ERROR record");
        cr_assert_eq(T.error_code, code, "ERROR %s",
                     colo_strerror(T.error_code));
    }
    cr_assert_eq(memcmp(sec_ram(), T.image1, RAM_SIZE), 0,
                 "the committed image changed");
    cr_assert_eq(ckpt_mem_qemu_staged(ckpt_secondary_memory(T.s)), 0);
}

Test(protocol, commit_then_second_checkpoint_ok)
{
    send_begin(2, 0);
    send_pages(2, 10, 0x50);
    /* Staged, not applied, until END. */
    for (int i = 0; i < 20; i++)
        event_base_loop(T.evb, EVLOOP_NONBLOCK);
    cr_assert_eq(sec_ram()[10 * CKPT_PAGE_SIZE], 0);
    send_devstate();
    send_end(2);
    T.acks = 0;
    cr_assert(run_until(got_ack, 5000));
    cr_assert_eq(T.last_ack, 2);
    cr_assert_eq(sec_ram()[10 * CKPT_PAGE_SIZE], 0x50);
    cr_assert_eq(sec_ram()[11 * CKPT_PAGE_SIZE], 0x51);
}

Test(protocol, eof_mid_checkpoint_keeps_committed_image)
{
    send_begin(2, 0);
    send_pages(3, 0, 0x77); /* would overwrite pages 0..2 */
    send_devstate();
    /* No END: the primary goes away. */
    xprt_link_free(T.pl);
    T.pl = NULL;
    expect_refused(0);
}

Test(protocol, pfn_past_ram_is_refused)
{
    send_begin(2, 0);
    send_pages(1, NPAGES - 1, 0x20); /* the last page: fine */
    send_pages(1, NPAGES, 0x21);     /* one past: corrupt */
    expect_refused(-COLO_ESTREAM_CORRUPT);
}

Test(protocol, pages_per_record_cap)
{
    send_begin(2, 0);
    send_pages(CKPT_MAX_PAGES_PER_RECORD + 1, 0, 0x30);
    expect_refused(-COLO_ESTREAM_TOO_BIG);
}

Test(protocol, pages_per_record_at_cap)
{
    send_begin(2, 0);
    send_pages(CKPT_MAX_PAGES_PER_RECORD, 0, 0x40);
    send_devstate();
    send_end(2);
    T.acks = 0;
    cr_assert(run_until(got_ack, 5000));
    cr_assert_eq(T.last_ack, 2);
}

Test(protocol, begin_out_of_order)
{
    send_begin(3, 0);
    expect_refused(-COLO_ESTREAM_CORRUPT);
}

Test(protocol, pages_outside_checkpoint)
{
    send_pages(1, 0, 0x99);
    expect_refused(-COLO_ESTREAM_CORRUPT);
}

Test(protocol, end_without_device_state)
{
    send_begin(2, 0);
    send_pages(1, 0, 0x99);
    send_end(2);
    expect_refused(-COLO_ESTREAM_CORRUPT);
}

Test(protocol, end_with_wrong_number)
{
    send_begin(2, 0);
    send_devstate();
    send_end(7);
    expect_refused(-COLO_ESTREAM_CORRUPT);
}

Test(protocol, deliberate_end_is_not_a_failure)
{
    struct colo_buf b;

    colo_buf_init(&b, 0);
    cr_assert_eq(xprt_error_write(&b, -COLO_ECANCELLED, "bye"), 0);
    cr_assert_eq(xprt_link_send_raw(T.pl, b.data, b.len), 0);
    colo_buf_dispose(&b);
    cr_assert(run_until(got_lost, 5000));
    cr_assert_eq(T.s_done, 1);
    cr_assert_eq(T.s_rc, -COLO_ECANCELLED);
    cr_assert_eq(T.s_lost, 0);
}

Test(protocol, explicit_failover_after_refused_takeover)
{
    xprt_link_free(T.pl);
    T.pl = NULL;
    expect_refused(0);
    cr_assert_eq(ckpt_secondary_failover(T.s), 0);
    cr_assert(run_until(s_finished, 5000));
    cr_assert_eq(T.s_rc, 0);
    cr_assert_eq(ckpt_secondary_state(T.s), CKPT_S_RUNNING);
}
