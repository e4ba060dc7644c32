#include "dbustest.h"

#include <criterion/criterion.h>
#include <dbus/dbus.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool in_path(const char *name)
{
    const char *path = getenv("PATH");
    char buf[4096];

    if (!path)
        path = "/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");

        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, name);
        if (access(buf, X_OK) == 0)
            return true;
        path += n;
        if (*path == ':')
            path++;
    }
    return false;
}

bool dt_have_dbus(void)
{
    if (!in_path("dbus-daemon") || !in_path("dbus-send")) {
        cr_skip_test("dbus-daemon or dbus-send not installed (package dbus)");
    }
    return true;
}

const char *dt_helper_path(void)
{
    return COLO_DBUS_HELPER; /* examples/dbus-helper builds it */
}

void dt_tmpdir(char *buf, size_t sz)
{
    snprintf(buf, sz, "/tmp/colo-dbus-XXXXXX");
    cr_assert(mkdtemp(buf));
}

void dt_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[4096];

    if (!d)
        return;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

json_t *dt_helpers(const char *id, const char *const *extra)
{
    json_t *cmd = json_pack("[sss]", dt_helper_path(), "--id", id);

    for (; extra && *extra; extra++)
        json_array_append_new(cmd, json_string(*extra));
    return json_pack("[{s:s,s:o}]", "id", id, "command", cmd);
}

uint64_t dt_helper_prop(const char *addr, const char *name)
{
    const char *iface = "org.colo.ExampleHelper1";
    DBusConnection *c;
    DBusMessage *m, *r;
    DBusMessageIter it, v;
    DBusError e;
    uint64_t val = 0;

    dbus_error_init(&e);
    c = dbus_connection_open_private(addr, &e);
    cr_assert(c, "%s", e.message);
    cr_assert(dbus_bus_register(c, &e), "%s", e.message);
    m = dbus_message_new_method_call("org.qemu.VMState1", "/org/qemu/VMState1",
                                     "org.freedesktop.DBus.Properties", "Get");
    cr_assert(m);
    cr_assert(dbus_message_append_args(m, DBUS_TYPE_STRING, &iface,
                                       DBUS_TYPE_STRING, &name,
                                       DBUS_TYPE_INVALID));
    r = dbus_connection_send_with_reply_and_block(c, m, 5000, &e);
    cr_assert(r, "Get %s: %s", name, e.message);
    cr_assert(dbus_message_iter_init(r, &it));
    dbus_message_iter_recurse(&it, &v);
    if (dbus_message_iter_get_arg_type(&v) == DBUS_TYPE_UINT32) {
        uint32_t u;

        dbus_message_iter_get_basic(&v, &u);
        val = u;
    } else {
        cr_assert_eq(dbus_message_iter_get_arg_type(&v), DBUS_TYPE_UINT64);
        dbus_message_iter_get_basic(&v, &val);
    }
    dbus_message_unref(r);
    dbus_message_unref(m);
    dbus_connection_close(c);
    dbus_connection_unref(c);
    dbus_error_free(&e);
    return val;
}
