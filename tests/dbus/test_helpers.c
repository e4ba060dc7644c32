/*
 * orchestrator/dbus with a real dbus-daemon and the example helper:
 * bus and helpers up and down, the QEMU args, Id comparison, and the
 * named errors for a helper that exits, never registers, returns too
 * much state (at and over the 1 MiB cap) or hangs in Save.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/error.h"
#include "common/fd.h"
#include "dbus.h"
#include "dbustest.h"
#include "tloop.h"

static char dir[256];
static struct orch_dbus *d;
static json_t *helpers;

static void setup(void)
{
    dt_tmpdir(dir, sizeof(dir));
}

static void teardown(void)
{
    orch_dbus_free(d);
    d = NULL;
    json_decref(helpers);
    helpers = NULL;
    dt_rmdir(dir);
}

TestSuite(dbus, .init = setup, .fini = teardown);

static bool exists(const char *name)
{
    char p[512];
    struct stat st;

    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return stat(p, &st) == 0;
}

Test(dbus, start_args_check_free)
{
    struct orch_dbus_error err;
    const char *const *args;
    char want[1200];
    char *esc;

    int fds0 = colo_count_open_fds();

    if (!dt_have_dbus())
        return;
    helpers = json_pack("[{s:s,s:[sss]},{s:s,s:[sss]}]", "id", "a", "command",
                        dt_helper_path(), "--id", "a", "id", "b", "command",
                        dt_helper_path(), "--id", "b");
    cr_assert_eq(orch_dbus_start(dir, helpers, 10000, &d, &err), 0, "%s",
                 err.text);
    cr_assert(orch_dbus_active(d));
    cr_assert(exists("dbus.sock"));
    cr_assert(exists("dbus.conf"));
    cr_assert_eq(strncmp(orch_dbus_address(d), "unix:path=", 10), 0);
    cr_assert(strstr(orch_dbus_address(d), dir));
    cr_assert_eq(orch_dbus_id_count(d), 2);
    cr_assert_str_eq(orch_dbus_id(d, 0), "a");
    cr_assert_str_eq(orch_dbus_id(d, 1), "b");
    cr_assert_null(orch_dbus_id(d, 2));
    args = orch_dbus_qemu_args(d);
    cr_assert_str_eq(args[0], "-object");
    esc = strdup(orch_dbus_address(d));
    /* The address has a comma (",guid="): doubled for QEMU. */
    cr_assert(strchr(esc, ','));
    free(esc);
    cr_assert(strstr(args[1], ",,guid="));
    snprintf(want, sizeof(want), "dbus-vmstate,id=colo-dbus,addr=");
    cr_assert_eq(strncmp(args[1], want, strlen(want)), 0, "%s", args[1]);
    cr_assert(strstr(args[1], ",id-list=a,,b"), "%s", args[1]);
    cr_assert_null(args[2]);
    /* The counter moves. */
    {
        uint64_t c1 = dt_helper_prop(orch_dbus_address(d), "Counter"), c2;
        uint64_t t0 = 0;

        do {
            c2 = dt_helper_prop(orch_dbus_address(d), "Counter");
        } while (c2 == c1 && ++t0 < 100000);
        cr_assert(c2 > c1);
    }
    cr_assert_eq(orch_dbus_check(d, ORCH_DBUS_CHECK_SAVE, 5000, &err), 0, "%s",
                 err.text);
    orch_dbus_free(d);
    d = NULL;
    cr_assert_not(exists("dbus.sock"), "socket removed");
    cr_assert_not(exists("dbus.conf"), "config removed");
    cr_assert_eq(colo_count_open_fds(), fds0, "no fd left open");
}

Test(dbus, no_helpers)
{
    struct orch_dbus_error err;

    cr_assert_eq(orch_dbus_start(dir, NULL, 1000, &d, &err), 0);
    cr_assert_not(orch_dbus_active(d));
    cr_assert_null(orch_dbus_address(d));
    cr_assert_null(orch_dbus_qemu_args(d)[0]);
    cr_assert_eq(orch_dbus_check(d, ORCH_DBUS_CHECK_SAVE, 100, &err), 0);
    cr_assert_eq(orch_dbus_check_blob(d, (const uint8_t *)"x", 1, &err), 0);
    cr_assert_not(exists("dbus.sock"));
}

