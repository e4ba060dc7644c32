/*
 * colo-dbus-helper: an example helper process whose state QEMU's
 * dbus-vmstate object carries with the VM (see docs/dbus.md).
 *
 * It connects to the bus named by --address or DBUS_SESSION_BUS_ADDRESS,
 * queues for the well-known name org.qemu.VMState1 (every helper of a VM
 * does: QEMU asks the bus for all queued owners) and exports, at the object
 * path /org/qemu/VMState1:
 *
 *   interface org.qemu.VMState1
 *     property Id    s  read   the helper's unique Id (--id); QEMU matches
 *                              saved state to helpers by it
 *     method   Save  () -> (ay) the state; QEMU calls it while the VM is
 *                              stopped for a device-state save
 *     method   Load  (ay) -> () the state saved on the other side; QEMU
 *                              calls it while loading device state
 *
 *   interface org.colo.ExampleHelper1 (for tests and humans)
 *     property Counter    t  the counter, +1 every --interval-ms
 *     property LastSaved  t  the counter value the last Save returned
 *     property LastLoaded t  the counter value the last Load set
 *     property Loads      u  how many Load calls succeeded
 *
 * The state is 16 bytes: the magic "colodh1\0" then the counter, 64-bit
 * little-endian. Load sets the counter to the saved value and it goes on
 * counting from there.
 *
 * Test knobs (to reproduce misbehaving helpers):
 *   --save-bytes N  pad the state to N bytes (N > 1 MiB: too large for QEMU)
 *   --hang-save     never answer Save (QEMU's D-Bus call times out)
 *
 * Build: cc colo-dbus-helper.c $(pkg-config --cflags --libs dbus-1)
 * Run:   DBUS_SESSION_BUS_ADDRESS=unix:path=/run/vm/bus colo-dbus-helper --id a
 */
#include <dbus/dbus.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VMSTATE_IFACE  "org.qemu.VMState1"
#define VMSTATE_PATH   "/org/qemu/VMState1"
#define EXAMPLE_IFACE  "org.colo.ExampleHelper1"
#define PROPS_IFACE    "org.freedesktop.DBus.Properties"
#define STATE_MAGIC    "colodh1"
#define STATE_LEN      16
#define SAVE_BYTES_MAX (64u * 1024 * 1024)

struct helper {
    const char *id;
    unsigned interval_ms;
    size_t save_bytes;
    int hang_save;
    uint64_t counter, last_saved, last_loaded;
    uint32_t loads;
    uint64_t next_tick_ms;
    volatile sig_atomic_t *stop;
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void tick(struct helper *h)
{
    uint64_t now = now_ms();

    while (now >= h->next_tick_ms) {
        h->counter++;
        h->next_tick_ms += h->interval_ms;
    }
}

static int append_variant(DBusMessageIter *it, int type, const void *val)
{
    DBusMessageIter v;
    char sig[2] = {(char)type, 0};

    if (!dbus_message_iter_open_container(it, DBUS_TYPE_VARIANT, sig, &v))
        return -1;
    if (!dbus_message_iter_append_basic(&v, type, val))
        return -1;
    return dbus_message_iter_close_container(it, &v) ? 0 : -1;
}

static int append_prop(DBusMessageIter *dict, const char *name, int type,
                       const void *val)
{
    DBusMessageIter e;

    if (!dbus_message_iter_open_container(dict, DBUS_TYPE_DICT_ENTRY, NULL, &e))
        return -1;
    if (!dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &name))
        return -1;
    if (append_variant(&e, type, val) < 0)
        return -1;
    return dbus_message_iter_close_container(dict, &e) ? 0 : -1;
}

