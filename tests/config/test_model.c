/*
 * The configuration model: round trips, canonical output, errors that
 * point at the place, the libxl form, mutation helpers, argv building.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "config.h"

/* Every field colo knows, with defaults spelled out (so the normalized
 * document must equal the input), plus unknown fields at every level. */
static const char full_cfg[] =
    "{\n"
    "  \"name\": \"vm-1.test_A\",\n"
    "  \"uuid\": \"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\",\n"
    "  \"memory\": {\"max_mb\": 256, \"target_mb\": 192, \"x-hint\": [1]},\n"
    "  \"vcpus\": 2,\n"
    "  \"kernel\": \"/boot/vmlinuz\",\n"
    "  \"ramdisk\": \"/boot/initrd.img\",\n"
    "  \"cmdline\": \"console=ttyS0 root=/dev/vda\",\n"
    "  \"disks\": [\n"
    "    {\"path\": \"/var/lib/colo/a.img\", \"format\": \"raw\",\n"
    "     \"readonly\": false, \"interface\": \"virtio\", \"id\": \"disk0\",\n"
    "     \"cache-note\": {\"deep\": {\"er\": [null, true, 1.5]}}},\n"
    "    {\"path\": \"/var/lib/colo/b,c.qcow2\", \"format\": \"qcow2\",\n"
    "     \"readonly\": true, \"interface\": \"none\", \"id\": \"data\"}\n"
    "  ],\n"
    "  \"devices\": [\n"
    "    {\"driver\": \"virtio-serial-pci\", \"id\": \"vs0\"},\n"
    "    {\"driver\": \"virtserialport\", \"id\": \"port0\",\n"
    "     \"bus\": \"vs0.0\", \"name\": \"org.colo,1\", \"nr\": 1},\n"
    "    {\"driver\": \"isa-serial\", \"id\": \"com2\", \"index\": 1,\n"
    "     \"x-flag\": true, \"ratio\": 0.25}\n"
    "  ],\n"
    "  \"qemu\": {\"binary\": \"/usr/bin/qemu-system-x86_64\",\n"
    "           \"accel\": \"tcg\", \"machine\": \"pc-i440fx-7.2\",\n"
    "           \"cpu\": \"max\", \"extra_args\": [\"-rtc\", \"base=utc\"],\n"
    "           \"future\": {\"knob\": 3}},\n"
    "  \"helpers\": [{\"kind\": \"net\", \"opts\": {\"a\": [1, {\"b\": "
    "2}]}}],\n"
    "  \"x-unknown\": {\"nested\": {\"list\": [[], {}, \"s\", -7]}},\n"
    "  \"zzz\": [1, 2, 3]\n"
    "}\n";

/* A libxl domain configuration as `xl create -n` / `xl list -l` print
 * it, trimmed; "x-future" stands for fields a newer libxl adds. */
static const char xen_cfg[] =
    "{\n"
    "    \"c_info\": {\n"
    "        \"type\": \"pvh\",\n"
    "        \"name\": \"guest1\",\n"
    "        \"uuid\": \"6d8c5c62-87a9-4b52-9e73-2b6c9a6b1f0d\",\n"
    "        \"run_hotplug_scripts\": \"True\",\n"
    "        \"xsdata\": {\"k\": \"v\"}\n"
    "    },\n"
    "    \"b_info\": {\n"
    "        \"max_vcpus\": 2,\n"
    "        \"avail_vcpus\": [0, 1],\n"
    "        \"max_memkb\": 131072,\n"
    "        \"target_memkb\": 131072,\n"
    "        \"shadow_memkb\": 2048,\n"
    "        \"tsc_mode\": \"native\",\n"
    "        \"kernel\": \"/boot/vmlinuz\",\n"
    "        \"cmdline\": \"console=hvc0\",\n"
    "        \"sched_params\": {},\n"
    "        \"type.pvh\": {\"pvshim\": \"False\"},\n"
    "        \"arch_arm\": {},\n"
    "        \"arch_x86\": {\"msr_relaxed\": \"False\"},\n"
    "        \"x-future\": [{\"a\": 1}]\n"
    "    },\n"
    "    \"disks\": [{\"pdev_path\": \"/dev/vg/guest1\", \"vdev\": \"xvda\",\n"
    "                \"backend\": \"phy\", \"format\": \"raw\",\n"
    "                \"readwrite\": 1}],\n"
    "    \"nics\": [{\"devid\": 0, \"mac\": \"00:16:3e:12:34:56\",\n"
    "               \"bridge\": \"xenbr0\", \"nictype\": \"vif\"}],\n"
    "    \"on_reboot\": \"restart\",\n"
    "    \"on_crash\": \"destroy\"\n"
    "}\n";

static struct orch_vm_config *parse_ok(const char *text)
{
    struct orch_config_error err = {0};
    struct orch_vm_config *c = NULL;
    int rc = orch_config_parse_string(text, strlen(text), "t.json", &c, &err);

    cr_assert_eq(rc, 0, "parse failed: %s", err.text);
    cr_assert_not_null(c);
    return c;
}

static char *gen(const struct orch_vm_config *c, unsigned flags)
{
    char *s = NULL;
    size_t len = 0;

    cr_assert_eq(orch_config_generate(c, flags, &s, &len), 0);
    cr_assert_eq(len, strlen(s));
    return s;
}

/* ---- round trips --------------------------------------------------------- */