Test(dbus, bad_config)
{
    struct orch_dbus_error err;

    helpers = json_pack("[{s:s,s:[s]}]", "id", "a,b", "command", "true");
    cr_assert_eq(orch_dbus_start(dir, helpers, 1000, &d, &err), -COLO_ECONFIG);
    cr_assert(strstr(err.text, "$.helpers[0].id"), "%s", err.text);
    json_decref(helpers);
    helpers = json_pack("[{s:s,s:[s]},{s:s,s:[s]}]", "id", "a", "command",
                        "true", "id", "a", "command", "true");
    cr_assert_eq(orch_dbus_start(dir, helpers, 1000, &d, &err), -COLO_ECONFIG);
    cr_assert(strstr(err.text, "duplicate"), "%s", err.text);
    json_decref(helpers);
    helpers = json_pack("[{s:s,s:[]}]", "id", "a", "command");
    cr_assert_eq(orch_dbus_start(dir, helpers, 1000, &d, &err), -COLO_ECONFIG);
    cr_assert_str_eq(err.helper, "a");
    cr_assert_null(d);
}

Test(dbus, helper_exits_is_named)
{
    struct orch_dbus_error err;

    if (!dt_have_dbus())
        return;
    helpers = json_pack("[{s:s,s:[s]}]", "id", "quitter", "command", "false");
    cr_assert_eq(orch_dbus_start(dir, helpers, 10000, &d, &err), -COLO_EHELPER);
    cr_assert_str_eq(err.helper, "quitter");
    cr_assert(strstr(err.text, "\"quitter\" exited with status 1"), "%s",
              err.text);
    cr_assert_null(d);
    cr_assert_not(exists("dbus.sock"), "bus stopped on failure");
}

Test(dbus, helper_never_on_bus_is_named)
{
    struct orch_dbus_error err;

    if (!dt_have_dbus())
        return;
    helpers =
        json_pack("[{s:s,s:[ss]}]", "id", "sleepy", "command", "sleep", "60");
    cr_assert_eq(orch_dbus_start(dir, helpers, 600, &d, &err), -ENOENT, "%s",
                 err.text);
    cr_assert_str_eq(err.helper, "sleepy");
    cr_assert(strstr(err.text, "\"sleepy\" is not on the bus"), "%s", err.text);
    cr_assert_null(d);
}

Test(dbus, compare_names_the_missing_helper)
{
    struct orch_dbus_error err;
    json_t *peer;

    if (!dt_have_dbus())
        return;
    helpers = dt_helpers("counter", NULL);
    cr_assert_eq(orch_dbus_start(dir, helpers, 10000, &d, &err), 0, "%s",
                 err.text);
    cr_assert_eq(orch_dbus_compare(d, helpers, &err), 0, "%s", err.text);
    peer = json_array();
    cr_assert_eq(orch_dbus_compare(d, peer, &err), -ENOENT);
    cr_assert_str_eq(err.helper, "counter");
    cr_assert(strstr(err.text, "missing on the peer"), "%s", err.text);
    json_decref(peer);
    peer = json_pack("[{s:s},{s:s}]", "id", "counter", "id", "extra");
    cr_assert_eq(orch_dbus_compare(d, peer, &err), -ENOENT);
    cr_assert_str_eq(err.helper, "extra");
    json_decref(peer);
    peer = json_pack("[{s:i}]", "id", 3);
    cr_assert_eq(orch_dbus_compare(d, peer, &err), -COLO_ECONFIG);
    json_decref(peer);
}

Test(dbus, save_at_cap_ok_over_cap_named)
{
    struct orch_dbus_error err;
    const char *at[] = {"--save-bytes", "1048576", NULL};
    const char *over[] = {"--save-bytes", "1048577", NULL};

    if (!dt_have_dbus())
        return;
    helpers = dt_helpers("big", at);
    cr_assert_eq(orch_dbus_start(dir, helpers, 10000, &d, &err), 0, "%s",
                 err.text);
    cr_assert_eq(orch_dbus_check(d, ORCH_DBUS_CHECK_SAVE, 10000, &err), 0,
                 "at the cap: %s", err.text);
    orch_dbus_free(d);
    d = NULL;
    json_decref(helpers);
    helpers = dt_helpers("big", over);
    cr_assert_eq(orch_dbus_start(dir, helpers, 10000, &d, &err), 0, "%s",
                 err.text);
    cr_assert_eq(orch_dbus_check(d, 0, 5000, &err), 0, "%s", err.text);
    cr_assert_eq(orch_dbus_check(d, ORCH_DBUS_CHECK_SAVE, 10000, &err),
                 -EMSGSIZE);
    cr_assert_str_eq(err.helper, "big");
    cr_assert(strstr(err.text, "1048577 bytes"), "%s", err.text);
}

