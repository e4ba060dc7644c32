/*
 * The VM configuration model: validation with precise errors,
 * normalization, canonical generation, mutation and the QEMU command line.
 * See config.h for the contract and docs/config.md for the schema.
 *
 * Validation walks only the fields colo knows, on a private deep copy of
 * the input, normalizing as it goes (defaults written out, "memory_mb"
 * expanded, uuid generated/lower-cased). Everything else is left in the
 * document untouched, which is what makes unknown fields survive.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"

struct orch_vm_config {
    json_t *root; /* owned, normalized */
    json_t *xen;  /* Xen: the libxl object inside root (borrowed) */
    enum orch_vm_type type;
    const char *name; /* borrowed from root */
    const char *uuid; /* borrowed from root */
    uint64_t max_mb, target_mb;
    unsigned vcpus;
};

#define DEFAULT_BINARY  "qemu-system-x86_64"
#define DEFAULT_MACHINE "pc"
#define DEFAULT_ACCEL   "auto"
#define NAME_RULE       "[A-Za-z0-9_.-]{1,64}"
#define QEMU_ID_RULE    "a letter, then [A-Za-z0-9_.-], at most 64"

/* ======================================================================
 * Errors and JSON paths
 * ====================================================================== */

/* A validation walk: where we are and where errors go. */
struct vctx {
    const char *source;
    struct orch_config_error *err;
    char path[256];
    size_t len;
};

static void vctx_init(struct vctx *v, const char *source, const char *base,
                      struct orch_config_error *err)
{
    v->source = source ? source : "<string>";
    v->err = err;
    snprintf(v->path, sizeof(v->path), "%s", base);
    v->len = strlen(v->path);
}

static void path_append(struct vctx *v, const char *s)
{
    size_t n = strlen(s);

    if (v->len + 4 > sizeof(v->path))
        return; /* already cut */
    if (v->len + n >= sizeof(v->path)) {
        /* Too deep or too long a key: keep the prefix, mark the cut. */
        if (sizeof(v->path) - v->len > 4)
            n = sizeof(v->path) - v->len - 4;
        else
            n = 0;
        memcpy(v->path + v->len, s, n);
        memcpy(v->path + v->len + n, "...", 4);
        v->len += n + 3;
        return;
    }
    memcpy(v->path + v->len, s, n + 1);
    v->len += n;
}

static int is_ident(const char *key)
{
    if (!*key || !(isalpha((unsigned char)*key) || *key == '_'))
        return 0;
    for (; *key; key++)
        if (!(isalnum((unsigned char)*key) || *key == '_'))
            return 0;
    return 1;
}

/* Push ".key" or ["key"]; returns the length to restore with path_pop. */
static size_t path_push_key(struct vctx *v, const char *key)
{
    size_t old = v->len;

    if (is_ident(key)) {
        path_append(v, ".");
        path_append(v, key);
    } else {
        char esc[128];

        colo_json_escape(esc, sizeof(esc), key);
        path_append(v, "[\"");
        path_append(v, esc);
        path_append(v, "\"]");
    }
    return old;
}

static size_t path_push_index(struct vctx *v, size_t i)
{
    size_t old = v->len;
    char tmp[32];

    snprintf(tmp, sizeof(tmp), "[%zu]", i);
    path_append(v, tmp);
    return old;
}

static void path_pop(struct vctx *v, size_t old)
{
    v->len = old;
    v->path[old] = '\0';
}

static void err_fill(struct orch_config_error *err, const char *source,
                     const char *path, int line, int column, const char *msg)
{
    if (!err)
        return;
    memset(err, 0, sizeof(*err));
    snprintf(err->source, sizeof(err->source), "%s", source);
    snprintf(err->path, sizeof(err->path), "%s", path);
    err->line = line;
    err->column = column;
    snprintf(err->message, sizeof(err->message), "%s", msg);
    if (line > 0)
        snprintf(err->text, sizeof(err->text), "%s:%d:%d: %s", err->source,
                 line, column, err->message);
    else if (*path)
        snprintf(err->text, sizeof(err->text), "%s: %s: %s", err->source,
                 err->path, err->message);
    else
        snprintf(err->text, sizeof(err->text), "%s: %s", err->source,
                 err->message);
}

/* Fail at the current path. Returns -COLO_ECONFIG. */
static int __attribute__((format(printf, 2, 3)))
verr(struct vctx *v, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err_fill(v->err, v->source, v->path, 0, 0, msg);
    return -COLO_ECONFIG;
}

/* Fail at the current path plus key. */
static int __attribute__((format(printf, 3, 4)))
verr_key(struct vctx *v, const char *key, const char *fmt, ...)
{
    char msg[512];
    size_t old = path_push_key(v, key);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err_fill(v->err, v->source, v->path, 0, 0, msg);
    path_pop(v, old);
    return -COLO_ECONFIG;
}

static const char *type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "real";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* A short quoted rendering of a string value for messages. */
static const char *quote(char *buf, size_t size, const char *s)
{
    char esc[80];
    size_t n = strlen(s);

    colo_json_escape(esc, sizeof(esc), s);
    snprintf(buf, size, "\"%s\"%s", esc, n > 60 ? "..." : "");
    return buf;
}

/* ======================================================================
 * Field readers. Each takes the object and key, checks the type and
 * range, and reports at $.path.key.
 * ====================================================================== */

static int valid_name(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 64 || !strcmp(s, ".") || !strcmp(s, ".."))
        return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || strchr("_.-", *s)))
            return 0;
    return 1;
}

/* QEMU's id_wellformed(), with a length cap. */
static int valid_qemu_id(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 64 || !isalpha((unsigned char)s[0]))
        return 0;
    for (s++; *s; s++)
        if (!(isalnum((unsigned char)*s) || strchr("_.-", *s)))
            return 0;
    return 1;
}

/* A QEMU type or property name: no ',' '=' or spaces. */
static int valid_qemu_word(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 64)
        return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || strchr("_.-", *s)))
            return 0;
    return 1;
}