Test(config, roundtrip_every_field_including_unknown)
{
    json_error_t jerr;
    json_t *input = json_loads(full_cfg, 0, &jerr);
    struct orch_vm_config *c, *c2;
    char *s1, *s2;

    cr_assert_not_null(input, "%s", jerr.text);
    c = parse_ok(full_cfg);
    /* Fully specified input: the model holds exactly what was written. */
    cr_assert(json_equal(orch_config_json(c), input),
              "normalized document differs from the input");
    s1 = gen(c, 0);
    c2 = parse_ok(s1);
    cr_assert(orch_config_equal(c, c2));
    cr_assert(json_equal(orch_config_json(c2), input));
    s2 = gen(c2, 0);
    cr_assert_str_eq(s1, s2);

    cr_assert_str_eq(orch_config_name(c2), "vm-1.test_A");
    cr_assert_str_eq(orch_config_uuid(c2),
                     "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9");
    cr_assert_eq(orch_config_max_mb(c2), 256);
    cr_assert_eq(orch_config_target_mb(c2), 192);
    cr_assert_eq(orch_config_vcpus(c2), 2);
    cr_assert_eq(orch_config_type(c2), ORCH_VM_QEMU);
    cr_assert_eq(orch_config_device_count(c2), 3);
    cr_assert_null(orch_config_xen_json(c2));
    /* Unknown nested values survive byte for byte. */
    cr_assert(json_equal(json_object_get(orch_config_json(c2), "x-unknown"),
                         json_object_get(input, "x-unknown")));
    free(s1);
    free(s2);
    orch_config_free(c);
    orch_config_free(c2);
    json_decref(input);
}

Test(config, pretty_form_parses_to_the_same)
{
    struct orch_vm_config *c = parse_ok(full_cfg), *c2;
    char *p = gen(c, ORCH_CONFIG_GEN_PRETTY);

    cr_assert_eq(p[strlen(p) - 1], '\n');
    cr_assert_not_null(strstr(p, "\n  \"cmdline\""));
    c2 = parse_ok(p);
    cr_assert(orch_config_equal(c, c2));
    free(p);
    orch_config_free(c);
    orch_config_free(c2);
}

Test(config, canonical_output_is_stable_and_sorted)
{
    static const char a[] =
        "{\"vcpus\":1,\"name\":\"x\",\"uuid\":"
        "\"AAAAAAAA-bbbb-4ccc-8ddd-eeeeeeeeeeee\",\"memory_mb\":64,"
        "\"z\":{\"b\":1,\"a\":2}}";
    static const char b[] =
        "{ \"z\" : { \"a\" : 2 , \"b\" : 1 },\n \"name\" : \"x\",\n"
        "  \"memory\": {\"target_mb\": 64, \"max_mb\": 64},\n"
        "  \"uuid\": \"aaaaaaaa-BBBB-4ccc-8ddd-eeeeeeeeeeee\",\n"
        "  \"qemu\": {\"machine\": \"pc\"} }";
    struct orch_vm_config *ca = parse_ok(a), *cb = parse_ok(b);
    char *sa = gen(ca, 0), *sb = gen(cb, 0);

    cr_assert(orch_config_equal(ca, cb));
    cr_assert_str_eq(sa, sb);
    cr_assert_str_eq(
        sa, "{\"memory\":{\"max_mb\":64,\"target_mb\":64},\"name\":\"x\","
            "\"qemu\":{\"accel\":\"auto\",\"binary\":\"qemu-system-x86_64\","
            "\"machine\":\"pc\"},\"uuid\":"
            "\"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee\",\"vcpus\":1,"
            "\"z\":{\"a\":2,\"b\":1}}");
    free(sa);
    free(sb);
    orch_config_free(ca);
    orch_config_free(cb);
}

Test(config, uuid_generated_once_and_kept)
{
    struct orch_vm_config *c = parse_ok("{\"name\":\"g\",\"memory_mb\":8}");
    struct orch_vm_config *c2, *c3;
    const char *u = orch_config_uuid(c);
    char *s;

    cr_assert_eq(strlen(u), 36);
    cr_assert_eq(u[14], '4', "version 4: %s", u);
    cr_assert(strchr("89ab", u[19]), "RFC 4122 variant: %s", u);
    s = gen(c, 0);
    c2 = parse_ok(s);
    cr_assert_str_eq(orch_config_uuid(c2), u);
    cr_assert(orch_config_equal(c, c2));
    /* A second parse of the uuid-less text makes another VM. */
    c3 = parse_ok("{\"name\":\"g\",\"memory_mb\":8}");
    cr_assert_str_neq(orch_config_uuid(c3), u);
    cr_assert_not(orch_config_equal(c, c3));
    free(s);
    orch_config_free(c);
    orch_config_free(c2);
    orch_config_free(c3);
}

Test(config, dup_is_deep)
{
    struct orch_vm_config *c = parse_ok(full_cfg), *d = NULL;

    cr_assert_eq(orch_config_dup(c, &d), 0);
    cr_assert(orch_config_equal(c, d));
    cr_assert_neq(orch_config_json(c), orch_config_json(d));
    cr_assert_eq(orch_config_device_remove(d, "com2"), 0);
    cr_assert_not(orch_config_equal(c, d));
    cr_assert_not_null(orch_config_device_get(c, "com2"));
    cr_assert_str_eq(orch_config_name(d), "vm-1.test_A");
    orch_config_free(c);
    orch_config_free(d);
}

/* ---- errors ----------------------------------------------------------- */

struct bad_case {
    const char *text;
    const char *path;    /* expected err.path */
    const char *message; /* expected substring of err.message */
};