Test(dbus, hanging_save_named)
{
    struct orch_dbus_error err;
    const char *hang[] = {"--hang-save", NULL};

    if (!dt_have_dbus())
        return;
    helpers = dt_helpers("stuck", hang);
    cr_assert_eq(orch_dbus_start(dir, helpers, 10000, &d, &err), 0, "%s",
                 err.text);
    cr_assert_eq(orch_dbus_check(d, ORCH_DBUS_CHECK_SAVE, 700, &err),
                 -ETIMEDOUT);
    cr_assert_str_eq(err.helper, "stuck");
    cr_assert(strstr(err.text, "did not answer within 700 ms"), "%s", err.text);
}

/* A fake device-state blob around a dbus-vmstate section. */
static size_t mkblob(uint8_t *b, const uint8_t *data, uint32_t claimed,
                     size_t real)
{
    static const char idstr[] = "\x19"
                                "dbus-vmstate/dbus-vmstate";
    size_t n = 0;

    memcpy(b, "QEVM\0\0\0\3\4\0\0\0\1", 13);
    n = 13;
    memcpy(b + n, idstr, sizeof(idstr) - 1);
    n += sizeof(idstr) - 1;
    memset(b + n, 0, 8);
    n += 8;
    b[n++] = (uint8_t)(claimed >> 24);
    b[n++] = (uint8_t)(claimed >> 16);
    b[n++] = (uint8_t)(claimed >> 8);
    b[n++] = (uint8_t)claimed;
    memcpy(b + n, data, real);
    return n + real;
}

Test(dbus, blob_parser_bounds)
{
    struct orch_dbus_error err;
    /* header, "a" with 2 bytes, then padding */
    static const uint8_t good[] = {0, 0, 0, 1, 0, 0, 0, 1, 'a', 0,
                                   0, 0, 2, 7, 7, 0, 0, 0, 0,   0};
    static const uint8_t other[] = {0, 0, 0, 1, 0, 0, 0, 1, 'b', 0, 0, 0, 0};
    static const uint8_t long_id[] = {0, 0, 0, 1, 0, 0, 0, 200, 'a'};
    static const uint8_t long_data[] = {0,   0,    0, 1, 0, 0, 0, 1,
                                        'a', 0xff, 0, 0, 0, 0, 0, 0};
    uint8_t b[256];
    size_t n;

    if (!dt_have_dbus())
        return;
    helpers = dt_helpers("a", NULL);
    cr_assert_eq(orch_dbus_start(dir, helpers, 10000, &d, &err), 0, "%s",
                 err.text);
    n = mkblob(b, good, sizeof(good), sizeof(good));
    cr_assert_eq(orch_dbus_check_blob(d, b, n, &err), 0, "%s", err.text);
    n = mkblob(b, other, sizeof(other), sizeof(other));
    cr_assert_eq(orch_dbus_check_blob(d, b, n, &err), -ENOENT);
    cr_assert_str_eq(err.helper, "a");
    /* the section claims more than the blob holds */
    n = mkblob(b, good, sizeof(good) + 1, sizeof(good));
    cr_assert_eq(orch_dbus_check_blob(d, b, n, &err), -COLO_ESTREAM_CORRUPT);
    /* an id or data length past the section */
    n = mkblob(b, long_id, sizeof(long_id), sizeof(long_id));
    cr_assert_eq(orch_dbus_check_blob(d, b, n, &err), -COLO_ESTREAM_CORRUPT);
    n = mkblob(b, long_data, sizeof(long_data), sizeof(long_data));
    cr_assert_eq(orch_dbus_check_blob(d, b, n, &err), -COLO_ESTREAM_CORRUPT);
    /* cut anywhere: never reads past len */
    n = mkblob(b, good, sizeof(good), sizeof(good));
    for (size_t cut = 0; cut < n; cut++)
        cr_assert_neq(orch_dbus_check_blob(d, b, cut, &err), 0);
    cr_assert_eq(orch_dbus_check_blob(d, (const uint8_t *)"QEVM", 4, &err),
                 -COLO_ESTREAM_CORRUPT);
}

struct checkrec {
    bool done;
    int rc, calls;
    struct orch_dbus_error err;
};

static void check_cb(struct orch_dbus *dd, int rc,
                     const struct orch_dbus_error *e, void *arg)
{
    struct checkrec *r = arg;

    (void)dd;
    r->rc = rc;
    r->err = *e;
    r->calls++;
    r->done = true;
}

/* Run the loop until r->done or ms elapsed (tloop.h). */
static bool run_until(struct event_base *b, struct checkrec *r, int ms)
{
    return tloop_until_flag(b, &r->done, (unsigned)ms);
}

