/*
 * Device state through QMP with the real test guest: save on a running
 * primary, load on an incoming-defer secondary that shares a copy of the
 * primary's RAM; the guest's counter and serial output continue there.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "qmp/devstate.h"
#include "qmp/launch.h"
#include "qmp/qmp.h"
#include "qtest.h"
#include "tguest.h"

static struct event_base *base;
static struct tguest *g1;
static struct tguest *g2;
static struct qmp_qemu *sec;
static struct qmp_client *c1;
static char copy_path[512];
static char *serial;

static void setup(void)
{
    base = event_base_new();
    cr_assert(base);
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
    event_base_free(base);
    free(serial);
    serial = NULL;
}

TestSuite(qmp_devstate, .init = setup, .fini = teardown);

struct conrec {
    bool done;
    int rc;
};

static void con_cb(struct qmp_client *c, int rc, void *arg)
{
    struct conrec *r = arg;

    (void)c;
    r->rc = rc;
    r->done = true;
}

struct saverec {
    bool done;
    int rc;
    uint8_t *blob;
    size_t len;
    bool was_running;
};

static void save_cb(struct qmp_client *c, int rc, uint8_t *blob, size_t len,
                    bool was_running, void *arg)
{
    struct saverec *r = arg;

    (void)c;
    r->rc = rc;
    r->blob = blob;
    r->len = len;
    r->was_running = was_running;
    r->done = true;
}

struct loadrec {
    bool done;
    int rc;
    enum qmp_loader loader;
    int calls;
};

static void load_cb(struct qmp_client *c, int rc, enum qmp_loader loader,
                    void *arg)
{
    struct loadrec *r = arg;

    (void)c;
    r->rc = rc;
    r->loader = loader;
    r->calls++;
    r->done = true;
}

static uint32_t file_u32(const char *path, off_t off)
{
    uint32_t v = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    cr_assert(fd >= 0);
    cr_assert_eq(pread(fd, &v, 4, off), 4);
    colo_close(&fd);
    return v;
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

/* Primary running the counter guest; c1 connected; blob saved. */
static void primary_save(struct saverec *sr, uint32_t *ret_counter)
{
    struct tguest_opts o = tguest_opts_default();
    struct conrec cr = {0};

    o.ram_mb = 32;
    cr_assert_eq(tguest_start(&o, &g1), 0);
    cr_assert_eq(tguest_wait_counter_above(g1, 100000, 20000), 0);
    c1 = qmp_client_new(base, NULL);
    cr_assert_eq(qmp_client_connect_path(c1, g1->qmp_path, con_cb, &cr), 0);
    cr_assert(qt_run_until(base, &cr.done, 10000));
    cr_assert_eq(cr.rc, 0, "%s", colo_strerror(cr.rc));
    cr_assert_eq(qmp_devstate_save(c1, 0, save_cb, sr), 0);
    cr_assert(qt_run_until(base, &sr->done, 20000));
    cr_assert_eq(sr->rc, 0, "save: %s", colo_strerror(sr->rc));
    cr_assert(sr->was_running);
    cr_assert_eq(memcmp(sr->blob, "QEVM", 4), 0);
    /* Paused now: the counter stands still. */
    *ret_counter = tguest_counter(g1);
    cr_assert(*ret_counter > 100000);
}

/* A secondary on a copy of the primary's RAM, started by qmp_launch. */
static struct qmp_client *secondary_start(void)
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
    cr_assert_eq(tguest_prepare(&o, &g2), 0);
    argv = tguest_build_argv(&o, g2, -1);
    cr_assert(argv);
    rc = qt_launch(base, argv, NULL, &sec, status, sizeof(status));
    tguest_argv_free(argv);
    cr_assert_eq(rc, 0, "secondary: %s", colo_strerror(rc));
    cr_assert_str_eq(status, "inmigrate");
    return qmp_qemu_client(sec);
}

