/*
 * dbus-vmstate through colo's device-state path with real QEMU 7.2 and a
 * real dbus-daemon: the example helper's state rides in
 * xen-save-devices-state on one QEMU and is loaded by the one-shot
 * incoming load on another; a helper missing on the destination, one
 * returning oversized state and one that hangs each give the named error
 * and leave the source VM running.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/timeutil.h"
#include "dbus.h"
#include "dbustest.h"
#include "qmp/devstate.h"
#include "qmp/launch.h"
#include "qmp/qmp.h"
#include "qtest.h"
#include "tguest.h"

static struct event_base *base;
static char dir1[256], dir2[256];
static struct orch_dbus *d1, *d2;
static json_t *h1, *h2;
static struct tguest *g1, *g2;
static struct qmp_qemu *sec;
static struct qmp_client *c1;
static char copy_path[512];

static void setup(void)
{
    base = event_base_new();
    cr_assert(base);
    dt_tmpdir(dir1, sizeof(dir1));
    dt_tmpdir(dir2, sizeof(dir2));
}

static void teardown(void)
{
    qmp_client_free(c1);
    c1 = NULL;
    qmp_qemu_free(sec);
    sec = NULL;
    tguest_free(g2);
    g2 = NULL;
    tguest_free(g1);
    g1 = NULL;
    if (copy_path[0])
        unlink(copy_path);
    copy_path[0] = '\0';
    orch_dbus_free(d1);
    orch_dbus_free(d2);
    d1 = d2 = NULL;
    json_decref(h1);
    json_decref(h2);
    h1 = h2 = NULL;
    dt_rmdir(dir1);
    dt_rmdir(dir2);
    event_base_free(base);
}

TestSuite(dbus_qemu, .init = setup, .fini = teardown);

static bool can_run(void)
{
    return dt_have_dbus() && qt_have_qemu();
}

struct rec {
    bool done;
    int rc;
    uint8_t *blob;
    size_t len;
    bool was_running;
};

static void con_cb(struct qmp_client *c, int rc, void *arg)
{
    struct rec *r = arg;

    (void)c;
    r->rc = rc;
    r->done = true;
}

static void save_cb(struct qmp_client *c, int rc, uint8_t *blob, size_t len,
                    bool was_running, void *arg)
{
    struct rec *r = arg;

    (void)c;
    r->rc = rc;
    r->blob = blob;
    r->len = len;
    r->was_running = was_running;
    r->done = true;
}

static void load_cb(struct qmp_client *c, int rc, enum qmp_loader l, void *arg)
{
    struct rec *r = arg;

    (void)c;
    (void)l;
    r->rc = rc;
    r->done = true;
}

/* Bus + helpers in dir1 and the source guest with the dbus-vmstate args. */
static void source_start(const char *const *helper_extra, const char *id)
{
    struct orch_dbus_error err;
    struct tguest_opts o = tguest_opts_default();
    struct rec cr = {0};

    h1 = dt_helpers(id, helper_extra);
    cr_assert_eq(orch_dbus_start(dir1, h1, 10000, &d1, &err), 0, "%s",
                 err.text);
    o.ram_mb = 32;
    o.extra_args = orch_dbus_qemu_args(d1);
    cr_assert_eq(tguest_start(&o, &g1), 0);
    cr_assert_eq(tguest_wait_counter_above(g1, 1000, 20000), 0);
    c1 = qmp_client_new(base, NULL);
    cr_assert_eq(qmp_client_connect_path(c1, g1->qmp_path, con_cb, &cr), 0);
    cr_assert(qt_run_until(base, &cr.done, 10000));
    cr_assert_eq(cr.rc, 0, "%s", colo_strerror(cr.rc));
}

static void save(unsigned flags, struct rec *sr, int ms)
{
    cr_assert_eq(qmp_devstate_save(c1, flags, save_cb, sr), 0);
    cr_assert(qt_run_until(base, &sr->done, ms));
}

static void assert_source_running(void)
{
    uint32_t v = tguest_counter(g1);

    cr_assert_eq(tguest_wait_counter_above(g1, v + 1000, 20000), 0,
                 "the source VM runs on");
}

static void copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    struct stat st;
    off_t off = 0;

    cr_assert(in >= 0 && out >= 0);
    cr_assert_eq(fstat(in, &st), 0);
    while (off < st.st_size)
        cr_assert(sendfile(out, in, &off, (size_t)(st.st_size - off)) > 0);
    colo_close(&in);
    colo_close(&out);
}

/* Destination QEMU (incoming defer) on a copy of the source RAM, with the
 * dbus-vmstate args of d2. */
static struct qmp_client *destination_start(void)
{
    struct tguest_opts o = tguest_opts_default();
    char status[32] = "";
    char **argv;
    int rc;

