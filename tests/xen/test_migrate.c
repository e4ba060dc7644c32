/*
 * The Xen migration handshake against a real `colo receive` on a machine
 * without Xen: a primary that offers a Xen domain (HELLO flag XEN +
 * libxl's configuration) is handed from the secondary engine to the Xen
 * receiver, which refuses with an ERROR record saying why, and colo
 * receive exits non-zero. The migration itself runs in nested Xen
 * (tests/nested/scenarios/colo_migrate.sh).
 */
#include <criterion/criterion.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/secondary.h"
#include "checkpoint/xen_dom.h"
#include "common/buf.h"
#include "common/error.h"
#include "fproc.h"
#include "transport/colo_rec.h"
#include "transport/link.h"

#define COLO_EXE COLO_BINARY_DIR "/orchestrator/colo"

static const char cfg_json[] =
    "{\"c_info\": {\"type\": \"pvh\", \"name\": \"tick\"},"
    " \"b_info\": {\"max_vcpus\": 1, \"max_memkb\": 131072}}";

/* What the next offer() sends as VM_CONFIG. */
static const char *offer_json = cfg_json;

struct peer {
    uint32_t flags;
    struct event_base *base;
    struct xprt_link *link;
    bool up, got_error, got_ack, failed;
    char text[512];
};

static void p_up(struct xprt_link *l, void *arg)
{
    struct peer *p = arg;
    struct xprt_colo_hello h = {.version = XPRT_COLO_VERSION,
                                .role = XPRT_ROLE_PRIMARY,
                                .page_size = 4096,
                                .flags = p->flags,
                                .ram_size = 128u << 20};
    struct colo_buf b;

    p->up = true;
    snprintf(h.vm_name, sizeof(h.vm_name), "tick");
    colo_buf_init(&b, 0);
    if (xprt_colo_hello_write(&b, &h) < 0 ||
        xprt_link_send_raw(l, b.data, b.len) < 0)
        p->failed = true;
    colo_buf_reset(&b);
    if (xprt_colo_config_write(&b, offer_json, strlen(offer_json)) < 0 ||
        xprt_link_send_raw(l, b.data, b.len) < 0)
        p->failed = true;
    colo_buf_dispose(&b);
}

static void p_record(struct xprt_link *l, const struct xprt_item *it, void *arg)
{
    struct peer *p = arg;
    int32_t code;

    (void)l;
    if (it->type == XPRT_COLO_ERROR) {
        xprt_error_decode(it->body, it->length, &code, p->text,
                          sizeof(p->text));
        p->got_error = true;
        event_base_loopbreak(p->base);
    } else if (it->type == XPRT_COLO_ACK) {
        p->got_ack = true;
        event_base_loopbreak(p->base);
    }
}

static void p_error(struct xprt_link *l, int rc, void *arg)
{
    struct peer *p = arg;

    snprintf(p->text, sizeof(p->text), "link error %s: %s", colo_errname(rc),
             xprt_link_why(l));
    p->failed = true;
    event_base_loopbreak(p->base);
}

static const struct xprt_link_cbs p_cbs = {
    .up = p_up, .record = p_record, .error = p_error};

/* Offer a Xen domain (HELLO flags) to `colo MODE`; the ERROR text must
 * contain expect and colo must exit non-zero (receive) or go on waiting
 * (standby). */