static const struct bad_case bad_cases[] = {
    {"{\"memory_mb\": 64}", "$.name",
     "required field is missing: expected string"},
    {"{\"name\": \"bad name!\", \"memory_mb\": 64}", "$.name",
     "expected a name matching [A-Za-z0-9_.-]{1,64} (not \".\" or \"..\"), "
     "got \"bad name!\""},
    {"{\"name\": \"..\", \"memory_mb\": 64}", "$.name", "got \"..\""},
    {"{\"name\": 7, \"memory_mb\": 64}", "$.name",
     "expected string, got integer"},
    {"{\"name\": \"a\", \"memory\": {\"max_mb\": -5}}", "$.memory.max_mb",
     "expected integer between 1 and 16777216, got -5"},
    {"{\"name\": \"a\", \"memory_mb\": -1}", "$.memory_mb",
     "expected integer between 1 and 16777216, got -1"},
    {"{\"name\": \"a\", \"memory\": {\"max_mb\": 64, \"target_mb\": 65}}",
     "$.memory.target_mb", "expected integer between 1 and 64, got 65"},
    {"{\"name\": \"a\", \"memory\": {\"max_mb\": 1.5}}", "$.memory.max_mb",
     "expected integer between 1 and 16777216, got real"},
    {"{\"name\": \"a\"}", "$.memory", "required field is missing"},
    {"{\"name\": \"a\", \"memory\": 5}", "$.memory",
     "expected object, got integer"},
    {"{\"name\": \"a\", \"memory\": {\"max_mb\": 8}, \"memory_mb\": 8}",
     "$.memory_mb", "conflicts with $.memory"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"vcpus\": \"2\"}", "$.vcpus",
     "expected integer between 1 and 1024, got string"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"vcpus\": 0}", "$.vcpus",
     "expected integer between 1 and 1024, got 0"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"uuid\": \"1234\"}", "$.uuid",
     "expected a uuid xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, got \"1234\""},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"ramdisk\": \"/r\"}", "$.ramdisk",
     "needs $.kernel"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"kernel\": \"/k\", "
     "\"ramdisk\": \"/r,s\"}",
     "$.ramdisk", "expected a path without commas"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"kernel\": \"\"}", "$.kernel",
     "expected a non-empty path"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"disks\": [{\"path\": \"/a\"}, "
     "{\"format\": \"raw\"}]}",
     "$.disks[1].path", "required field is missing: expected string"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"disks\": [{\"path\": \"/a\", "
     "\"readonly\": \"yes\"}]}",
     "$.disks[0].readonly", "expected boolean, got string"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"disks\": [{\"path\": \"/a\"}, "
     "{\"path\": \"/b\", \"id\": \"disk0\"}]}",
     "$.disks[1].id", "duplicate disk id \"disk0\" (also $.disks[0].id)"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"disks\": {}}", "$.disks",
     "expected array, got object"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"devices\": ["
     "{\"driver\": \"isa-serial\", \"id\": \"s0\"},"
     "{\"driver\": \"isa-serial\", \"id\": \"s1\"},"
     "{\"driver\": \"isa-serial\", \"id\": \"s0\"}]}",
     "$.devices[2].id", "duplicate device id \"s0\" (also $.devices[0].id)"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"devices\": [{\"id\": \"s0\"}]}",
     "$.devices[0].driver", "required field is missing: expected string"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"devices\": ["
     "{\"driver\": \"x\", \"id\": 3}]}",
     "$.devices[0].id", "expected string, got integer"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"devices\": ["
     "{\"driver\": \"x\", \"id\": \"0bad\"}]}",
     "$.devices[0].id", "expected an id (a letter, then"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"devices\": ["
     "{\"driver\": \"x,y\", \"id\": \"d\"}]}",
     "$.devices[0].driver", "expected a QEMU device type"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"devices\": ["
     "{\"driver\": \"x\", \"id\": \"d\", \"bus\": {\"a\": 1}}]}",
     "$.devices[0].bus",
     "expected string, integer, real or boolean, got object"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"devices\": ["
     "{\"driver\": \"virtio-rng-pci\", \"id\": \"r\"}, "
     "{\"driver\": \"VGA\", \"id\": \"v\"}]}",
     "$.devices[1].driver", "device type \"VGA\" has guest RAM of its own"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"devices\": ["
     "{\"driver\": \"x\", \"id\": \"d\", \"a=b\": 1}]}",
     "$.devices[0][\"a=b\"]", "expected a property name"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"qemu\": {\"accel\": \"fast\"}}",
     "$.qemu.accel", "expected \"kvm\", \"tcg\" or \"auto\", got \"fast\""},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"qemu\": {\"machine\": \"pc,x=y\"}}",
     "$.qemu.machine", "expected a machine type"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"qemu\": {\"extra_args\": "
     "[\"-rtc\", 5]}}",
     "$.qemu.extra_args[1]", "expected string, got integer"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"qemu\": []}", "$.qemu",
     "expected object, got array"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"helpers\": 1}", "$.helpers",
     "expected array, got integer"},
    {"[1, 2]", "$", "expected an object, or an `xl list -l` array"},
    /* Xen forms: paths point into the document as written. */
    {"{\"c_info\": {\"type\": \"pv\"}, \"b_info\": {}}", "$.c_info.name",
     "required field is missing: expected string"},
    {"{\"xen\": {\"c_info\": {\"name\": \"g\"}, \"b_info\": "
     "{\"max_vcpus\": 0}}}",
     "$.xen.b_info.max_vcpus", "expected integer between 1 and 1024, got 0"},
    {"[{\"domid\": 3, \"config\": {\"c_info\": {\"name\": \"g\", "
     "\"uuid\": \"nope\"}}}]",
     "$[0].config.c_info.uuid", "expected a uuid"},
    {"{\"c_info\": {\"name\": \"g\"}, \"b_info\": {\"max_memkb\": 1024, "
     "\"target_memkb\": 2048}}",
     "$.b_info.target_memkb", "expected integer between 0 and 1024, got 2048"},
    {"{\"xen\": {\"c_info\": {\"name\": \"g\"}}, \"memory_mb\": 8}",
     "$.memory_mb", "not allowed in a Xen configuration"},
    {"{\"xen\": [], \"helpers\": []}", "$.xen", "expected object"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"nics\": [{\"path\": \"/s\"}]}",
     "$.nics[0].id", "required field is missing"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"nics\": [{\"id\": \"n0\"}]}",
     "$.nics[0].path", "required field is missing"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"nics\": [{\"id\": \"n0\", "
     "\"backend\": \"user\"}]}",
     "$.nics[0].backend", "expected \"stream\" or \"tap\", got \"user\""},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"nics\": [{\"id\": \"n0\", "
     "\"backend\": \"tap\", \"ifname\": \"a,b\"}]}",
     "$.nics[0].ifname", "expected an interface name"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"nics\": [{\"id\": \"n0\", "
     "\"path\": \"/s\", \"mac\": \"52:54:00:12:34\"}]}",
     "$.nics[0].mac", "expected a MAC"},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"nics\": [{\"id\": \"n0\", "
     "\"path\": \"/s\"}, {\"id\": \"n0\", \"path\": \"/t\"}]}",
     "$.nics[1].id", "duplicate NIC id \"n0\""},
    {"{\"name\": \"a\", \"memory_mb\": 8, \"devices\": [{\"driver\": "
     "\"virtio-rng-pci\", \"id\": \"n0\"}], \"nics\": [{\"id\": \"n0\", "
     "\"path\": \"/s\"}]}",
     "$.nics[0].id", "is also $.devices[0].id"},
    {"{\"xen\": {\"c_info\": {\"name\": \"g\"}}, \"nics\": []}", "$.nics",
     "not allowed in a Xen configuration"},
};