/* Properties of iface into an a{sv}; unknown interface: nothing. */
static int append_props(struct helper *h, DBusMessageIter *it,
                        const char *iface, const char *only)
{
    DBusMessageIter dict;
    int rc = 0;

    if (!dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "{sv}", &dict))
        return -1;
    if (!strcmp(iface, VMSTATE_IFACE)) {
        if (!only || !strcmp(only, "Id"))
            rc |= append_prop(&dict, "Id", DBUS_TYPE_STRING, &h->id);
    } else if (!strcmp(iface, EXAMPLE_IFACE)) {
        if (!only || !strcmp(only, "Counter"))
            rc |= append_prop(&dict, "Counter", DBUS_TYPE_UINT64, &h->counter);
        if (!only || !strcmp(only, "LastSaved"))
            rc |= append_prop(&dict, "LastSaved", DBUS_TYPE_UINT64,
                              &h->last_saved);
        if (!only || !strcmp(only, "LastLoaded"))
            rc |= append_prop(&dict, "LastLoaded", DBUS_TYPE_UINT64,
                              &h->last_loaded);
        if (!only || !strcmp(only, "Loads"))
            rc |= append_prop(&dict, "Loads", DBUS_TYPE_UINT32, &h->loads);
    }
    if (!dbus_message_iter_close_container(it, &dict))
        return -1;
    return rc;
}

static DBusMessage *props_get(struct helper *h, DBusMessage *m)
{
    const char *iface = NULL, *name = NULL;
    DBusMessage *r;
    DBusMessageIter it;

    if (!dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &iface,
                               DBUS_TYPE_STRING, &name, DBUS_TYPE_INVALID))
        return dbus_message_new_error(m, DBUS_ERROR_INVALID_ARGS, "ss");
    r = dbus_message_new_method_return(m);
    if (!r)
        return NULL;
    dbus_message_iter_init_append(r, &it);
    if (!strcmp(iface, VMSTATE_IFACE) && !strcmp(name, "Id")) {
        append_variant(&it, DBUS_TYPE_STRING, &h->id);
    } else if (!strcmp(iface, EXAMPLE_IFACE) && !strcmp(name, "Counter")) {
        append_variant(&it, DBUS_TYPE_UINT64, &h->counter);
    } else if (!strcmp(iface, EXAMPLE_IFACE) && !strcmp(name, "LastSaved")) {
        append_variant(&it, DBUS_TYPE_UINT64, &h->last_saved);
    } else if (!strcmp(iface, EXAMPLE_IFACE) && !strcmp(name, "LastLoaded")) {
        append_variant(&it, DBUS_TYPE_UINT64, &h->last_loaded);
    } else if (!strcmp(iface, EXAMPLE_IFACE) && !strcmp(name, "Loads")) {
        append_variant(&it, DBUS_TYPE_UINT32, &h->loads);
    } else {
        dbus_message_unref(r);
        return dbus_message_new_error(m, DBUS_ERROR_UNKNOWN_PROPERTY, name);
    }
    return r;
}

static DBusMessage *props_get_all(struct helper *h, DBusMessage *m)
{
    const char *iface = NULL;
    DBusMessage *r;
    DBusMessageIter it;

    if (!dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &iface,
                               DBUS_TYPE_INVALID))
        return dbus_message_new_error(m, DBUS_ERROR_INVALID_ARGS, "s");
    r = dbus_message_new_method_return(m);
    if (!r)
        return NULL;
    dbus_message_iter_init_append(r, &it);
    append_props(h, &it, iface, NULL);
    return r;
}

static DBusMessage *vm_save(struct helper *h, DBusMessage *m)
{
    size_t len = h->save_bytes > STATE_LEN ? h->save_bytes : STATE_LEN;
    unsigned char *buf = calloc(1, len);
    DBusMessage *r;
    uint64_t v;

    if (!buf)
        return NULL;
    tick(h);
    v = h->counter;
    memcpy(buf, STATE_MAGIC, 8);
    for (int i = 0; i < 8; i++)
        buf[8 + i] = (unsigned char)(v >> (8 * i));
    r = dbus_message_new_method_return(m);
    if (r && !dbus_message_append_args(r, DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE, &buf,
                                       (int)len, DBUS_TYPE_INVALID)) {
        dbus_message_unref(r);
        r = NULL;
    }
    free(buf);
    if (r)
        h->last_saved = v;
    return r;
}

static DBusMessage *vm_load(struct helper *h, DBusMessage *m)
{
    const unsigned char *data = NULL;
    int len = 0;
    uint64_t v = 0;

    if (!dbus_message_get_args(m, NULL, DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE, &data,
                               &len, DBUS_TYPE_INVALID))
        return dbus_message_new_error(m, DBUS_ERROR_INVALID_ARGS, "ay");
    if (len < STATE_LEN || memcmp(data, STATE_MAGIC, 8))
        return dbus_message_new_error(m, DBUS_ERROR_INVALID_ARGS,
                                      "not colo-dbus-helper state");
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)data[8 + i] << (8 * i);
    h->counter = v;
    h->last_loaded = v;
    h->loads++;
    h->next_tick_ms = now_ms() + h->interval_ms;
    fprintf(stderr, "colo-dbus-helper[%s]: loaded counter %llu\n", h->id,
            (unsigned long long)v);
    return dbus_message_new_method_return(m);
}