static void offer(const char *mode, uint32_t flags, const char *expect)
{
    char *argv[] = {COLO_EXE,      (char *)mode, "--listen",
                    "127.0.0.1:0", "--insecure", NULL};
    struct fproc rp;
    struct peer p = {.flags = flags};
    struct xprt_link_cfg cfg;
    struct timeval tv = {.tv_sec = 20};
    long off;
    int port, st;

    fproc_init();
    cr_assert_eq(fproc_spawn(&rp, argv, NULL), 0);
    off = fproc_wait_out(&rp, "waiting for a primary on 127.0.0.1:", 0, 20000);
    cr_assert(off > 0, "colo %s did not start: %s", mode, rp.buf);
    fproc_pump(&rp, 50);
    port = atoi(rp.buf + off);
    cr_assert(port > 0, "%s", rp.buf);

    p.base = event_base_new();
    xprt_link_cfg_init(&cfg);
    cfg.plain = true;
    cr_assert_eq(xprt_link_connect(p.base, "127.0.0.1", (uint16_t)port, &cfg,
                                   &p_cbs, &p, &p.link),
                 0);
    event_base_loopexit(p.base, &tv);
    event_base_dispatch(p.base);
    cr_assert(p.up, "no link: %s", p.text);
    cr_assert(p.got_error, "no ERROR from colo %s (%s)", mode, p.text);
    cr_assert_not(p.got_ack);
    cr_assert(strstr(p.text, expect), "'%s' does not say '%s'", p.text, expect);
    xprt_link_free(p.link);
    event_base_free(p.base);

    if (strcmp(mode, "standby") == 0) {
        /* A standby refuses and waits for a primary again. */
        cr_assert(fproc_wait_out(&rp, "waiting for a primary again", 0, 20000) >
                      0,
                  "%s", rp.buf);
        cr_assert(fproc_alive(&rp));
        kill(rp.pid, SIGTERM);
        st = fproc_wait_exit(&rp, 20000);
        cr_assert(st >= 0, "%s", rp.buf);
    } else {
        st = fproc_wait_exit(&rp, 20000);
        cr_assert(st > 0, "colo receive: exit %d\n%s", st, rp.buf);
    }
    cr_assert(strstr(rp.buf, expect), "%s", rp.buf);
    if (strstr(offer_json, "\"interval_ms\": 7000"))
        cr_assert(strstr(rp.buf, "checkpoints every 7000 ms; failover after "
                                 "19000 ms"),
                  "%s", rp.buf);
    fproc_free(&rp);
}

/* These cases need a host without Xen: skip them on one with it. */
static void skip_if_xen(void)
{
    struct ckpt_xen_dom *d;
    char why[256];

    if (ckpt_xen_dom_open(&d, why, sizeof(why)) == 0) {
        ckpt_xen_dom_close(d);
        cr_skip_test("a Xen hypervisor is present (nested tests cover the "
                     "migration)");
    }
}

Test(migrate, receiver_refuses_without_xen)
{
    skip_if_xen();
    offer("receive", XPRT_HELLO_FLAG_XEN, "no Xen hypervisor");
}

Test(migrate, standby_refuses_without_xen)
{
    skip_if_xen();
    offer("standby", XPRT_HELLO_FLAG_XEN | XPRT_HELLO_FLAG_XEN_REMUS,
          "no Xen hypervisor");
}

Test(migrate, colo_standby_refuses_without_xen)
{
    skip_if_xen();
    offer("standby",
          XPRT_HELLO_FLAG_XEN | XPRT_HELLO_FLAG_XEN_REMUS |
              XPRT_HELLO_FLAG_COLO,
          "no Xen hypervisor");
}

/* colo protect sends its interval inside the configuration; the standby
 * takes it out and sets its failover deadline from it (twice the interval
 * and 5 s), so a slow primary does not look dead. */
Test(migrate, standby_failover_deadline_from_interval)
{
    static const char pj[] =
        "{\"c_info\": {\"type\": \"pvh\", \"name\": \"tick\"},"
        " \"b_info\": {\"max_vcpus\": 1, \"max_memkb\": 131072},"
        " \"colo_protect\": {\"interval_ms\": 7000}}";

    skip_if_xen();
    offer_json = pj;
    offer("standby", XPRT_HELLO_FLAG_XEN | XPRT_HELLO_FLAG_XEN_REMUS,
          "no Xen hypervisor");
    offer_json = cfg_json;
}

/* An HVM domain whose device model would need more than colo starts is
 * refused before anything is created. */
Test(migrate, receiver_refuses_hvm_with_disks)
{
    static const char hj[] =
        "{\"c_info\": {\"type\": \"hvm\", \"name\": \"tick\"},"
        " \"b_info\": {\"max_vcpus\": 1, \"max_memkb\": 131072},"
        " \"disks\": [{\"vdev\": \"hda\"}]}";

    offer_json = hj;
    offer("receive", XPRT_HELLO_FLAG_XEN, "an HVM domain with disks");
    offer_json = cfg_json;
}

/* The wrong kind of host: each says which command the source needs. */
Test(migrate, wrong_host_kind)
{
    offer("receive", XPRT_HELLO_FLAG_XEN | XPRT_HELLO_FLAG_XEN_REMUS,
          "not 'colo standby'");
    offer("standby", XPRT_HELLO_FLAG_XEN, "not 'colo receive'");
}