Test(dbus, async_check_ok_hang_and_cancel)
{
    struct orch_dbus_error err;
    struct event_base *b = event_base_new();
    struct checkrec ok = {0}, hung = {0}, none = {0}, cancelled = {0};
    const char *hang[] = {"--hang-save", NULL};
    struct orch_dbus *empty;
    int fds0 = colo_count_open_fds();

    cr_assert(b);
    cr_assert_eq(orch_dbus_start(dir, NULL, 1000, &empty, &err), 0);
    cr_assert_eq(orch_dbus_check_start(empty, b, ORCH_DBUS_CHECK_SAVE, 100,
                                       check_cb, &none),
                 0);
    cr_assert_not(none.done, "never from inside the start call");
    cr_assert(run_until(b, &none, 5000));
    cr_assert_eq(none.rc, 0);
    orch_dbus_free(empty);
    if (!dt_have_dbus()) {
        event_base_free(b);
        return;
    }
    helpers = dt_helpers("counter", NULL);
    cr_assert_eq(orch_dbus_start(dir, helpers, 10000, &d, &err), 0, "%s",
                 err.text);
    cr_assert_eq(
        orch_dbus_check_start(d, b, ORCH_DBUS_CHECK_SAVE, 5000, check_cb, &ok),
        0);
    cr_assert_eq(orch_dbus_check_start(d, b, 0, 5000, check_cb, &ok), -EBUSY);
    cr_assert(run_until(b, &ok, 10000));
    cr_assert_eq(ok.rc, 0, "%s", ok.err.text);
    cr_assert_eq(ok.calls, 1);
    orch_dbus_free(d);
    d = NULL;
    json_decref(helpers);

    helpers = dt_helpers("stuck", hang);
    cr_assert_eq(orch_dbus_start(dir, helpers, 10000, &d, &err), 0, "%s",
                 err.text);
    cr_assert_eq(
        orch_dbus_check_start(d, b, ORCH_DBUS_CHECK_SAVE, 700, check_cb, &hung),
        0);
    cr_assert(run_until(b, &hung, 10000));
    cr_assert_eq(hung.rc, -ETIMEDOUT, "%s", hung.err.text);
    cr_assert_str_eq(hung.err.helper, "stuck");
    /* freed while a check runs: no callback, the child is reaped */
    cr_assert_eq(orch_dbus_check_start(d, b, ORCH_DBUS_CHECK_SAVE, 5000,
                                       check_cb, &cancelled),
                 0);
    orch_dbus_free(d);
    d = NULL;
    event_base_loop(b, EVLOOP_NONBLOCK);
    cr_assert_not(cancelled.done);
    cr_assert_eq(colo_count_open_fds(), fds0, "no fd left open");
    event_base_free(b);
}

Test(dbus, async_start_ok_and_helper_exit)
{
    struct orch_dbus_error err;
    struct event_base *b = event_base_new();
    struct checkrec up = {0}, quit = {0};

    cr_assert(b);
    if (!dt_have_dbus()) {
        event_base_free(b);
        return;
    }
    /* A helper that takes 300 ms to get on the bus: the start waits. */
    helpers =
        json_pack("[{s:s,s:[ssss]}]", "id", "counter", "command", "sh", "-c",
                  "sleep 0.3 && exec \"$0\" --id counter", dt_helper_path());
    cr_assert_eq(
        orch_dbus_start_async(b, dir, helpers, 10000, check_cb, &up, &d, &err),
        0, "%s", err.text);
    cr_assert_not(up.done, "never from inside the start call");
    cr_assert_null(orch_dbus_qemu_args(d)[0], "no args before the Ids");
    cr_assert(run_until(b, &up, 15000));
    cr_assert_eq(up.rc, 0, "%s", up.err.text);
    cr_assert_eq(up.calls, 1);
    cr_assert(strstr(orch_dbus_qemu_args(d)[1], "id-list=counter"));
    cr_assert_eq(dt_helper_prop(orch_dbus_address(d), "Loads"), 0);
    orch_dbus_free(d);
    d = NULL;
    json_decref(helpers);

    helpers = json_pack("[{s:s,s:[sss]}]", "id", "quitter", "command", "sh",
                        "-c", "exit 3");
    cr_assert_eq(orch_dbus_start_async(b, dir, helpers, 10000, check_cb, &quit,
                                       &d, &err),
                 0, "%s", err.text);
    cr_assert(run_until(b, &quit, 15000));
    cr_assert_eq(quit.rc, -COLO_EHELPER, "%s", quit.err.text);
    cr_assert_str_eq(quit.err.helper, "quitter");
    cr_assert(strstr(quit.err.text, "exited with status 3"), "%s",
              quit.err.text);
    orch_dbus_free(d);
    d = NULL;
    event_base_free(b);
}