static DBusHandlerResult on_message(DBusConnection *conn, DBusMessage *m,
                                    void *data)
{
    struct helper *h = data;
    DBusMessage *r = NULL;

    if (dbus_message_get_type(m) != DBUS_MESSAGE_TYPE_METHOD_CALL)
        return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
    tick(h);
    if (dbus_message_is_method_call(m, PROPS_IFACE, "Get"))
        r = props_get(h, m);
    else if (dbus_message_is_method_call(m, PROPS_IFACE, "GetAll"))
        r = props_get_all(h, m);
    else if (dbus_message_is_method_call(m, VMSTATE_IFACE, "Save")) {
        if (h->hang_save)
            return DBUS_HANDLER_RESULT_HANDLED; /* never answer */
        r = vm_save(h, m);
    } else if (dbus_message_is_method_call(m, VMSTATE_IFACE, "Load"))
        r = vm_load(h, m);
    else
        r = dbus_message_new_error(m, DBUS_ERROR_UNKNOWN_METHOD,
                                   dbus_message_get_member(m));
    if (!r)
        return DBUS_HANDLER_RESULT_NEED_MEMORY;
    dbus_connection_send(conn, r, NULL);
    dbus_message_unref(r);
    return DBUS_HANDLER_RESULT_HANDLED;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: colo-dbus-helper --id ID [--address ADDR] "
               "[--interval-ms N] [--save-bytes N] [--hang-save]\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"id", required_argument, NULL, 'i'},
        {"address", required_argument, NULL, 'a'},
        {"interval-ms", required_argument, NULL, 't'},
        {"save-bytes", required_argument, NULL, 's'},
        {"hang-save", no_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const DBusObjectPathVTable vtable = {.message_function = on_message};
    struct helper h = {.interval_ms = 10};
    const char *addr = getenv("DBUS_SESSION_BUS_ADDRESS");
    DBusConnection *conn = NULL;
    DBusError err;
    struct sigaction sa = {.sa_handler = on_signal};
    int c, ret = 1;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            h.id = optarg;
            break;
        case 'a':
            addr = optarg;
            break;
        case 't':
            h.interval_ms = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 's':
            h.save_bytes = strtoul(optarg, NULL, 10);
            break;
        case 'H':
            h.hang_save = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!h.id || !addr || !h.interval_ms || h.save_bytes > SAVE_BYTES_MAX) {
        usage(stderr);
        return 2;
    }
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    dbus_error_init(&err);
    conn = dbus_connection_open_private(addr, &err);
    if (!conn || !dbus_bus_register(conn, &err)) {
        fprintf(stderr, "colo-dbus-helper[%s]: %s: %s\n", h.id, addr,
                err.message ? err.message : "cannot connect");
        goto out;
    }
    /* Queue (no DO_NOT_QUEUE): every helper of the VM owns the same name. */
    if (dbus_bus_request_name(conn, VMSTATE_IFACE, 0, &err) < 0 ||
        !dbus_connection_register_object_path(conn, VMSTATE_PATH, &vtable,
                                              &h)) {
        fprintf(stderr, "colo-dbus-helper[%s]: request name: %s\n", h.id,
                err.message ? err.message : "out of memory");
        goto out;
    }
    h.next_tick_ms = now_ms() + h.interval_ms;
    while (!stop_flag) {
        uint64_t now = now_ms();
        int wait = h.next_tick_ms > now ? (int)(h.next_tick_ms - now) : 0;

        /* Returns on a message, the timeout, or a signal (EINTR). */
        if (!dbus_connection_read_write_dispatch(conn, wait))
            break; /* the bus went away */
        tick(&h);
    }
    ret = 0;
out:
    dbus_error_free(&err);
    if (conn) {
        dbus_connection_close(conn);
        dbus_connection_unref(conn);
    }
    return ret;
}
