/*
 * checkpoint.outbuf: the filter objects output commit keeps in a real QEMU
 * 7.2 (bare, a hubport netdev), read back with qom-list: one filter-buffer
 * per held epoch and one filter-dump for the open epoch; an ACK removes
 * exactly the older epochs; release_all removes everything; a filter QEMU
 * refuses calls failed() once. (What the buffers do to real packets is
 * ha.output_remus's business, with the Linux guest and a recording peer.)
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/outbuf.h"
#include "common/error.h"
#include "qmp/launch.h"
#include "qmp/qmp.h"
#include "qtest.h"

static struct event_base *base;
static struct qmp_qemu *qemu;
static char dir[] = "/tmp/colo-outbuf-XXXXXX";

static void setup(void)
{
    base = event_base_new();
    cr_assert(base);
    qemu = NULL;
    strcpy(dir, "/tmp/colo-outbuf-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];

    qmp_qemu_free(qemu);
    qemu = NULL;
    event_base_free(base);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

TestSuite(outbuf, .init = setup, .fini = teardown, .timeout = 60);

static struct qmp_client *start(void)
{
    static const char *const extra[] = {"-netdev", "hubport,id=n0,hubid=0",
                                        NULL};
    char status[32] = "";
    int rc;

    rc = qt_launch(base, qt_bare_argv(extra), NULL, &qemu, status,
                   sizeof(status));
    cr_assert_eq(rc, 0, "launch: %s", colo_strerror(rc));
    return qmp_qemu_client(qemu);
}

/* qom-list /objects: the names, space-separated and sorted by QEMU. */
struct objs {
    bool done;
    char names[2048];
};

static void list_cb(struct qmp_client *c, int rc, json_t *ret, const char *desc,
                    void *arg)
{
    struct objs *o = arg;
    json_t *e;
    size_t i;

    (void)c;
    (void)desc;
    o->names[0] = '\0';
    if (rc >= 0)
        json_array_foreach(ret, i, e)
        {
            const char *n = json_string_value(json_object_get(e, "name"));

            if (n && !strncmp(n, "colo-", 5)) {
                strncat(o->names, n, sizeof(o->names) - strlen(o->names) - 2);
                strcat(o->names, " ");
            }
        }
    o->done = true;
}

/* The colo-* objects now (after every command queued before). */
static const char *colo_objects(struct qmp_client *c, struct objs *o)
{
    json_t *a = json_pack("{s:s}", "path", "/objects");

    o->done = false;
    cr_assert_eq(qmp_send(c, "qom-list", a, -1, 5000, list_cb, o, NULL), 0);
    json_decref(a);
    cr_assert(qt_run_until(base, &o->done, 10000));
    return o->names;
}

static bool has(const char *names, const char *id)
{
    char w[80];

    snprintf(w, sizeof(w), "%s ", id);
    return strstr(names, w) != NULL;
}

struct fail_rec {
    int calls, rc;
};

static void on_failed(void *arg, int rc)
{
    struct fail_rec *f = arg;

    f->calls++;
    f->rc = rc;
}

Test(outbuf, epochs_acks_and_release_all)
{
    static const char *const nds[] = {"n0"};
    struct fail_rec fr = {0};
    struct ckpt_outbuf_opts oo = {.dir = dir,
                                  .netdevs = nds,
                                  .n_netdevs = 1,
                                  .failed = on_failed,
                                  .arg = &fr};
    struct ckpt_outbuf_stats st;
    struct ckpt_outbuf *o;
    struct qmp_client *c;
    struct objs ob;
    const char *s;
    char pcap[300];

    if (!qt_have_qemu())
        return;
    c = start();
    cr_assert_eq(ckpt_outbuf_new(base, c, &oo, &o), 0);
    cr_assert_eq(ckpt_outbuf_epoch(o, 1), 0);
    s = colo_objects(c, &ob);
    cr_assert(has(s, "colo-ob-n0-1") && has(s, "colo-od-n0-1"), "%s", s);
    snprintf(pcap, sizeof(pcap), "%s/out-n0-1.pcap", dir);
    cr_assert_eq(access(pcap, F_OK), 0, "the epoch's dump file");
    /* Checkpoint 2 paused: a new epoch; the old dump goes, both buffers
     * stay (epoch 1 is released only by ACK(2)). */
    cr_assert_eq(ckpt_outbuf_epoch(o, 2), 0);
    s = colo_objects(c, &ob);
    cr_assert(has(s, "colo-ob-n0-1") && has(s, "colo-ob-n0-2") &&
                  has(s, "colo-od-n0-2") && !has(s, "colo-od-n0-1"),
              "%s", s);
    ckpt_outbuf_get_stats(o, &st);
    cr_assert_eq(st.epochs_held, 2);
    /* ACK(1) releases nothing: epoch 1 is in checkpoint 2. */
    ckpt_outbuf_commit(o, 1);
    s = colo_objects(c, &ob);
    cr_assert(has(s, "colo-ob-n0-1"), "ACK(1) released epoch 1: %s", s);
    /* ACK(2) releases exactly epoch 1. */
    ckpt_outbuf_commit(o, 2);
    s = colo_objects(c, &ob);
    cr_assert(!has(s, "colo-ob-n0-1") && has(s, "colo-ob-n0-2"), "%s", s);
    cr_assert_eq(access(pcap, F_OK), -1, "a released epoch's file is gone");
    /* An epoch number going back is refused. */
    cr_assert_eq(ckpt_outbuf_epoch(o, 2), -EINVAL);
    ckpt_outbuf_release_all(o);
    s = colo_objects(c, &ob);
    cr_assert_str_eq(s, "", "release_all left %s", s);
    ckpt_outbuf_get_stats(o, &st);
    cr_assert_eq(st.epochs_held, 0);
    cr_assert_eq(st.held, 0);
    cr_assert_eq(st.errors, 0);
    cr_assert_eq(fr.calls, 0);
    ckpt_outbuf_free(o);
}

Test(outbuf, refused_filter_calls_failed_once)
{
    static const char *const nds[] = {"n0"};
    struct fail_rec fr = {0};
    struct ckpt_outbuf_opts oo = {.dir = "/nonexistent/colo-outbuf",
                                  .netdevs = nds,
                                  .n_netdevs = 1,
                                  .failed = on_failed,
                                  .arg = &fr};
    struct ckpt_outbuf_stats st;
    struct ckpt_outbuf *o;
    struct qmp_client *c;
    struct objs ob;

    if (!qt_have_qemu())
        return;
    c = start();
    cr_assert_eq(ckpt_outbuf_new(base, c, &oo, &o), 0);
    /* QEMU cannot open the dump file: the object-add is refused. */
    cr_assert_eq(ckpt_outbuf_epoch(o, 1), 0);
    colo_objects(c, &ob);
    cr_assert_eq(fr.calls, 1, "failed() calls: %d", fr.calls);
    cr_assert_lt(fr.rc, 0);
    ckpt_outbuf_get_stats(o, &st);
    cr_assert_geq(st.errors, 1);
    ckpt_outbuf_release_all(o);
    colo_objects(c, &ob);
    cr_assert_eq(fr.calls, 1, "failed() more than once");
    ckpt_outbuf_free(o);
    {
        struct ckpt_outbuf_opts none = {.dir = dir};

        cr_assert_eq(ckpt_outbuf_new(base, c, &none, &o), -EINVAL,
                     "no netdevs: refused");
        cr_assert_null(o);
    }
}