Test(config, malformed_configs_point_at_the_place)
{
    size_t i;

    for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *b = &bad_cases[i];
        struct orch_config_error err = {0};
        struct orch_vm_config *c = (void *)1;
        char want[1400];
        int rc;

        memset(&err, 0x55, sizeof(err));
        rc = orch_config_parse_string(b->text, strlen(b->text), "vm.json", &c,
                                      &err);
        cr_assert_eq(rc, -COLO_ECONFIG, "case %zu: rc %d", i, rc);
        cr_assert_null(c, "case %zu", i);
        cr_assert_str_eq(err.path, b->path, "case %zu: %s", i, err.text);
        cr_assert_not_null(strstr(err.message, b->message),
                           "case %zu: message \"%s\" lacks \"%s\"", i,
                           err.message, b->message);
        cr_assert_str_eq(err.source, "vm.json");
        cr_assert_eq(err.line, 0);
        snprintf(want, sizeof(want), "vm.json: %s: %s", b->path, err.message);
        cr_assert_str_eq(err.text, want, "case %zu", i);
    }
}

Test(config, syntax_error_has_line_and_column)
{
    static const char text[] = "{\"name\": \"a\",\n  \"memory_mb\": 8,\n"
                               "  \"vcpus\": }\n";
    struct orch_config_error err = {0};
    struct orch_vm_config *c;

    cr_assert_eq(
        orch_config_parse_string(text, strlen(text), "vm.json", &c, &err),
        -COLO_ECONFIG);
    cr_assert_eq(err.line, 3);
    cr_assert_eq(err.column, 12, "column %d", err.column);
    cr_assert_str_eq(err.path, "");
    cr_assert(strncmp(err.text, "vm.json:3:12: syntax error: ", 28) == 0, "%s",
              err.text);
}

Test(config, duplicate_json_key_is_a_syntax_error)
{
    static const char text[] = "{\"name\": \"a\",\n\"name\": \"b\", "
                               "\"memory_mb\": 8}";
    struct orch_config_error err = {0};
    struct orch_vm_config *c;

    cr_assert_eq(orch_config_parse_string(text, strlen(text), NULL, &c, &err),
                 -COLO_ECONFIG);
    cr_assert_eq(err.line, 2);
    cr_assert_not_null(strstr(err.message, "duplicate object key"), "%s",
                       err.message);
    cr_assert(strncmp(err.text, "<string>:2:", 11) == 0, "%s", err.text);
}

/* Write a config padded with spaces to exactly size bytes. */
static void write_padded(const char *path, size_t size)
{
    static const char body[] = "{\"name\": \"big\", \"memory_mb\": 8}";
    char *buf = malloc(size);
    FILE *f;

    cr_assert_not_null(buf);
    memset(buf, ' ', size);
    memcpy(buf, body, strlen(body));
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(buf, 1, size, f), size);
    cr_assert_eq(fclose(f), 0);
    free(buf);
}

Test(config, file_size_cap)
{
    char dir[] = "/tmp/colo-config-XXXXXX", path[64];
    struct orch_config_error err = {0};
    struct orch_vm_config *c = NULL;
    char *big;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/vm.json", dir);
    write_padded(path, ORCH_CONFIG_MAX_BYTES);
    cr_assert_eq(orch_config_parse_file(path, &c, &err), 0, "%s", err.text);
    cr_assert_str_eq(orch_config_name(c), "big");
    orch_config_free(c);

    write_padded(path, ORCH_CONFIG_MAX_BYTES + 1);
    cr_assert_eq(orch_config_parse_file(path, &c, &err), -COLO_ECONFIG);
    cr_assert_null(c);
    cr_assert_str_eq(err.source, path);
    cr_assert_not_null(strstr(err.text, "larger than the cap of 1048576"), "%s",
                       err.text);

    /* The same cap on text from a stream. */
    big = calloc(1, ORCH_CONFIG_MAX_BYTES + 2);
    cr_assert_not_null(big);
    memset(big, ' ', ORCH_CONFIG_MAX_BYTES + 1);
    cr_assert_eq(orch_config_parse_string(big, ORCH_CONFIG_MAX_BYTES + 1,
                                          "stream", &c, &err),
                 -COLO_ECONFIG);
    cr_assert_not_null(strstr(err.text, "stream: document is 1048577 bytes"),
                       "%s", err.text);
    free(big);
    unlink(path);
    rmdir(dir);
}

Test(config, file_errors_name_the_file)
{
    char dir[] = "/tmp/colo-config-XXXXXX", path[64];
    struct orch_config_error err = {0};
    struct orch_vm_config *c = NULL;
    FILE *f;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/nothere.json", dir);
    cr_assert_eq(orch_config_parse_file(path, &c, &err), -ENOENT);
    cr_assert_str_eq(err.source, path);
    cr_assert_not_null(strstr(err.text, "cannot read"));

    snprintf(path, sizeof(path), "%s/vm.json", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\"name\": \"ok\",\n \"memory_mb\": 8,\n \"devices\": "
          "[{\"driver\": \"x\", \"id\": \"a\"}, {\"driver\": \"x\", "
          "\"id\": \"a\"}]}\n",
          f);
    fclose(f);
    cr_assert_eq(orch_config_parse_file(path, &c, &err), -COLO_ECONFIG);
    cr_assert_str_eq(err.path, "$.devices[1].id");
    cr_assert(strncmp(err.text, path, strlen(path)) == 0, "%s", err.text);
    unlink(path);
    rmdir(dir);
}