static int valid_uuid(const char *s)
{
    static const int dash[] = {8, 13, 18, 23};
    size_t i, d = 0;

    if (strlen(s) != 36)
        return 0;
    for (i = 0; i < 36; i++) {
        if (d < 4 && (int)i == dash[d]) {
            if (s[i] != '-')
                return 0;
            d++;
        } else if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

static int gen_uuid(char out[37])
{
    unsigned char b[16];
    size_t got = 0;

    while (got < sizeof(b)) {
        ssize_t n = getrandom(b + got, sizeof(b) - got, 0);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
             b[11], b[12], b[13], b[14], b[15]);
    return 0;
}

/* Read a string field. required: missing is an error; otherwise *ret is
 * NULL when missing. Strings are capped at ORCH_CONFIG_MAX_STRING. */
static int get_string(struct vctx *v, json_t *obj, const char *key,
                      int required, const char **ret)
{
    json_t *j = json_object_get(obj, key);

    *ret = NULL;
    if (!j) {
        if (required)
            return verr_key(v, key,
                            "required field is missing: "
                            "expected string");
        return 0;
    }
    if (!json_is_string(j))
        return verr_key(v, key, "expected string, got %s", type_name(j));
    if (json_string_length(j) > ORCH_CONFIG_MAX_STRING)
        return verr_key(v, key, "expected string of at most %d bytes, got %zu",
                        ORCH_CONFIG_MAX_STRING, json_string_length(j));
    *ret = json_string_value(j);
    return 0;
}

/* A non-empty path-like string. */
static int get_path(struct vctx *v, json_t *obj, const char *key, int required,
                    const char **ret)
{
    int rc = get_string(v, obj, key, required, ret);

    if (rc < 0)
        return rc;
    if (*ret && !**ret)
        return verr_key(v, key, "expected a non-empty path, got \"\"");
    return 0;
}

/* An integer in [min, max]; missing: *ret = def and, if write_default,
 * the default is stored. required overrides def. */
static int get_int(struct vctx *v, json_t *obj, const char *key, int required,
                   json_int_t min, json_int_t max, json_int_t def,
                   int write_default, json_int_t *ret)
{
    json_t *j = json_object_get(obj, key);
    char range[96];

    if (max == INT64_MAX)
        snprintf(range, sizeof(range), "integer >= %lld", (long long)min);
    else
        snprintf(range, sizeof(range), "integer between %lld and %lld",
                 (long long)min, (long long)max);
    if (!j) {
        if (required)
            return verr_key(v, key, "required field is missing: expected %s",
                            range);
        *ret = def;
        if (write_default &&
            json_object_set_new(obj, key, json_integer(def)) < 0)
            return -ENOMEM;
        return 0;
    }
    if (!json_is_integer(j))
        return verr_key(v, key, "expected %s, got %s", range, type_name(j));
    if (json_integer_value(j) < min || json_integer_value(j) > max)
        return verr_key(v, key, "expected %s, got %lld", range,
                        (long long)json_integer_value(j));
    *ret = json_integer_value(j);
    return 0;
}

static int get_bool(struct vctx *v, json_t *obj, const char *key, int def,
                    int *ret)
{
    json_t *j = json_object_get(obj, key);

    if (!j) {
        *ret = def;
        return json_object_set_new(obj, key, json_boolean(def)) < 0 ? -ENOMEM
                                                                    : 0;
    }
    if (!json_is_boolean(j))
        return verr_key(v, key, "expected boolean, got %s", type_name(j));
    *ret = json_is_true(j);
    return 0;
}

/* A string with a default that is written out when missing. */
static int get_string_def(struct vctx *v, json_t *obj, const char *key,
                          const char *def, const char **ret)
{
    int rc = get_string(v, obj, key, 0, ret);

    if (rc < 0 || *ret)
        return rc;
    if (json_object_set_new(obj, key, json_string(def)) < 0)
        return -ENOMEM;
    *ret = json_string_value(json_object_get(obj, key));
    return 0;
}

/* An optional object/array member of the right type (NULL if missing). */
static int get_typed(struct vctx *v, json_t *obj, const char *key,
                     json_type type, json_t **ret)
{
    json_t *j = json_object_get(obj, key);

    *ret = NULL;
    if (!j)
        return 0;
    if (json_typeof(j) != type)
        return verr_key(v, key, "expected %s, got %s",
                        type == JSON_OBJECT ? "object" : "array", type_name(j));
    *ret = j;
    return 0;
}

/* Lower-case a valid uuid in place in obj[key], or generate one. */
static int normalize_uuid(struct vctx *v, json_t *obj, const char *key,
                          const char **ret)
{
    const char *s;
    char buf[37], q[96];
    int rc, i;

    rc = get_string(v, obj, key, 0, &s);
    if (rc < 0)
        return rc;
    if (!s) {
        rc = gen_uuid(buf);
        if (rc < 0)
            return rc;
    } else {
        if (!valid_uuid(s))
            return verr_key(v, key,
                            "expected a uuid "
                            "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, got %s",
                            quote(q, sizeof(q), s));
        for (i = 0; i < 36; i++)
            buf[i] = (char)tolower((unsigned char)s[i]);
        buf[36] = '\0';
    }
    if (json_object_set_new(obj, key, json_string(buf)) < 0)
        return -ENOMEM;
    *ret = json_string_value(json_object_get(obj, key));
    return 0;
}

/* ======================================================================
 * colo's QEMU schema
 * ====================================================================== */

static int check_memory(struct vctx *v, json_t *root, struct orch_vm_config *c)
{
    json_t *mem = json_object_get(root, "memory");
    json_t *shorthand = json_object_get(root, "memory_mb");
    json_int_t max, target;
    size_t old;
    int rc;

    if (mem && shorthand)
        return verr_key(v, "memory_mb",
                        "conflicts with $.memory: give one of them");
    if (shorthand) {
        rc = get_int(v, root, "memory_mb", 1, 1, ORCH_CONFIG_MAX_MEM_MB, 0, 0,
                     &max);
        if (rc < 0)
            return rc;
        mem = json_pack("{s:I,s:I}", "max_mb", max, "target_mb", max);
        if (!mem || json_object_set_new(root, "memory", mem) < 0)
            return -ENOMEM;
        json_object_del(root, "memory_mb");
    }
    if (!mem)
        return verr_key(v, "memory",
                        "required field is missing: expected object "
                        "{\"max_mb\": integer} (or \"memory_mb\": integer)");
    if (!json_is_object(mem))
        return verr_key(v, "memory", "expected object, got %s", type_name(mem));
    old = path_push_key(v, "memory");
    rc = get_int(v, mem, "max_mb", 1, 1, ORCH_CONFIG_MAX_MEM_MB, 0, 0, &max);
    if (rc >= 0)
        rc = get_int(v, mem, "target_mb", 0, 1, max, max, 1, &target);
    path_pop(v, old);
    if (rc < 0)
        return rc;
    c->max_mb = (uint64_t)max;
    c->target_mb = (uint64_t)target;
    return 0;
}

static int check_disk(struct vctx *v, json_t *disk, size_t idx)
{
    static const char *const ifaces[] = {"virtio", "ide", "none", NULL};
    const char *s;
    char defid[32], q[96];
    int rc, ro = 0, i;

    if (!json_is_object(disk))
        return verr(v, "expected object, got %s", type_name(disk));
    rc = get_path(v, disk, "path", 1, &s);
    if (rc < 0)
        return rc;
    rc = get_string_def(v, disk, "format", "raw", &s);
    if (rc < 0)
        return rc;
    if (!valid_qemu_word(s))
        return verr_key(v, "format",
                        "expected a format name (raw, qcow2, ...), got %s",
                        quote(q, sizeof(q), s));
    rc = get_bool(v, disk, "readonly", 0, &ro);
    if (rc < 0)
        return rc;
    rc = get_string_def(v, disk, "interface", "virtio", &s);
    if (rc < 0)
        return rc;
    for (i = 0; ifaces[i] && strcmp(ifaces[i], s); i++)
        ;
    if (!ifaces[i])
        return verr_key(v, "interface",
                        "expected \"virtio\", \"ide\" or \"none\", got %s",
                        quote(q, sizeof(q), s));
    snprintf(defid, sizeof(defid), "disk%zu", idx);
    rc = get_string_def(v, disk, "id", defid, &s);
    if (rc < 0)
        return rc;
    if (!valid_qemu_id(s))
        return verr_key(v, "id", "expected an id (%s), got %s", QEMU_ID_RULE,
                        quote(q, sizeof(q), s));
    /* "replicate": optional (no default written: the canonical form of
     * configurations without it stays as it was). */
    if (json_object_get(disk, "replicate")) {
        const char *fmt = json_string_value(json_object_get(disk, "format"));

        if (!json_is_boolean(json_object_get(disk, "replicate")))
            return verr_key(v, "replicate", "expected boolean, got %s",
                            type_name(json_object_get(disk, "replicate")));
        if (json_is_true(json_object_get(disk, "replicate")) &&
            (ro || strcmp(fmt, "raw") != 0))
            return verr_key(v, "replicate",
                            "only a writable raw disk can be replicated");
    }
    return 0;
}

/* Element i of arr (already checked: it has a string "id") must not reuse
 * the id of an earlier element. */
static int check_unique_id(struct vctx *v, json_t *arr, size_t i,
                           const char *what, const char *member)
{
    const char *id =
        json_string_value(json_object_get(json_array_get(arr, i), "id"));

    for (size_t j = 0; j < i; j++)
        if (!strcmp(id, json_string_value(
                            json_object_get(json_array_get(arr, j), "id"))))
            return verr_key(v, "id",
                            "duplicate %s id \"%s\" (also $.%s[%zu].id)", what,
                            id, member, j);
    return 0;
}

static int check_disks(struct vctx *v, json_t *root)
{
    json_t *disks, *d;
    size_t i, old;
    int rc;

    rc = get_typed(v, root, "disks", JSON_ARRAY, &disks);
    if (rc < 0 || !disks)
        return rc;
    if (json_array_size(disks) > ORCH_CONFIG_MAX_DISKS)
        return verr_key(v, "disks", "expected at most %d disks, got %zu",
                        ORCH_CONFIG_MAX_DISKS, json_array_size(disks));
    old = path_push_key(v, "disks");
    json_array_foreach(disks, i, d)
    {
        size_t o2 = path_push_index(v, i);

        rc = check_disk(v, d, i);
        if (rc >= 0)
            rc = check_unique_id(v, disks, i, "disk", "disks");
        path_pop(v, o2);
        if (rc < 0)
            break;
    }
    path_pop(v, old);
    return rc < 0 ? rc : 0;
}

/* Device types that bring guest-writable RAM of their own (video memory,
 * memory devices). Guest RAM must live in the one memory-backend-file colo
 * maps and checkpoints; RAM elsewhere would silently diverge between
 * primary and secondary. */
static const char *const ram_devices[] = {
    "VGA",
    "isa-vga",
    "cirrus-vga",
    "isa-cirrus-vga",
    "qxl",
    "qxl-vga",
    "virtio-vga",
    "virtio-vga-gl",
    "secondary-vga",
    "bochs-display",
    "ati-vga",
    "vmware-svga",
    "ramfb",
    "pc-dimm",
    "nvdimm",
    "virtio-mem-pci",
    "virtio-pmem-pci",
    "ivshmem-plain",
    "ivshmem-doorbell",
    NULL,
};

/* A device: {"driver", "id", props...}; v->path points at it. */
static int check_device(struct vctx *v, const json_t *dev)
{
    const char *key, *s;
    json_t *val;
    char q[96];
    int rc, i;

    if (!json_is_object(dev))
        return verr(v, "expected object, got %s", type_name(dev));
    /* get_string does not modify: the cast only satisfies its signature. */
    rc = get_string(v, (json_t *)dev, "driver", 1, &s);
    if (rc < 0)
        return rc;
    if (!valid_qemu_word(s))
        return verr_key(v, "driver",
                        "expected a QEMU device type ([A-Za-z0-9_.-]{1,64}), "
                        "got %s",
                        quote(q, sizeof(q), s));
    for (i = 0; ram_devices[i]; i++)
        if (!strcmp(s, ram_devices[i]))
            return verr_key(v, "driver",
                            "device type \"%s\" has guest RAM of its own, "
                            "which colo's checkpoints do not carry",
                            s);
    rc = get_string(v, (json_t *)dev, "id", 1, &s);
    if (rc < 0)
        return rc;
    if (!valid_qemu_id(s))
        return verr_key(v, "id", "expected an id (%s), got %s", QEMU_ID_RULE,
                        quote(q, sizeof(q), s));
    if (json_object_size(dev) > ORCH_CONFIG_MAX_PROPS + 2)
        return verr(v, "expected at most %d properties, got %zu",
                    ORCH_CONFIG_MAX_PROPS, json_object_size(dev) - 2);
    json_object_foreach((json_t *)dev, key, val)
    {
        if (!strcmp(key, "driver") || !strcmp(key, "id"))
            continue;
        if (!valid_qemu_word(key))
            return verr_key(v, key,
                            "expected a property name matching "
                            "[A-Za-z0-9_.-]{1,64}");
        switch (json_typeof(val)) {
        case JSON_STRING:
            if (json_string_length(val) > ORCH_CONFIG_MAX_STRING)
                return verr_key(v, key, "expected string of at most %d bytes",
                                ORCH_CONFIG_MAX_STRING);
            break;
        case JSON_INTEGER:
        case JSON_REAL:
        case JSON_TRUE:
        case JSON_FALSE:
            break;
        default:
            return verr_key(v, key,
                            "expected string, integer, real or boolean, "
                            "got %s",
                            type_name(val));
        }
    }
    return 0;
}

static int check_devices(struct vctx *v, json_t *root)
{
    json_t *devs, *d;
    size_t i, old;
    int rc = 0;

    rc = get_typed(v, root, "devices", JSON_ARRAY, &devs);
    if (rc < 0 || !devs)
        return rc;
    if (json_array_size(devs) > ORCH_CONFIG_MAX_DEVICES)
        return verr_key(v, "devices", "expected at most %d devices, got %zu",
                        ORCH_CONFIG_MAX_DEVICES, json_array_size(devs));
    old = path_push_key(v, "devices");
    json_array_foreach(devs, i, d)
    {
        size_t o2 = path_push_index(v, i);

        rc = check_device(v, d);
        if (rc >= 0)
            rc = check_unique_id(v, devs, i, "device", "devices");
        path_pop(v, o2);
        if (rc < 0)
            break;
    }
    path_pop(v, old);
    return rc < 0 ? rc : 0;
}

static int valid_mac(const char *s)
{
    if (strlen(s) != 17)
        return 0;
    for (int i = 0; i < 17; i++)
        if (i % 3 == 2 ? s[i] != ':' : !isxdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

/* A NIC: {"id", "backend": "stream" | "tap", "path" | "ifname", "model",
 * "mac"}; v->path points at it. devs: the devices, whose ids the NIC's
 * device id (= its id) must not reuse. */
static int check_nic(struct vctx *v, json_t *nic, json_t *devs)
{
    const char *s, *backend;
    json_t *d;
    size_t i;
    char q[96];
    int rc;

    if (!json_is_object(nic))
        return verr(v, "expected object, got %s", type_name(nic));
    rc = get_string(v, nic, "id", 1, &s);
    if (rc < 0)
        return rc;
    if (!valid_qemu_id(s))
        return verr_key(v, "id", "expected an id (%s), got %s", QEMU_ID_RULE,
                        quote(q, sizeof(q), s));
    json_array_foreach(devs, i, d)
    {
        if (!strcmp(s, json_string_value(json_object_get(d, "id"))))
            return verr_key(v, "id",
                            "NIC id \"%s\" is also $.devices[%zu].id (a NIC's "
                            "device has the NIC's id)",
                            s, i);
    }
    rc = get_string_def(v, nic, "backend", "stream", &backend);
    if (rc < 0)
        return rc;
    if (!strcmp(backend, "stream")) {
        rc = get_path(v, nic, "path", 1, &s);
        if (rc < 0)
            return rc;
        if (strlen(s) >= 108)
            return verr_key(v, "path",
                            "expected a unix socket path of at most 107 "
                            "bytes, got %zu",
                            strlen(s));
        if (json_object_get(nic, "ifname"))
            return verr_key(v, "ifname", "only for \"backend\": \"tap\"");
    } else if (!strcmp(backend, "tap")) {
        rc = get_string(v, nic, "ifname", 1, &s);
        if (rc < 0)
            return rc;
        if (!valid_qemu_word(s) || strlen(s) > 15)
            return verr_key(v, "ifname",
                            "expected an interface name "
                            "([A-Za-z0-9_.-]{1,15}), got %s",
                            quote(q, sizeof(q), s));
        if (json_object_get(nic, "path"))
            return verr_key(v, "path", "only for \"backend\": \"stream\"");
    } else {
        return verr_key(v, "backend", "expected \"stream\" or \"tap\", got %s",
                        quote(q, sizeof(q), backend));
    }
    rc = get_string_def(v, nic, "model", "virtio-net-pci", &s);
    if (rc < 0)
        return rc;
    if (!valid_qemu_word(s))
        return verr_key(v, "model",
                        "expected a QEMU NIC device type "
                        "([A-Za-z0-9_.-]{1,64}), got %s",
                        quote(q, sizeof(q), s));
    rc = get_string(v, nic, "mac", 0, &s);
    if (rc < 0)
        return rc;
    if (s && !valid_mac(s))
        return verr_key(v, "mac", "expected a MAC xx:xx:xx:xx:xx:xx, got %s",
                        quote(q, sizeof(q), s));
    return 0;
}

static int check_nics(struct vctx *v, json_t *root)
{
    json_t *nics, *n, *devs = json_object_get(root, "devices");
    size_t i, old;
    int rc = 0;

    rc = get_typed(v, root, "nics", JSON_ARRAY, &nics);
    if (rc < 0 || !nics)
        return rc;
    if (json_array_size(nics) > ORCH_CONFIG_MAX_NICS)
        return verr_key(v, "nics", "expected at most %d NICs, got %zu",
                        ORCH_CONFIG_MAX_NICS, json_array_size(nics));
    old = path_push_key(v, "nics");
    json_array_foreach(nics, i, n)
    {
        size_t o2 = path_push_index(v, i);

        rc = check_nic(v, n, devs);
        if (rc >= 0)
            rc = check_unique_id(v, nics, i, "NIC", "nics");
        path_pop(v, o2);
        if (rc < 0)
            break;
    }
    path_pop(v, old);
    return rc < 0 ? rc : 0;
}

static int check_qemu(struct vctx *v, json_t *root)
{
    json_t *q, *extra, *a;
    const char *s;
    size_t old, i;
    char qb[96];
    int rc;

    rc = get_typed(v, root, "qemu", JSON_OBJECT, &q);
    if (rc < 0)
        return rc;
    if (!q) {
        q = json_object();
        if (!q || json_object_set_new(root, "qemu", q) < 0)
            return -ENOMEM;
    }
    old = path_push_key(v, "qemu");
    rc = get_string_def(v, q, "binary", DEFAULT_BINARY, &s);
    if (rc >= 0 && !*s)
        rc = verr_key(v, "binary", "expected a non-empty path, got \"\"");
    if (rc < 0)
        goto out;
    rc = get_string_def(v, q, "accel", DEFAULT_ACCEL, &s);
    if (rc < 0)
        goto out;
    if (strcmp(s, "kvm") && strcmp(s, "tcg") && strcmp(s, "auto")) {
        rc = verr_key(v, "accel",
                      "expected \"kvm\", \"tcg\" or \"auto\", got %s",
                      quote(qb, sizeof(qb), s));
        goto out;
    }
    rc = get_string_def(v, q, "machine", DEFAULT_MACHINE, &s);
    if (rc < 0)
        goto out;
    if (!valid_qemu_word(s)) {
        rc = verr_key(v, "machine",
                      "expected a machine type ([A-Za-z0-9_.-]{1,64}), "
                      "got %s",
                      quote(qb, sizeof(qb), s));
        goto out;
    }
    rc = get_string(v, q, "cpu", 0, &s);
    if (rc >= 0 && s && !*s)
        rc = verr_key(v, "cpu", "expected a CPU model, got \"\"");
    if (rc < 0)
        goto out;
    rc = get_typed(v, q, "extra_args", JSON_ARRAY, &extra);
    if (rc < 0 || !extra)
        goto out;
    if (json_array_size(extra) > ORCH_CONFIG_MAX_EXTRA) {
        rc = verr_key(v, "extra_args", "expected at most %d arguments, got %zu",
                      ORCH_CONFIG_MAX_EXTRA, json_array_size(extra));
        goto out;
    }
    path_push_key(v, "extra_args");
    json_array_foreach(extra, i, a)
    {
        if (!json_is_string(a) ||
            json_string_length(a) > ORCH_CONFIG_MAX_STRING) {
            path_push_index(v, i);
            if (!json_is_string(a))
                rc = verr(v, "expected string, got %s", type_name(a));
            else
                rc = verr(v, "expected string of at most %d bytes",
                          ORCH_CONFIG_MAX_STRING);
            goto out;
        }
    }
out:
    path_pop(v, old);
    return rc < 0 ? rc : 0;
}

static int check_qemu_vm(struct vctx *v, json_t *root, struct orch_vm_config *c)
{
    const char *kernel, *s;
    json_t *helpers;
    json_int_t vcpus;
    char q[96];
    int rc;

    rc = get_string(v, root, "name", 1, &c->name);
    if (rc < 0)
        return rc;
    if (!valid_name(c->name))
        return verr_key(v, "name",
                        "expected a name matching " NAME_RULE
                        " (not \".\" or \"..\"), got %s",
                        quote(q, sizeof(q), c->name));
    rc = normalize_uuid(v, root, "uuid", &c->uuid);
    if (rc < 0)
        return rc;
    rc = check_memory(v, root, c);
    if (rc < 0)
        return rc;
    rc = get_int(v, root, "vcpus", 0, 1, ORCH_CONFIG_MAX_VCPUS, 1, 1, &vcpus);
    if (rc < 0)
        return rc;
    c->vcpus = (unsigned)vcpus;
    rc = get_path(v, root, "kernel", 0, &kernel);
    if (rc < 0)
        return rc;
    rc = get_path(v, root, "ramdisk", 0, &s);
    if (rc < 0)
        return rc;
    if (s && !kernel)
        return verr_key(v, "ramdisk", "needs $.kernel");
    /* QEMU splits -initrd at commas for multiboot kernels but not for
     * Linux ones, so no escaping is right for both: refuse commas. */
    if (s && strchr(s, ','))
        return verr_key(v, "ramdisk", "expected a path without commas, got %s",
                        quote(q, sizeof(q), s));
    rc = get_string(v, root, "cmdline", 0, &s);
    if (rc < 0)
        return rc;
    if (s && !kernel)
        return verr_key(v, "cmdline", "needs $.kernel");
    rc = check_disks(v, root);
    if (rc < 0)
        return rc;
    rc = check_devices(v, root);
    if (rc < 0)
        return rc;
    rc = check_nics(v, root);
    if (rc < 0)
        return rc;
    rc = check_qemu(v, root);
    if (rc < 0)
        return rc;
    return get_typed(v, root, "helpers", JSON_ARRAY, &helpers);
}

/* ======================================================================
 * The libxl form
 * ====================================================================== */

/* Validate the libxl object; v->path points at it. Only the fields colo
 * reads are checked: everything else is libxl's business and kept. */
static int check_xen_doc(struct vctx *v, json_t *xen, struct orch_vm_config *c)
{
    json_t *ci, *bi;
    json_int_t max_kb = 0, target_kb = 0, vcpus = 0;
    size_t old;
    char q[96];
    int rc;

    if (!json_is_object(xen))
        return verr(v,
                    "expected object (a libxl domain configuration), "
                    "got %s",
                    type_name(xen));
    ci = json_object_get(xen, "c_info");
    if (!ci)
        return verr_key(v, "c_info",
                        "required field is missing: expected "
                        "object with \"name\"");
    if (!json_is_object(ci))
        return verr_key(v, "c_info", "expected object, got %s", type_name(ci));
    old = path_push_key(v, "c_info");
    rc = get_string(v, ci, "name", 1, &c->name);
    if (rc >= 0 && !valid_name(c->name))
        rc = verr_key(v, "name",
                      "expected a name matching " NAME_RULE
                      " (not \".\" or \"..\"), got %s",
                      quote(q, sizeof(q), c->name));
    if (rc >= 0)
        rc = normalize_uuid(v, ci, "uuid", &c->uuid);
    path_pop(v, old);
    if (rc < 0)
        return rc;

    rc = get_typed(v, xen, "b_info", JSON_OBJECT, &bi);
    if (rc < 0)
        return rc;
    if (bi) {
        old = path_push_key(v, "b_info");
        rc = get_int(v, bi, "max_memkb", 0, 0, ORCH_CONFIG_MAX_MEM_MB * 1024, 0,
                     0, &max_kb);
        if (rc >= 0)
            rc = get_int(v, bi, "target_memkb", 0, 0,
                         max_kb ? max_kb : ORCH_CONFIG_MAX_MEM_MB * 1024, 0, 0,
                         &target_kb);
        if (rc >= 0)
            rc = get_int(v, bi, "max_vcpus", 0, 1, ORCH_CONFIG_MAX_VCPUS, 0, 0,
                         &vcpus);
        path_pop(v, old);
        if (rc < 0)
            return rc;
    }
    c->max_mb = (uint64_t)max_kb / 1024;
    c->target_mb = (uint64_t)target_kb / 1024;
    c->vcpus = (unsigned)vcpus;
    return 0;
}

/* colo's keys that describe a QEMU VM: a Xen configuration says them in
 * libxl's words instead, once. */
static const char *const qemu_only_keys[] = {
    "name",    "uuid",  "memory",  "memory_mb", "vcpus", "kernel", "ramdisk",
    "cmdline", "disks", "devices", "qemu",      "nics",  NULL,
};

static int check_xen_vm(struct vctx *v, json_t *root, const char *xen_base,
                        struct orch_vm_config *c)
{
    json_t *helpers;
    struct vctx vx;
    int i, rc;

    for (i = 0; qemu_only_keys[i]; i++)
        if (json_object_get(root, qemu_only_keys[i]))
            return verr_key(v, qemu_only_keys[i],
                            "not allowed in a Xen configuration: set it in "
                            "the libxl form (%s)",
                            xen_base);
    rc = get_typed(v, root, "helpers", JSON_ARRAY, &helpers);
    if (rc < 0)
        return rc;
    c->type = ORCH_VM_XEN;
    c->xen = json_object_get(root, "xen");
    /* Errors point into the document as the user wrote it. */
    vctx_init(&vx, v->source, xen_base, v->err);
    return check_xen_doc(&vx, c->xen, c);
}

/* ======================================================================
 * Parsing entry points
 * ====================================================================== */

/* Validate root (consumed) and build the model. */
static int config_build(json_t *root, const char *source,
                        struct orch_vm_config **ret,
                        struct orch_config_error *err)
{
    struct orch_vm_config *c = NULL;
    const char *xen_base = "$.xen";
    struct vctx v;
    int rc;

    vctx_init(&v, source, "$", err);
    *ret = NULL;
    c = calloc(1, sizeof(*c));
    if (!c) {
        rc = -ENOMEM;
        goto out;
    }
    if (json_is_array(root)) {
        /* `xl list -l DOMAIN`: [{"domid": N, "config": {...}}] */
        json_t *cfg = json_object_get(json_array_get(root, 0), "config");

        if (json_array_size(root) != 1 || !json_is_object(cfg)) {
            rc = verr(&v, "expected an object, or an `xl list -l` array of "
                          "one {\"config\": object}");
            goto out;
        }
        json_incref(cfg);
        json_decref(root);
        root = json_pack("{s:o}", "xen", cfg);
        xen_base = "$[0].config";
    } else if (!json_is_object(root)) {
        rc = verr(&v, "expected object, got %s", type_name(root));
        goto out;
    } else if (!json_object_get(root, "xen") &&
               (json_object_get(root, "c_info") ||
                json_object_get(root, "b_info"))) {
        /* A bare libxl document. */
        root = json_pack("{s:o}", "xen", root);
        xen_base = "$";
    }
    if (!root) {
        rc = -ENOMEM;
        goto out;
    }
    c->root = root;
    root = NULL;
    if (json_object_get(c->root, "xen"))
        rc = check_xen_vm(&v, c->root, xen_base, c);
    else
        rc = check_qemu_vm(&v, c->root, c);
    if (rc == -ENOMEM)
        err_fill(err, v.source, "", 0, 0, "out of memory");
    if (rc < 0)
        goto out;
    *ret = c;
    c = NULL;
    rc = 0;
out:
    json_decref(root);
    orch_config_free(c);
    return rc;
}

int orch_config_from_json(const json_t *root, const char *source,
                          struct orch_vm_config **ret,
                          struct orch_config_error *err)
{
    json_t *copy;

    *ret = NULL;
    if (!root)
        return -EINVAL;
    copy = json_deep_copy(root);
    if (!copy)
        return -ENOMEM;
    return config_build(copy, source, ret, err);
}

int orch_config_parse_string(const char *text, size_t len, const char *source,
                             struct orch_vm_config **ret,
                             struct orch_config_error *err)
{
    json_error_t jerr;
    json_t *root;
    char msg[512];

    *ret = NULL;
    if (!source)
        source = "<string>";
    if (len > ORCH_CONFIG_MAX_BYTES) {
        snprintf(msg, sizeof(msg),
                 "document is %zu bytes, more than the cap of %d", len,
                 ORCH_CONFIG_MAX_BYTES);
        err_fill(err, source, "", 0, 0, msg);
        return -COLO_ECONFIG;
    }
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        int line = jerr.line > 0 ? jerr.line : 1;
        int col = jerr.column > 0 ? jerr.column : 1;

        snprintf(msg, sizeof(msg), "syntax error: %s", jerr.text);
        err_fill(err, source, "", line, col, msg);
        return -COLO_ECONFIG;
    }
    return config_build(root, source, ret, err);
}

int orch_config_parse_file(const char *path, struct orch_vm_config **ret,
                           struct orch_config_error *err)
{
    char *buf = NULL, msg[512];
    size_t len = 0;
    int rc;

    *ret = NULL;
    /* colo_read_file accepts at most max bytes. */
    rc = colo_read_file(path, (size_t)ORCH_CONFIG_MAX_BYTES, &buf, &len);
    if (rc == -EFBIG) {
        snprintf(msg, sizeof(msg), "file is larger than the cap of %d bytes",
                 ORCH_CONFIG_MAX_BYTES);
        err_fill(err, path, "", 0, 0, msg);
        return -COLO_ECONFIG;
    }
    if (rc < 0) {
        snprintf(msg, sizeof(msg), "cannot read: %s", colo_strerror(rc));
        err_fill(err, path, "", 0, 0, msg);
        return rc;
    }
    rc = orch_config_parse_string(buf, len, path, ret, err);
    free(buf);
    return rc;
}

void orch_config_free(struct orch_vm_config *c)
{
    if (!c)
        return;
    json_decref(c->root);
    free(c);
}

/* ======================================================================
 * Generation, copy, compare, accessors
 * ====================================================================== */

static int dump(const json_t *j, unsigned flags, char **ret_text,
                size_t *ret_len)
{
    size_t jflags = JSON_SORT_KEYS | JSON_REAL_PRECISION(17);
    char *s;

    if (flags & ORCH_CONFIG_GEN_PRETTY)
        jflags |= JSON_INDENT(2);
    else
        jflags |= JSON_COMPACT;
    s = json_dumps(j, jflags);
    if (!s)
        return -ENOMEM;
    if (flags & ORCH_CONFIG_GEN_PRETTY) {
        size_t n = strlen(s);
        char *t = realloc(s, n + 2);

        if (!t) {
            free(s);
            return -ENOMEM;
        }
        t[n] = '\n';
        t[n + 1] = '\0';
        s = t;
    }
    *ret_text = s;
    if (ret_len)
        *ret_len = strlen(s);
    return 0;
}

int orch_config_generate(const struct orch_vm_config *c, unsigned flags,
                         char **ret_text, size_t *ret_len)
{
    *ret_text = NULL;
    return dump(c->root, flags, ret_text, ret_len);
}

int orch_config_generate_xen(const struct orch_vm_config *c, unsigned flags,
                             char **ret_text, size_t *ret_len)
{
    *ret_text = NULL;
    if (c->type != ORCH_VM_XEN)
        return -EINVAL;
    return dump(c->xen, flags, ret_text, ret_len);
}

int orch_config_dup(const struct orch_vm_config *c, struct orch_vm_config **ret)
{
    struct orch_config_error err;
    int rc;

    /* The document is already normalized: building it again changes
     * nothing and re-derives the borrowed pointers. */
    rc = orch_config_from_json(c->root, "<copy>", ret, &err);
    return rc == -COLO_ECONFIG ? -COLO_EINTERNAL : rc;
}

int orch_config_equal(const struct orch_vm_config *a,
                      const struct orch_vm_config *b)
{
    return json_equal(a->root, b->root) ? 1 : 0;
}

const json_t *orch_config_json(const struct orch_vm_config *c)
{
    return c->root;
}

const json_t *orch_config_xen_json(const struct orch_vm_config *c)
{
    return c->type == ORCH_VM_XEN ? c->xen : NULL;
}

enum orch_vm_type orch_config_type(const struct orch_vm_config *c)
{
    return c->type;
}

const char *orch_config_name(const struct orch_vm_config *c)
{
    return c->name;
}

const char *orch_config_uuid(const struct orch_vm_config *c)
{
    return c->uuid;
}

uint64_t orch_config_max_mb(const struct orch_vm_config *c)
{
    return c->max_mb;
}

uint64_t orch_config_target_mb(const struct orch_vm_config *c)
{
    return c->target_mb;
}

unsigned orch_config_vcpus(const struct orch_vm_config *c)
{
    return c->vcpus;
}

size_t orch_config_device_count(const struct orch_vm_config *c)
{
    return json_array_size(json_object_get(c->root, "devices"));
}

size_t orch_config_nic_count(const struct orch_vm_config *c)
{
    return c->type == ORCH_VM_QEMU
               ? json_array_size(json_object_get(c->root, "nics"))
               : 0;
}

const char *orch_config_nic_id(const struct orch_vm_config *c, size_t i)
{
    if (c->type != ORCH_VM_QEMU)
        return NULL;
    return json_string_value(json_object_get(
        json_array_get(json_object_get(c->root, "nics"), i), "id"));
}

static ssize_t device_index(const struct orch_vm_config *c, const char *id)
{
    json_t *devs = json_object_get(c->root, "devices"), *d;
    size_t i;

    json_array_foreach(devs, i, d)
    {
        const char *did = json_string_value(json_object_get(d, "id"));

        if (did && !strcmp(did, id))
            return (ssize_t)i;
    }
    return -1;
}

const json_t *orch_config_device_get(const struct orch_vm_config *c,
                                     const char *id)
{
    ssize_t i = device_index(c, id);

    if (i < 0)
        return NULL;
    return json_array_get(json_object_get(c->root, "devices"), (size_t)i);
}

/* ======================================================================
 * Mutation
 * ====================================================================== */

int orch_config_set_target_mb(struct orch_vm_config *c, uint64_t mb,
                              struct orch_config_error *err)
{
    struct vctx v;
    json_t *obj;
    const char *key;
    json_int_t val;

    if (c->type == ORCH_VM_XEN) {
        vctx_init(&v, "<set-target>", "$.xen.b_info", err);
        obj = json_object_get(c->xen, "b_info");
        if (!obj) {
            obj = json_object();
            if (!obj || json_object_set_new(c->xen, "b_info", obj) < 0)
                return -ENOMEM;
        }
        key = "target_memkb";
        if (mb < 1 || (c->max_mb && mb > c->max_mb))
            return verr_key(&v, key,
                            "expected between 1 and %" PRIu64
                            " MiB (max_memkb), got %" PRIu64,
                            c->max_mb, mb);
        val = (json_int_t)(mb * 1024);
    } else {
        vctx_init(&v, "<set-target>", "$.memory", err);
        obj = json_object_get(c->root, "memory");
        key = "target_mb";
        if (mb < 1 || mb > c->max_mb)
            return verr_key(&v, key,
                            "expected between 1 and %" PRIu64
                            " (max_mb), got %" PRIu64,
                            c->max_mb, mb);
        val = (json_int_t)mb;
    }
    if (json_object_set_new(obj, key, json_integer(val)) < 0)
        return -ENOMEM;
    c->target_mb = mb;
    return 0;
}

int orch_config_device_add(struct orch_vm_config *c, const json_t *dev,
                           struct orch_config_error *err)
{
    json_t *devs, *copy;
    struct vctx v;
    size_t n;
    int rc;

    if (c->type != ORCH_VM_QEMU)
        return -EOPNOTSUPP;
    devs = json_object_get(c->root, "devices");
    n = json_array_size(devs);
    vctx_init(&v, "<device-add>", "$.devices", err);
    path_push_index(&v, n);
    rc = check_device(&v, dev);
    if (rc < 0)
        return rc;
    if (device_index(c, json_string_value(json_object_get(dev, "id"))) >= 0) {
        verr_key(&v, "id", "duplicate device id \"%s\"",
                 json_string_value(json_object_get(dev, "id")));
        return -EEXIST;
    }
    for (size_t k = 0; k < orch_config_nic_count(c); k++)
        if (!strcmp(orch_config_nic_id(c, k),
                    json_string_value(json_object_get(dev, "id")))) {
            verr_key(&v, "id", "device id \"%s\" is the id of $.nics[%zu]",
                     orch_config_nic_id(c, k), k);
            return -EEXIST;
        }
    if (n >= ORCH_CONFIG_MAX_DEVICES) {
        vctx_init(&v, "<device-add>", "$.devices", err);
        return verr(&v, "expected at most %d devices", ORCH_CONFIG_MAX_DEVICES);
    }
    if (!devs) {
        devs = json_array();
        if (!devs || json_object_set_new(c->root, "devices", devs) < 0)
            return -ENOMEM;
    }
    copy = json_deep_copy(dev);
    if (!copy || json_array_append_new(devs, copy) < 0)
        return -ENOMEM;
    return 0;
}

int orch_config_device_remove(struct orch_vm_config *c, const char *id)
{
    ssize_t i;

    if (c->type != ORCH_VM_QEMU)
        return -EOPNOTSUPP;
    i = device_index(c, id);
    if (i < 0)
        return -ENOENT;
    return json_array_remove(json_object_get(c->root, "devices"), (size_t)i)
               ? -ENOMEM
               : 0;
}

int orch_config_colo_disks_check(const struct orch_vm_config *c, char *why,
                                 size_t whysz)
{
    json_t *disk;
    size_t i;

    if (c->type != ORCH_VM_QEMU)
        return 0;
    json_array_foreach(json_object_get(c->root, "disks"), i, disk)
    {
        if (json_is_true(json_object_get(disk, "readonly")))
            continue;
        snprintf(why, whysz,
                 "COLO mode: disk '%s' (%s) is writable: the secondary's "
                 "running copy would open the same image for writing "
                 "(colo does not replicate disks yet); use --mode remus, "
                 "or make the disk \"readonly\": true",
                 json_string_value(json_object_get(disk, "id")),
                 json_string_value(json_object_get(disk, "path")));
        return -COLO_ECONFIG;
    }
    return 0;
}

/* ======================================================================
 * QEMU command line
 * ====================================================================== */

struct argv_buf {
    char **v;
    size_t n, cap;
    int oom;
};

static void av_take(struct argv_buf *a, char *s)
{
    if (!s || a->oom) {
        free(s);
        a->oom = 1;
        return;
    }
    if (a->n + 2 > a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 64;
        char **nv = realloc(a->v, ncap * sizeof(*nv));

        if (!nv) {
            free(s);
            a->oom = 1;
            return;
        }
        a->v = nv;
        a->cap = ncap;
    }
    a->v[a->n++] = s;
    a->v[a->n] = NULL;
}

static void av_add(struct argv_buf *a, const char *s)
{
    av_take(a, strdup(s));
}

static void __attribute__((format(printf, 2, 3)))
av_addf(struct argv_buf *a, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    av_take(a, s);
}

char *orch_config_qemu_escape(const char *s)
{
    size_t n = 0, i;
    const char *p;
    char *out;

    for (p = s; *p; p++)
        n += *p == ',' ? 2 : 1;
    out = malloc(n + 1);
    if (!out)
        return NULL;
    for (p = s, i = 0; *p; p++) {
        out[i++] = *p;
        if (*p == ',')
            out[i++] = ',';
    }
    out[i] = '\0';
    return out;
}

/* Write s to f with commas doubled. */
static void put_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        fputc(*s, f);
        if (*s == ',')
            fputc(',', f);
    }
}

/* The shortest of %.15g..%.17g that reads back as the same double. */
static void put_real(FILE *f, double d)
{
    char buf[64];
    int prec;

    for (prec = 15; prec < 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    fprintf(f, "%.*g", prec, d);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "driver,id=ID,key=value,..." with values escaped and keys sorted, so
 * the same configuration gives the same argument on every host. */
static char *device_arg(const json_t *dev)
{
    const char *keys[ORCH_CONFIG_MAX_PROPS + 2], *key;
    size_t nkeys = 0, i, len = 0;
    json_t *val;
    char *s = NULL;
    FILE *f;

    json_object_foreach((json_t *)dev, key, val)
    {
        if (strcmp(key, "driver") && strcmp(key, "id") &&
            nkeys < ORCH_CONFIG_MAX_PROPS + 2)
            keys[nkeys++] = key;
    }
    qsort(keys, nkeys, sizeof(keys[0]), cmp_str);
    f = open_memstream(&s, &len);
    if (!f)
        return NULL;
    fprintf(f, "%s,id=%s", json_string_value(json_object_get(dev, "driver")),
            json_string_value(json_object_get(dev, "id")));
    for (i = 0; i < nkeys; i++) {
        val = json_object_get(dev, keys[i]);
        fprintf(f, ",%s=", keys[i]);
        switch (json_typeof(val)) {
        case JSON_STRING:
            put_escaped(f, json_string_value(val));
            break;
        case JSON_INTEGER:
            fprintf(f, "%lld", (long long)json_integer_value(val));
            break;
        case JSON_REAL:
            put_real(f, json_real_value(val));
            break;
        case JSON_TRUE:
            fputs("on", f);
            break;
        default:
            fputs("off", f);
            break;
        }
    }
    if (fclose(f) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

static int kvm_usable(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

    if (fd < 0)
        return 0;
    colo_close(&fd);
    return 1;
}

int orch_config_qemu_argv(const struct orch_vm_config *c,
                          const struct orch_qemu_launch_params *p,
                          char ***ret_argv)
{
    struct argv_buf a = {NULL, 0, 0, 0};
    json_t *root = c->root, *q, *list, *item;
    const char *accel, *s;
    char *esc;
    size_t i;

    *ret_argv = NULL;
    if (c->type != ORCH_VM_QEMU || !p || !p->ram_path || !*p->ram_path)
        return -EINVAL;
    q = json_object_get(root, "qemu");

    av_add(&a, json_string_value(json_object_get(q, "binary")));
    av_add(&a, "-name");
    av_add(&a, c->name);
    av_add(&a, "-uuid");
    av_add(&a, c->uuid);
    /* Nothing colo did not ask for: no default NICs, VGA (its RAM block
     * would escape the checkpoint), floppy, CD-ROM or config files. */
    av_add(&a, "-nodefaults");
    av_add(&a, "-no-user-config");
    av_add(&a, "-vga");
    av_add(&a, "none");
    av_add(&a, "-display");
    av_add(&a, "none");
    av_add(&a, "-machine");
    av_addf(&a, "%s,memory-backend=ram%s",
            json_string_value(json_object_get(q, "machine")),
            p->incoming_defer ? ",suppress-vmdesc=on" : "");
    esc = orch_config_qemu_escape(p->ram_path);
    av_add(&a, "-object");
    if (esc)
        av_addf(&a,
                "memory-backend-file,id=ram,size=%" PRIu64
                "M,mem-path=%s,share=on",
                c->max_mb, esc);
    else
        a.oom = 1;
    free(esc);
    av_add(&a, "-m");
    av_addf(&a, "%" PRIu64 "M", c->max_mb);
    av_add(&a, "-smp");
    av_addf(&a, "%u", c->vcpus);

    accel = json_string_value(json_object_get(q, "accel"));
    if (!strcmp(accel, "auto")) {
        int kvm = p->kvm == ORCH_KVM_YES ||
                  (p->kvm == ORCH_KVM_DETECT && kvm_usable());

        accel = kvm ? "kvm" : "tcg";
    }
    av_add(&a, "-accel");
    av_add(&a, accel);
    s = json_string_value(json_object_get(q, "cpu"));
    if (s) {
        av_add(&a, "-cpu");
        av_add(&a, s);
    }

    /* -kernel, -initrd and -append are plain strings to QEMU (not
     * key=value lists): no escaping. */
    s = json_string_value(json_object_get(root, "kernel"));
    if (s) {
        av_add(&a, "-kernel");
        av_add(&a, s);
    }
    s = json_string_value(json_object_get(root, "ramdisk"));
    if (s) {
        av_add(&a, "-initrd");
        av_add(&a, s);
    }
    s = json_string_value(json_object_get(root, "cmdline"));
    if (s) {
        av_add(&a, "-append");
        av_add(&a, s);
    }

    list = json_object_get(root, "disks");
    json_array_foreach(list, i, item)
    {
        esc = orch_config_qemu_escape(
            json_string_value(json_object_get(item, "path")));
        av_add(&a, "-drive");
        if (esc && json_is_true(json_object_get(item, "replicate")))
            /* A quorum of one: colo's disk tee joins it as children.1
             * while the VM is protected (checkpoint/disk.h). */
            av_addf(&a,
                    "driver=quorum,read-pattern=fifo,vote-threshold=1,"
                    "children.0.driver=raw,children.0.file.filename=%s,"
                    "if=%s,id=%s",
                    esc, json_string_value(json_object_get(item, "interface")),
                    json_string_value(json_object_get(item, "id")));
        else if (esc)
            av_addf(&a, "file=%s,format=%s,if=%s,id=%s%s", esc,
                    json_string_value(json_object_get(item, "format")),
                    json_string_value(json_object_get(item, "interface")),
                    json_string_value(json_object_get(item, "id")),
                    json_is_true(json_object_get(item, "readonly"))
                        ? ",readonly=on"
                        : "");
        else
            a.oom = 1;
        free(esc);
    }
    list = json_object_get(root, "devices");
    json_array_foreach(list, i, item)
    {
        av_add(&a, "-device");
        av_take(&a, device_arg(item));
    }
    list = json_object_get(root, "nics");
    json_array_foreach(list, i, item)
    {
        const char *id = json_string_value(json_object_get(item, "id"));
        const char *mac = json_string_value(json_object_get(item, "mac"));

        av_add(&a, "-netdev");
        if (!strcmp(json_string_value(json_object_get(item, "backend")),
                    "tap")) {
            av_addf(&a, "tap,id=%s,ifname=%s,script=no,downscript=no", id,
                    json_string_value(json_object_get(item, "ifname")));
        } else {
            esc = orch_config_qemu_escape(
                json_string_value(json_object_get(item, "path")));
            if (esc)
                av_addf(&a,
                        "stream,id=%s,server=off,addr.type=unix,"
                        "addr.path=%s",
                        id, esc);
            else
                a.oom = 1;
            free(esc);
        }
        av_add(&a, "-device");
        av_addf(&a, "%s,id=%s,netdev=%s%s%s",
                json_string_value(json_object_get(item, "model")), id, id,
                mac ? ",mac=" : "", mac ? mac : "");
    }

    if (p->serial_path) {
        esc = orch_config_qemu_escape(p->serial_path);
        av_add(&a, "-chardev");
        if (esc)
            /* A secondary appends: in COLO mode every new standby QEMU
             * opens the console while the running copy still writes it. */
            av_addf(&a, "file,id=serial0,path=%s%s", esc,
                    p->incoming_defer ? ",append=on" : "");
        else
            a.oom = 1;
        free(esc);
        av_add(&a, "-serial");
        av_add(&a, "chardev:serial0");
    }
    /* -incoming implies -S: QEMU would start the guest by itself once a
     * load completes, before colo has decided where the guest runs (a
     * migrate's handover, docs/protocol.md 5.4); colo's `cont` does. */
    if (p->paused || p->incoming_defer)
        av_add(&a, "-S");
    if (p->incoming_defer) {
        av_add(&a, "-incoming");
        av_add(&a, "defer");
        av_add(&a, "-global");
        av_add(&a, "migration.send-configuration=off");
    }
    list = json_object_get(q, "extra_args");
    json_array_foreach(list, i, item)
    {
        av_add(&a, json_string_value(item));
    }
    for (i = 0; p->extra_args && p->extra_args[i]; i++)
        av_add(&a, p->extra_args[i]);

    if (a.oom) {
        orch_config_argv_free(a.v);
        return -ENOMEM;
    }
    *ret_argv = a.v;
    return 0;
}

void orch_config_argv_free(char **argv)
{
    size_t i;

    if (!argv)
        return;
    for (i = 0; argv[i]; i++)
        free(argv[i]);
    free(argv);
}

size_t orch_config_disk_count(const struct orch_vm_config *c)
{
    return json_array_size(json_object_get(c->root, "disks"));
}

int orch_config_disk_get(const struct orch_vm_config *c, size_t i,
                         const char **id, const char **path, bool *replicate)
{
    json_t *d = json_array_get(json_object_get(c->root, "disks"), i);

    if (!d)
        return -ENOENT;
    *id = json_string_value(json_object_get(d, "id"));
    *path = json_string_value(json_object_get(d, "path"));
    *replicate = json_is_true(json_object_get(d, "replicate"));
    return 0;
}

int orch_config_disk_set_path(struct orch_vm_config *c, const char *id,
                              const char *path)
{
    json_t *list = json_object_get(c->root, "disks"), *d;
    size_t i;

    json_array_foreach(list, i, d)
    {
        if (strcmp(json_string_value(json_object_get(d, "id")), id) == 0)
            return json_object_set_new(d, "path", json_string(path)) < 0
                       ? -ENOMEM
                       : 0;
    }
    return -ENOENT;
}