Test(qmp_devstate, save_primary_load_secondary_continues)
{
    struct saverec sr = {0};
    struct loadrec lr = {0};
    struct qmp_client *c2;
    uint32_t counter1;
    uint32_t off = TGUEST_STATUS_GPA + TGUEST_COUNTER_OFF;

    if (!qt_have_qemu())
        return;
    primary_save(&sr, &counter1);
    c2 = secondary_start();
    cr_assert_eq(file_u32(copy_path, off), counter1,
                 "the copy holds the paused primary's counter");

    cr_assert_eq(qmp_devstate_load(c2, sr.blob, sr.len, 0, load_cb, &lr), 0);
    free(sr.blob);
    cr_assert(qt_run_until(base, &lr.done, 30000));
    cr_assert_eq(lr.rc, 0, "load: %s", colo_strerror(lr.rc));
    cr_assert_eq(lr.loader, QMP_LOADER_INCOMING);
    cr_assert_eq(lr.calls, 1);

    /* The guest continues on the secondary from the primary's value. */
    cr_assert_eq(tguest_wait_counter_above(g2, counter1 + 100000, 20000), 0,
                 "counter continues past %u", counter1);
    cr_assert_eq(tguest_counter(g1), counter1, "primary stays paused");
    /* Its serial output continues: ticks, and no second boot banner. */
    cr_assert_eq(tguest_wait_serial_lines(g2, "tick ", 2, 20000), 0);
    serial = tguest_serial(g2);
    cr_assert(serial);
    cr_assert_null(strstr(serial, "colo-test-guest mode="),
                   "the secondary did not boot again: %s", serial);
    {
        const char *t = strstr(serial, "tick ");
        unsigned long v = strtoul(t + 5, NULL, 16);

        cr_assert(v >= counter1, "tick %lx after %x: %s", v, counter1, serial);
    }
}

struct exitrec {
    bool done;
    int rc;
};

static void exit_cb(struct qmp_qemu *q, int rc, void *arg)
{
    struct exitrec *r = arg;

    (void)q;
    r->rc = rc;
    r->done = true;
}

Test(qmp_devstate, qemu_dies_during_load)
{
    struct saverec sr = {0};
    struct loadrec lr = {0};
    struct exitrec er = {0};
    struct qmp_client *c2;
    uint32_t counter1;

    if (!qt_have_qemu())
        return;
    primary_save(&sr, &counter1);
    c2 = secondary_start();
    qmp_qemu_set_exit_cb(sec, exit_cb, &er);
    /* Corrupt the blob after the header: QEMU 7.2 exits on a failed
     * incoming migration. */
    memset(sr.blob + 8, 0xee, sr.len - 8);
    cr_assert_eq(qmp_devstate_load(c2, sr.blob, sr.len, 0, load_cb, &lr), 0);
    free(sr.blob);
    cr_assert(qt_run_until(base, &lr.done, 30000));
    cr_assert(lr.rc < 0);
    cr_assert(lr.rc == -COLO_EQMP_DISCONNECTED || lr.rc == -COLO_EQMP_GENERIC,
              "rc %s", colo_strerror(lr.rc));
    cr_assert_eq(lr.calls, 1);
    cr_assert(qt_run_until(base, &er.done, 20000));
    cr_assert_eq(er.rc, -COLO_EQEMU_DIED);
    cr_assert(qmp_qemu_exited(sec));
}

Test(qmp_devstate, no_loader_on_a_plain_qemu)
{
    struct qmp_qemu *q = NULL;
    struct loadrec lr = {0};
    static const uint8_t blob[] = "QEVM\0\0\0\3";
    char status[32];
    int rc;

    if (!qt_have_qemu())
        return;
    rc = qt_launch(base, qt_bare_argv(NULL), NULL, &q, status, sizeof(status));
    cr_assert_eq(rc, 0);
    cr_assert_eq(
        qmp_devstate_load(qmp_qemu_client(q), blob, 8, 0, load_cb, &lr), 0);
    cr_assert(qt_run_until(base, &lr.done, 10000));
    cr_assert_eq(lr.rc, -ENOTSUP);
    cr_assert(!qmp_qemu_exited(q), "QEMU was not asked to xen-load");
    cr_assert_eq(
        qmp_devstate_load(qmp_qemu_client(q), blob, 3, 0, load_cb, &lr),
        -EINVAL);
    qmp_qemu_free(q);
}