/* ---- the libxl form ----------------------------------------------------- */

Test(config, xen_bare_libxl_round_trip_keeps_unknown_fields)
{
    json_error_t jerr;
    json_t *input = json_loads(xen_cfg, 0, &jerr);
    struct orch_vm_config *c = parse_ok(xen_cfg), *c2;
    json_t *back;
    char *x, *s;

    cr_assert_not_null(input);
    cr_assert_eq(orch_config_type(c), ORCH_VM_XEN);
    cr_assert_str_eq(orch_config_name(c), "guest1");
    cr_assert_str_eq(orch_config_uuid(c),
                     "6d8c5c62-87a9-4b52-9e73-2b6c9a6b1f0d");
    cr_assert_eq(orch_config_max_mb(c), 128);
    cr_assert_eq(orch_config_target_mb(c), 128);
    cr_assert_eq(orch_config_vcpus(c), 2);
    cr_assert(json_equal(orch_config_xen_json(c), input));

    /* The libxl form alone, as xl's save header carries it. */
    cr_assert_eq(orch_config_generate_xen(c, ORCH_CONFIG_GEN_PRETTY, &x, NULL),
                 0);
    back = json_loads(x, 0, &jerr);
    cr_assert_not_null(back);
    cr_assert(json_equal(back, input));
    json_decref(back);

    /* colo's form wraps it in "xen"; parsing that gives the same VM. */
    s = gen(c, 0);
    cr_assert(strncmp(s, "{\"xen\":{\"b_info\":", 17) == 0, "%s", s);
    c2 = parse_ok(s);
    cr_assert(orch_config_equal(c, c2));
    cr_assert(json_equal(orch_config_xen_json(c2), input));
    free(x);
    free(s);
    orch_config_free(c);
    orch_config_free(c2);
    json_decref(input);
}

Test(config, xen_xl_list_form_and_generated_uuid)
{
    static const char text[] =
        "[{\"domid\": 7, \"config\": {\"c_info\": {\"name\": \"d7\", "
        "\"type\": \"hvm\"}, \"b_info\": {\"type.hvm\": {\"vga\": "
        "{\"kind\": \"none\"}}}}}]";
    struct orch_vm_config *c = parse_ok(text), *d = NULL;
    const json_t *x = orch_config_xen_json(c);
    const char *u;

    cr_assert_eq(orch_config_type(c), ORCH_VM_XEN);
    cr_assert_str_eq(orch_config_name(c), "d7");
    cr_assert_eq(orch_config_max_mb(c), 0, "libxl default: unknown");
    cr_assert_eq(orch_config_vcpus(c), 0);
    u = orch_config_uuid(c);
    cr_assert_eq(strlen(u), 36);
    cr_assert_str_eq(json_string_value(
                         json_object_get(json_object_get(x, "c_info"), "uuid")),
                     u);
    cr_assert_str_eq(
        json_string_value(json_object_get(
            json_object_get(
                json_object_get(json_object_get(x, "b_info"), "type.hvm"),
                "vga"),
            "kind")),
        "none");
    cr_assert_null(json_object_get(x, "domid"));
    /* Mutations on a Xen VM speak libxl. */
    cr_assert_eq(orch_config_set_target_mb(c, 96, NULL), 0);
    cr_assert_eq(json_integer_value(json_object_get(
                     json_object_get(orch_config_xen_json(c), "b_info"),
                     "target_memkb")),
                 96 * 1024);
    cr_assert_eq(orch_config_dup(c, &d), 0);
    cr_assert_eq(orch_config_target_mb(d), 96);
    {
        json_t *dev = json_pack("{s:s,s:s}", "driver", "x", "id", "y");

        cr_assert_eq(orch_config_device_add(c, dev, NULL), -EOPNOTSUPP);
        json_decref(dev);
    }
    orch_config_free(c);
    orch_config_free(d);
}

Test(config, xen_set_target_respects_max)
{
    struct orch_vm_config *c = parse_ok(xen_cfg);
    struct orch_config_error err = {0};

    cr_assert_eq(orch_config_set_target_mb(c, 129, &err), -COLO_ECONFIG);
    cr_assert_str_eq(err.path, "$.xen.b_info.target_memkb");
    cr_assert_eq(orch_config_target_mb(c), 128);
    cr_assert_eq(orch_config_set_target_mb(c, 64, &err), 0);
    cr_assert_eq(orch_config_target_mb(c), 64);
    orch_config_free(c);
}

/* ---- mutation ----------------------------------------------------------- */