    o.ram_mb = 32;
    snprintf(copy_path, sizeof(copy_path), "%s.copy", g1->ram_path);
    copy_file(g1->ram_path, copy_path);
    o.ram_path = copy_path;
    o.paused = true;
    o.incoming_defer = true;
    o.no_kernel = true;
    o.extra_args = orch_dbus_qemu_args(d2);
    cr_assert_eq(tguest_prepare(&o, &g2), 0);
    argv = tguest_build_argv(&o, g2, -1);
    cr_assert(argv);
    rc = qt_launch(base, argv, NULL, &sec, status, sizeof(status));
    tguest_argv_free(argv);
    cr_assert_eq(rc, 0, "destination: %s", colo_strerror(rc));
    cr_assert_str_eq(status, "inmigrate");
    return qmp_qemu_client(sec);
}

Test(dbus_qemu, helper_state_survives_save_and_load)
{
    struct orch_dbus_error err;
    struct rec sr = {0}, lr = {0};
    uint64_t saved, loaded;

    if (!can_run())
        return;
    source_start(NULL, "counter");
    save(0, &sr, 20000);
    cr_assert_eq(sr.rc, 0, "save: %s", colo_strerror(sr.rc));
    cr_assert(sr.was_running);
    cr_assert_eq(orch_dbus_check_blob(d1, sr.blob, sr.len, &err), 0, "%s",
                 err.text);
    saved = dt_helper_prop(orch_dbus_address(d1), "LastSaved");
    cr_assert(saved > 0, "the helper counted before the stop");

    h2 = dt_helpers("counter", NULL);
    cr_assert_eq(orch_dbus_start(dir2, h2, 10000, &d2, &err), 0, "%s",
                 err.text);
    cr_assert_eq(orch_dbus_compare(d1, h2, &err), 0, "%s", err.text);
    cr_assert_eq(dt_helper_prop(orch_dbus_address(d2), "Loads"), 0);
    cr_assert_eq(qmp_devstate_load(destination_start(), sr.blob, sr.len, 0,
                                   load_cb, &lr),
                 0);
    free(sr.blob);
    cr_assert(qt_run_until(base, &lr.done, 30000));
    cr_assert_eq(lr.rc, 0, "load: %s", colo_strerror(lr.rc));
    loaded = dt_helper_prop(orch_dbus_address(d2), "LastLoaded");
    cr_assert_eq(loaded, saved,
                 "destination helper loaded %llu, source "
                 "saved %llu",
                 (unsigned long long)loaded, (unsigned long long)saved);
    cr_assert_eq(dt_helper_prop(orch_dbus_address(d2), "Loads"), 1);
    cr_assert(dt_helper_prop(orch_dbus_address(d2), "Counter") >= saved);
    /* and the guest itself goes on there */
    cr_assert_eq(
        tguest_wait_counter_above(g2, tguest_counter(g1) + 1000, 20000), 0);
}

Test(dbus_qemu, helper_missing_on_destination)
{
    struct orch_dbus_error err;
    struct rec sr = {0}, lr = {0};
    json_t *none = json_array();

    if (!can_run())
        return;
    source_start(NULL, "counter");
    /* The peer's config lacks the helper: refused before anything stops. */
    cr_assert_eq(orch_dbus_compare(d1, none, &err), -ENOENT);
    json_decref(none);
    cr_assert_str_eq(err.helper, "counter");
    cr_assert(strstr(err.text, "\"counter\" is missing on the peer"), "%s",
              err.text);
    /* The peer lists it but it never appears on its bus. */
    h2 = json_pack("[{s:s,s:[ss]}]", "id", "counter", "command", "sleep", "60");
    cr_assert_eq(orch_dbus_start(dir2, h2, 500, &d2, &err), -ENOENT);
    cr_assert_str_eq(err.helper, "counter");
    cr_assert(strstr(err.text, "\"counter\" is not on the bus"), "%s",
              err.text);
    assert_source_running();

    /* What QEMU does without the check: the destination bus has another
     * helper only; the load fails (the stream's "counter" has no owner). */
    json_decref(h2);
    h2 = dt_helpers("other", NULL);
    cr_assert_eq(orch_dbus_start(dir2, h2, 10000, &d2, &err), 0, "%s",
                 err.text);
    save(QMP_SAVE_RESUME, &sr, 20000);
    cr_assert_eq(sr.rc, 0, "save: %s", colo_strerror(sr.rc));
    assert_source_running();
    cr_assert_eq(qmp_devstate_load(destination_start(), sr.blob, sr.len,
                                   QMP_LOAD_PAUSED, load_cb, &lr),
                 0);
    free(sr.blob);
    cr_assert(qt_run_until(base, &lr.done, 30000));
    cr_assert(lr.rc < 0, "QEMU refuses the load");
    cr_assert_eq(dt_helper_prop(orch_dbus_address(d2), "Loads"), 0);
    assert_source_running();
}