Test(config, mutation_helpers)
{
    struct orch_vm_config *c = parse_ok(full_cfg), *c2;
    struct orch_config_error err = {0};
    json_t *dev;
    char *s;

    /* mem-set */
    cr_assert_eq(orch_config_set_target_mb(c, 300, &err), -COLO_ECONFIG);
    cr_assert_str_eq(err.path, "$.memory.target_mb");
    cr_assert_not_null(strstr(err.message, "got 300"));
    cr_assert_eq(orch_config_set_target_mb(c, 0, &err), -COLO_ECONFIG);
    cr_assert_eq(orch_config_target_mb(c), 192);
    cr_assert_eq(orch_config_set_target_mb(c, 128, &err), 0);
    cr_assert_eq(orch_config_target_mb(c), 128);

    /* device-add */
    dev = json_pack("{s:s,s:s,s:s}", "driver", "isa-serial", "id", "com3",
                    "chardev", "c3");
    cr_assert_eq(orch_config_device_add(c, dev, &err), 0);
    cr_assert_eq(orch_config_device_count(c), 4);
    cr_assert(json_equal(orch_config_device_get(c, "com3"), dev));
    cr_assert_neq(orch_config_device_get(c, "com3"), dev, "deep-copied");
    cr_assert_eq(orch_config_device_add(c, dev, &err), -EEXIST);
    cr_assert_str_eq(err.path, "$.devices[4].id");
    cr_assert_not_null(strstr(err.message, "duplicate device id \"com3\""));
    json_decref(dev);
    dev = json_pack("{s:s,s:[]}", "id", "nodrv", "x", NULL);
    cr_assert_eq(orch_config_device_add(c, dev, &err), -COLO_ECONFIG);
    cr_assert_str_eq(err.path, "$.devices[4].driver");
    json_decref(dev);
    cr_assert_eq(orch_config_device_count(c), 4);

    /* device-remove */
    cr_assert_eq(orch_config_device_remove(c, "port0"), 0);
    cr_assert_eq(orch_config_device_remove(c, "port0"), -ENOENT);
    cr_assert_null(orch_config_device_get(c, "port0"));
    cr_assert_eq(orch_config_device_count(c), 3);

    /* The changes survive a round trip. */
    s = gen(c, 0);
    c2 = parse_ok(s);
    cr_assert(orch_config_equal(c, c2));
    cr_assert_eq(orch_config_target_mb(c2), 128);
    cr_assert_not_null(orch_config_device_get(c2, "com3"));
    cr_assert_null(orch_config_device_get(c2, "port0"));
    free(s);
    orch_config_free(c);
    orch_config_free(c2);
}

Test(config, device_add_to_config_without_devices)
{
    struct orch_vm_config *c = parse_ok("{\"name\":\"a\",\"memory_mb\":8}");
    json_t *dev =
        json_pack("{s:s,s:s}", "driver", "virtio-rng-pci", "id", "rng0");

    cr_assert_eq(orch_config_device_count(c), 0);
    cr_assert_eq(orch_config_device_remove(c, "rng0"), -ENOENT);
    cr_assert_eq(orch_config_device_add(c, dev, NULL), 0);
    cr_assert_eq(orch_config_device_count(c), 1);
    json_decref(dev);
    orch_config_free(c);
}

/* ---- argv -----------------------------------------------------------------
 */

static char *join(char **argv)
{
    size_t n = 1, i;
    char *s;

    for (i = 0; argv[i]; i++)
        n += strlen(argv[i]) + 1;
    s = calloc(1, n);
    cr_assert_not_null(s);
    for (i = 0; argv[i]; i++) {
        if (i)
            strcat(s, " ");
        strcat(s, argv[i]);
    }
    return s;
}

Test(config, argv_full)
{
    struct orch_vm_config *c = parse_ok(full_cfg);
    static const char *const extra[] = {"-chardev", "socket,id=qmp,fd=5", NULL};
    struct orch_qemu_launch_params p = {
        .ram_path = "/dev/shm/ram,1",
        .serial_path = "/tmp/s,erial",
        .paused = 1,
        .kvm = ORCH_KVM_DETECT,
        .extra_args = extra,
    };
    char **argv = NULL, *s;

    cr_assert_eq(orch_config_qemu_argv(c, &p, &argv), 0);
    s = join(argv);
    cr_assert_str_eq(
        s, "/usr/bin/qemu-system-x86_64 -name vm-1.test_A -uuid "
           "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9 -nodefaults -no-user-config "
           "-vga none -display none -machine pc-i440fx-7.2,memory-backend=ram "
           "-object memory-backend-file,id=ram,size=256M,"
           "mem-path=/dev/shm/ram,,1,share=on -m 256M -smp 2 -accel tcg "
           "-cpu max -kernel /boot/vmlinuz -initrd /boot/initrd.img "
           "-append console=ttyS0 root=/dev/vda "
           "-drive file=/var/lib/colo/a.img,format=raw,if=virtio,id=disk0 "
           "-drive file=/var/lib/colo/b,,c.qcow2,format=qcow2,if=none,"
           "id=data,readonly=on "
           "-device virtio-serial-pci,id=vs0 "
           "-device virtserialport,id=port0,bus=vs0.0,name=org.colo,,1,nr=1 "
           "-device isa-serial,id=com2,index=1,ratio=0.25,x-flag=on "
           "-chardev file,id=serial0,path=/tmp/s,,erial -serial "
           "chardev:serial0 -S -rtc base=utc -chardev socket,id=qmp,fd=5");
    /* -append is one argument even with spaces. */
    for (size_t i = 0; argv[i]; i++)
        if (!strcmp(argv[i], "-append"))
            cr_assert_str_eq(argv[i + 1], "console=ttyS0 root=/dev/vda");
    free(s);
    orch_config_argv_free(argv);
    orch_config_free(c);
}

Test(config, argv_nics)
{
    static const char text[] =
        "{\"name\": \"n\", \"memory_mb\": 16, \"uuid\": "
        "\"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\", \"nics\": ["
        "{\"id\": \"net0\", \"path\": \"/tmp/w,s.sock\", \"mac\": "
        "\"52:54:00:12:34:56\"},"
        "{\"id\": \"net1\", \"backend\": \"tap\", \"ifname\": \"tap7\", "
        "\"model\": \"e1000\"}]}";
    struct orch_vm_config *c = parse_ok(text);
    struct orch_qemu_launch_params p = {.ram_path = "/r", .kvm = ORCH_KVM_NO};
    json_t *dev =
        json_pack("{s:s,s:s}", "driver", "virtio-rng-pci", "id", "net1");
    struct orch_config_error err;
    char **argv = NULL, *s, *g;

    cr_assert_eq(orch_config_qemu_argv(c, &p, &argv), 0);
    s = join(argv);
    cr_assert_not_null(
        strstr(s, " -netdev stream,id=net0,server=off,addr.type=unix,"
                  "addr.path=/tmp/w,,s.sock -device virtio-net-pci,id=net0,"
                  "netdev=net0,mac=52:54:00:12:34:56 -netdev tap,id=net1,"
                  "ifname=tap7,script=no,downscript=no -device e1000,id=net1,"
                  "netdev=net1"),
        "%s", s);
    cr_assert_eq(orch_config_nic_count(c), 2);
    cr_assert_str_eq(orch_config_nic_id(c, 1), "net1");
    cr_assert_null(orch_config_nic_id(c, 2));
    /* Defaults are written out; a device may not take a NIC's id. */
    g = gen(c, 0);
    cr_assert_not_null(strstr(g, "\"backend\":\"stream\""), "%s", g);
    cr_assert_not_null(strstr(g, "\"model\":\"virtio-net-pci\""), "%s", g);
    cr_assert_eq(orch_config_device_add(c, dev, &err), -EEXIST);
    cr_assert_eq(orch_config_device_count(c), 0);
    free(g);
    free(s);
    json_decref(dev);
    orch_config_argv_free(argv);
    orch_config_free(c);
}

Test(config, argv_incoming_defer_and_accel)
{
    struct orch_vm_config *c =
        parse_ok("{\"name\":\"sec\",\"uuid\":"
                 "\"00000000-0000-4000-8000-000000000001\",\"memory_mb\":64,"
                 "\"devices\":[{\"driver\":\"isa-serial\",\"id\":\"s\","
                 "\"x\":false}]}");
    struct orch_qemu_launch_params p = {
        .ram_path = "/r",
        .serial_path = "/c",
        .incoming_defer = 1,
        .kvm = ORCH_KVM_YES,
    };
    char **argv = NULL, *s;

    cr_assert_eq(orch_config_qemu_argv(c, &p, &argv), 0);
    s = join(argv);
    cr_assert_str_eq(
        s, "qemu-system-x86_64 -name sec -uuid "
           "00000000-0000-4000-8000-000000000001 -nodefaults -no-user-config "
           "-vga none -display none -machine "
           "pc,memory-backend=ram,suppress-vmdesc=on "
           "-object memory-backend-file,id=ram,size=64M,mem-path=/r,share=on "
           "-m 64M -smp 1 -accel kvm -device isa-serial,id=s,x=off "
           "-chardev file,id=serial0,path=/c,append=on -serial "
           "chardev:serial0 "
           "-S -incoming defer -global migration.send-configuration=off");
    free(s);
    orch_config_argv_free(argv);

    p.kvm = ORCH_KVM_NO;
    p.incoming_defer = 0;
    cr_assert_eq(orch_config_qemu_argv(c, &p, &argv), 0);
    s = join(argv);
    cr_assert_not_null(strstr(s, " -accel tcg "));
    cr_assert_null(strstr(s, "suppress-vmdesc"));
    cr_assert_null(strstr(s, "-incoming"));
    cr_assert_null(strstr(s, " -S"));
    cr_assert_null(strstr(s, "append=on")); /* a primary's console */
    free(s);
    orch_config_argv_free(argv);

    p.ram_path = NULL;
    cr_assert_eq(orch_config_qemu_argv(c, &p, &argv), -EINVAL);
    cr_assert_null(argv);
    orch_config_free(c);

    c = parse_ok(xen_cfg);
    p.ram_path = "/r";
    cr_assert_eq(orch_config_qemu_argv(c, &p, &argv), -EINVAL);
    orch_config_free(c);
}

Test(config, qemu_escape)
{
    char *s = orch_config_qemu_escape(",a,,b,");

    cr_assert_str_eq(s, ",,a,,,,b,,");
    free(s);
    s = orch_config_qemu_escape("");
    cr_assert_str_eq(s, "");
    free(s);
}

/* ---- caps: every count and size at the cap passes, one over fails ----- */

static json_t *base_doc(void)
{
    return json_pack("{s:s,s:i}", "name", "cap", "memory_mb", 8);
}

static void expect_from_json(json_t *doc, int ok, const char *path,
                             const char *msg)
{
    struct orch_config_error err = {0}; /* read by the assert message */
    struct orch_vm_config *c = NULL;
    int rc = orch_config_from_json(doc, "caps", &c, &err);

    if (ok) {
        cr_assert_eq(rc, 0, "%s", err.text);
        orch_config_free(c);
    } else {
        cr_assert_eq(rc, -COLO_ECONFIG);
        cr_assert_str_eq(err.path, path, "%s", err.text);
        cr_assert_not_null(strstr(err.message, msg), "%s", err.text);
    }
    json_decref(doc);
}

static json_t *with_devices(size_t n)
{
    json_t *doc = base_doc(), *devs = json_array();
    size_t i;

    for (i = 0; i < n; i++) {
        char id[24];

        snprintf(id, sizeof(id), "d%zu", i);
        json_array_append_new(
            devs, json_pack("{s:s,s:s}", "driver", "isa-serial", "id", id));
    }
    json_object_set_new(doc, "devices", devs);
    return doc;
}

Test(config, caps_devices)
{
    struct orch_vm_config *c = NULL;
    struct orch_config_error err = {0};
    json_t *dev;

    expect_from_json(with_devices(ORCH_CONFIG_MAX_DEVICES), 1, NULL, NULL);
    expect_from_json(with_devices(ORCH_CONFIG_MAX_DEVICES + 1), 0, "$.devices",
                     "expected at most 256 devices, got 257");

    /* device-add at the cap */
    dev = with_devices(ORCH_CONFIG_MAX_DEVICES);
    cr_assert_eq(orch_config_from_json(dev, NULL, &c, &err), 0);
    json_decref(dev);
    dev = json_pack("{s:s,s:s}", "driver", "isa-serial", "id", "extra");
    cr_assert_eq(orch_config_device_add(c, dev, &err), -COLO_ECONFIG);
    cr_assert_str_eq(err.path, "$.devices");
    cr_assert_eq(orch_config_device_count(c), ORCH_CONFIG_MAX_DEVICES);
    json_decref(dev);
    orch_config_free(c);
}