Test(dbus_qemu, oversized_state_named)
{
    struct orch_dbus_error err;
    struct rec sr = {0};
    const char *big[] = {"--save-bytes", "2000000", NULL};

    if (!can_run())
        return;
    source_start(big, "big");
    cr_assert_eq(orch_dbus_check(d1, ORCH_DBUS_CHECK_SAVE, 10000, &err),
                 -EMSGSIZE);
    cr_assert_str_eq(err.helper, "big");
    cr_assert(strstr(err.text, "2000000 bytes"), "%s", err.text);
    assert_source_running();
    /* QEMU 7.2 itself only logs "Too large vmstate data to save" and
     * succeeds without the helper's state: the blob check names it. */
    save(QMP_SAVE_RESUME, &sr, 20000);
    cr_assert_eq(sr.rc, 0, "save: %s", colo_strerror(sr.rc));
    cr_assert_eq(orch_dbus_check_blob(d1, sr.blob, sr.len, &err), -ENOENT);
    free(sr.blob);
    cr_assert_str_eq(err.helper, "big");
    assert_source_running();
}

Test(dbus_qemu, hanging_helper_named)
{
    struct orch_dbus_error err;
    struct rec sr = {0};
    const char *hang[] = {"--hang-save", NULL};

    if (!can_run())
        return;
    source_start(hang, "stuck");
    cr_assert_eq(orch_dbus_check(d1, ORCH_DBUS_CHECK_SAVE, 1000, &err),
                 -ETIMEDOUT);
    cr_assert_str_eq(err.helper, "stuck");
    assert_source_running();
    /* QEMU waits D-Bus's 25 s default, logs "Failed to Save: Timeout was
     * reached" and succeeds without the state: the blob check names it. */
    save(QMP_SAVE_RESUME, &sr, 60000);
    cr_assert_eq(sr.rc, 0, "save: %s", colo_strerror(sr.rc));
    cr_assert_eq(orch_dbus_check_blob(d1, sr.blob, sr.len, &err), -ENOENT);
    free(sr.blob);
    cr_assert_str_eq(err.helper, "stuck");
    assert_source_running();
}

/*
 * Checkpoints then failover, as colo does it with the one-shot loader: the
 * primary saves the device state at every checkpoint (the VM resumes in
 * between, the helper keeps counting); the secondary loads the last
 * committed blob at takeover. Its helper must hold the value saved at that
 * last checkpoint, not an earlier one.
 */
Test(dbus_qemu, failover_gets_last_checkpoint_state)
{
    struct orch_dbus_error err;
    struct rec lr = {0};
    struct qmp_saver *sv;
    uint8_t *last = NULL;
    size_t last_len = 0;
    uint64_t prev = 0, saved = 0;

    if (!can_run())
        return;
    source_start(NULL, "counter");
    h2 = dt_helpers("counter", NULL);
    cr_assert_eq(orch_dbus_start(dir2, h2, 10000, &d2, &err), 0, "%s",
                 err.text);
    cr_assert_eq(orch_dbus_compare(d1, h2, &err), 0, "%s", err.text);
    cr_assert_eq(orch_dbus_check(d1, ORCH_DBUS_CHECK_SAVE, 5000, &err), 0, "%s",
                 err.text);
    cr_assert_eq(qmp_saver_new(c1, &sv), 0);
    for (int i = 0; i < 3; i++) {
        struct rec sr = {0};
        uint64_t c0 = dt_helper_prop(orch_dbus_address(d1), "Counter");

        /* let the helper's counter move between checkpoints (bounded) */
        uint64_t until = colo_now_ns() + 10ull * 1000000000;

        while (dt_helper_prop(orch_dbus_address(d1), "Counter") < c0 + 5)
            cr_assert(colo_now_ns() < until, "the helper counts");
        cr_assert_eq(qmp_saver_save(sv, QMP_SAVE_RESUME, save_cb, &sr), 0);
        cr_assert(qt_run_until(base, &sr.done, 20000));
        cr_assert_eq(sr.rc, 0, "checkpoint %d: %s", i, colo_strerror(sr.rc));
        cr_assert_eq(orch_dbus_check_blob(d1, sr.blob, sr.len, &err), 0, "%s",
                     err.text);
        saved = dt_helper_prop(orch_dbus_address(d1), "LastSaved");
        cr_assert(saved > prev, "checkpoint %d: %llu after %llu", i,
                  (unsigned long long)saved, (unsigned long long)prev);
        prev = saved;
        free(last);
        last = sr.blob;
        last_len = sr.len;
    }
    qmp_saver_free(sv);
    /* failover: the secondary takes the last committed checkpoint */
    cr_assert_eq(
        qmp_devstate_load(destination_start(), last, last_len, 0, load_cb, &lr),
        0);
    free(last);
    cr_assert(qt_run_until(base, &lr.done, 30000));
    cr_assert_eq(lr.rc, 0, "load: %s", colo_strerror(lr.rc));
    cr_assert_eq(dt_helper_prop(orch_dbus_address(d2), "LastLoaded"), saved);
    cr_assert_eq(dt_helper_prop(orch_dbus_address(d2), "Loads"), 1);
}