Test(config, caps_disks_props_args_strings)
{
    json_t *doc, *arr, *dev;
    char *s;
    size_t i;

    for (int over = 0; over <= 1; over++) {
        doc = base_doc();
        arr = json_array();
        for (i = 0; i < ORCH_CONFIG_MAX_DISKS + (size_t)over; i++) {
            char id[24];

            snprintf(id, sizeof(id), "k%zu", i);
            json_array_append_new(
                arr, json_pack("{s:s,s:s}", "path", "/d", "id", id));
        }
        json_object_set_new(doc, "disks", arr);
        expect_from_json(doc, !over, "$.disks",
                         "expected at most 64 disks, got 65");

        doc = base_doc();
        dev = json_pack("{s:s,s:s}", "driver", "x", "id", "p");
        for (i = 0; i < ORCH_CONFIG_MAX_PROPS + (size_t)over; i++) {
            char key[24];

            snprintf(key, sizeof(key), "p%zu", i);
            json_object_set_new(dev, key, json_integer((json_int_t)i));
        }
        json_object_set_new(doc, "devices", json_pack("[o]", dev));
        expect_from_json(doc, !over, "$.devices[0]",
                         "expected at most 64 properties, got 65");

        doc = base_doc();
        arr = json_array();
        for (i = 0; i < ORCH_CONFIG_MAX_EXTRA + (size_t)over; i++)
            json_array_append_new(arr, json_string("-x"));
        json_object_set_new(doc, "qemu", json_pack("{s:o}", "extra_args", arr));
        expect_from_json(doc, !over, "$.qemu.extra_args",
                         "expected at most 256 arguments, got 257");

        doc = base_doc();
        s = malloc(ORCH_CONFIG_MAX_STRING + 2);
        cr_assert_not_null(s);
        memset(s, 'c', ORCH_CONFIG_MAX_STRING + (size_t)over);
        s[ORCH_CONFIG_MAX_STRING + over] = '\0';
        json_object_set_new(doc, "kernel", json_string("/k"));
        json_object_set_new(doc, "cmdline", json_string(s));
        free(s);
        expect_from_json(doc, !over, "$.cmdline",
                         "expected string of at most 4096 bytes, got 4097");

        doc = base_doc();
        json_object_set_new(doc, "vcpus", json_integer(1024 + over));
        expect_from_json(doc, !over, "$.vcpus",
                         "expected integer between 1 and 1024, got 1025");

        doc = base_doc();
        json_object_set_new(doc, "memory_mb",
                            json_integer(ORCH_CONFIG_MAX_MEM_MB + over));
        expect_from_json(doc, !over, "$.memory_mb",
                         "expected integer between 1 and 16777216, "
                         "got 16777217");
    }
}

Test(config, deep_nesting_is_refused_not_a_crash)
{
    size_t depth = 5000, i, n = 0;
    char *text = malloc(2 * depth + 64);
    struct orch_config_error err = {0};
    struct orch_vm_config *c = (void *)1;

    cr_assert_not_null(text);
    n += (size_t)sprintf(text, "{\"name\":\"a\",\"memory_mb\":8,\"x\":");
    for (i = 0; i < depth; i++)
        text[n++] = '[';
    for (i = 0; i < depth; i++)
        text[n++] = ']';
    text[n++] = '}';
    cr_assert_eq(orch_config_parse_string(text, n, "deep", &c, &err),
                 -COLO_ECONFIG);
    cr_assert_null(c);
    cr_assert_eq(err.line, 1);
    cr_assert_not_null(strstr(err.message, "depth"), "%s", err.text);
    free(text);
}

/* The examples in docs/config.md parse (and say what the text says). */
Test(config, docs_examples_parse)
{
    char *doc = NULL, *p;
    size_t len = 0;
    int n = 0;

    cr_assert_eq(
        colo_read_file(COLO_SOURCE_DIR "/docs/config.md", 1 << 20, &doc, &len),
        0);
    for (p = strstr(doc, "```json\n"); p; p = strstr(p, "```json\n")) {
        char *start = p + 8, *end = strstr(start, "```");
        struct orch_config_error err = {0};
        struct orch_vm_config *c = NULL;

        cr_assert_not_null(end);
        cr_assert_eq(orch_config_parse_string(start, (size_t)(end - start),
                                              "docs/config.md", &c, &err),
                     0, "%s", err.text);
        if (n == 0) {
            cr_assert_str_eq(orch_config_name(c), "web1");
            cr_assert_eq(orch_config_target_mb(c), 768);
        } else {
            cr_assert_eq(orch_config_type(c), ORCH_VM_XEN);
            cr_assert_str_eq(orch_config_name(c), "guest1");
        }
        orch_config_free(c);
        n++;
        p = end + 3;
    }
    cr_assert_eq(n, 2, "two JSON examples in docs/config.md");
    free(doc);
}

/* COLO mode refuses a disk the secondary's running copy would open for
 * writing (issue 25; relaxed once disks are replicated). */
Test(config, colo_refuses_writable_disks)
{
    struct orch_vm_config *c = parse_ok(
        "{\"name\":\"d\",\"memory_mb\":64,\"disks\":[{\"path\":\"/ro.img\","
        "\"readonly\":true},{\"path\":\"/srv/rw.qcow2\",\"format\":\"qcow2\","
        "\"id\":\"data\"}]}");
    struct orch_vm_config *ro = parse_ok(
        "{\"name\":\"d\",\"memory_mb\":64,\"disks\":[{\"path\":\"/ro.img\","
        "\"readonly\":true}]}");
    struct orch_vm_config *none = parse_ok("{\"name\":\"d\",\"memory_mb\":64}");
    char why[512] = "";

    cr_assert_eq(orch_config_colo_disks_check(c, why, sizeof(why)),
                 -COLO_ECONFIG);
    cr_assert_not_null(strstr(why, "'data'"), "%s", why);
    cr_assert_not_null(strstr(why, "/srv/rw.qcow2"), "%s", why);
    cr_assert_not_null(strstr(why, "--mode remus"), "%s", why);
    cr_assert_eq(orch_config_colo_disks_check(ro, why, sizeof(why)), 0);
    cr_assert_eq(orch_config_colo_disks_check(none, why, sizeof(why)), 0);
    orch_config_free(c);
    orch_config_free(ro);
    orch_config_free(none);
}
