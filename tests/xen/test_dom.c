/*
 * Xen domain operations that run without a hypervisor: the libxl JSON
 * configuration -> domain-creation parameters, and a clean refusal to open
 * when there is no Xen. The operations themselves run in the nested Xen
 * tests (tests/nested).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/xen_dm.h"
#include "checkpoint/xen_dom.h"
#include "qmp/launch.h"
#include "common/error.h"

/* The shape `xl list -l` / xl's save header use (libxl_domain_config). */
static const char pvh_cfg[] =
    "{\"c_info\": {\"type\": \"pvh\", \"name\": \"tick\", "
    "\"uuid\": \"6b3c1a4e-0d2f-4a8b-9c1d-2e3f4a5b6c7d\", \"hap\": \"False\", "
    "\"run_hotplug_scripts\": \"True\"},"
    " \"b_info\": {\"max_vcpus\": 2, \"avail_vcpus\": [0, 1],"
    " \"max_memkb\": 131072, \"target_memkb\": 131072,"
    " \"shadow_memkb\": 2048, \"event_channels\": 1023,"
    " \"max_grant_frames\": 64, \"max_maptrack_frames\": 1024,"
    " \"max_grant_version\": 1, \"tsc_mode\": \"native\","
    " \"vcpu_hard_affinity\": [[1], [0, 1, 99]],"
    " \"type.pvh\": {}, \"arch_arm\": {}},"
    " \"on_reboot\": \"restart\"}";

Test(dom, libxl_json_pvh)
{
    struct ckpt_xen_newdom nd;
    char why[256] = "";

    cr_assert_eq(ckpt_xen_newdom_from_json(pvh_cfg, strlen(pvh_cfg), &nd, why,
                                           sizeof(why)),
                 0, "%s", why);
    cr_assert_eq(nd.type, CKPT_XEN_DOM_PVH);
    cr_assert_str_eq(nd.name, "tick");
    cr_assert(nd.have_uuid);
    cr_assert_eq(nd.uuid[0], 0x6b);
    cr_assert_eq(nd.uuid[15], 0x7d);
    cr_assert_eq(nd.max_vcpus, 2);
    cr_assert_eq(nd.avail_vcpus_mask, 3);
    cr_assert_eq(nd.max_memkb, 131072);
    cr_assert_eq(nd.target_memkb, 131072);
    cr_assert_eq(nd.shadow_memkb, 2048);
    cr_assert_eq(nd.max_grant_frames, 64);
    cr_assert_eq(nd.max_maptrack_frames, 1024);
    cr_assert_eq(nd.max_grant_version, 1);
    cr_assert_eq(nd.tsc_mode, 2);
    cr_assert_eq(nd.hard_affinity[0], 2);
    cr_assert_eq(nd.hard_affinity[1], 3); /* CPU 99: beyond the mask */
    cr_assert_eq(nd.hard_affinity[2], 0);
    cr_assert_not(nd.hap); /* xl's hap = 0: shadow paging */
}

Test(dom, libxl_json_defaults)
{
    static const char cfg[] =
        "{\"c_info\": {\"type\": \"pv\", \"name\": \"p\"},"
        " \"b_info\": {\"max_memkb\": 65536}}";
    struct ckpt_xen_newdom nd;
    char why[256] = "";

    cr_assert_eq(
        ckpt_xen_newdom_from_json(cfg, strlen(cfg), &nd, why, sizeof(why)), 0,
        "%s", why);
    cr_assert_eq(nd.type, CKPT_XEN_DOM_PV);
    cr_assert_not(nd.have_uuid);
    cr_assert_eq(nd.max_vcpus, 1);
    cr_assert_eq(nd.target_memkb, 65536); /* target defaults to max */
    cr_assert_eq(nd.event_channels, 1023);
    cr_assert_eq(nd.max_grant_frames, -1);
    cr_assert_eq(nd.max_grant_version, -1);
    cr_assert_eq(nd.tsc_mode, 0);
    cr_assert(nd.hap); /* hardware paging unless the config says not */
}

static void bad(const char *cfg, const char *expect)
{
    struct ckpt_xen_newdom nd;
    char why[256] = "";

    cr_assert_eq(
        ckpt_xen_newdom_from_json(cfg, strlen(cfg), &nd, why, sizeof(why)),
        -EINVAL, "accepted: %s", cfg);
    cr_assert(strstr(why, expect), "'%s' does not say '%s'", why, expect);
}

Test(dom, libxl_json_rejected)
{
    bad("{\"c_info\": ", "line 1");
    bad("{\"name\": \"x\"}", "no c_info/b_info");
    bad("{\"c_info\": {\"type\": \"xen\", \"name\": \"a\"}, \"b_info\": {}}",
        "c_info.type");
    bad("{\"c_info\": {\"type\": \"pvh\"}, \"b_info\": {}}", "c_info.name");
    bad("{\"c_info\": {\"type\": \"pvh\", \"name\": \"a\", \"uuid\": \"zz\"},"
        " \"b_info\": {\"max_memkb\": 1}}",
        "c_info.uuid");
    bad("{\"c_info\": {\"type\": \"pvh\", \"name\": \"a\"},"
        " \"b_info\": {\"max_vcpus\": 100000, \"max_memkb\": 1}}",
        "max_vcpus");
    bad("{\"c_info\": {\"type\": \"pvh\", \"name\": \"a\"}, \"b_info\": {}}",
        "max_memkb");
    bad("{\"c_info\": {\"type\": \"pvh\", \"name\": \"a\"},"
        " \"b_info\": {\"max_memkb\": 1, \"tsc_mode\": \"native_paravirt\"}}",
        "tsc_mode");
}

/* An HVM tick guest as libxl records it (b_info's keyed union is
 * "type.hvm"). */
static const char hvm_cfg[] =
    "{\"c_info\": {\"type\": \"hvm\", \"name\": \"tick\"},"
    " \"b_info\": {\"max_vcpus\": 2, \"max_memkb\": 139264,"
    " \"target_memkb\": 139264, \"video_memkb\": 8192,"
    " \"device_model_version\": \"qemu_xen\","
    " \"timer_mode\": \"one_missed_tick_pending\","
    " \"type.hvm\": {\"hpet\": \"False\", \"vpt_align\": \"True\","
    " \"acpi\": \"True\", \"vga\": {\"kind\": \"cirrus\"},"
    " \"vnc\": {\"enable\": \"False\"}, \"sdl\": {\"enable\": \"False\"},"
    " \"serial\": \"pty\", \"boot\": \"c\", \"rdm\": {}}},"
    " \"disks\": [], \"nics\": []}";

/* What libxl 4.17 recorded for the nested HVM tick guest (`xl list -l`,
 * tests/nested/scenarios/xl_hvm.sh), and the device model command line it
 * ran for it (/proc/PID/cmdline there). */
static const char xl_hvm_cfg[] =
    "{\"c_info\": {\"type\": \"hvm\", \"name\": \"tick\", \"domid\": "
    "4294967295, \"uuid\": \"8f6eacdc-f2a0-4a9d-b8f1-2821db68ad95\", "
    "\"run_hotplug_scripts\": \"True\"}, \"b_info\": {\"max_vcpus\": 1, "
    "\"avail_vcpus\": [0], \"tsc_mode\": \"native\", \"max_memkb\": 131072, "
    "\"target_memkb\": 131072, \"video_memkb\": 0, \"device_model_version\": "
    "\"qemu_xen\", \"sched_params\": {\"sched\": \"credit2\", \"weight\": "
    "256, \"cap\": 0}, \"claim_mode\": \"True\", \"kernel\": "
    "\"/usr/share/nested/vmlinuz\", \"cmdline\": \"console=hvc0 quiet\", "
    "\"ramdisk\": \"/usr/share/nested/tick.cpio.gz\", \"type.hvm\": {\"vga\": "
    "{\"kind\": \"none\"}, \"vnc\": {\"enable\": \"False\"}, \"sdl\": "
    "{\"enable\": \"False\"}, \"spice\": {}, \"rdm\": {}}, \"arch_arm\": {}, "
    "\"arch_x86\": {\"msr_relaxed\": \"False\"}}, \"on_reboot\": "
    "\"restart\", \"on_crash\": \"preserve\", \"on_soft_reset\": "
    "\"soft_reset\"}";
static const char *const xl_hvm_dm[] = {
    "/usr/libexec/xen-qemu-system-i386", "-xen-domid", "1", "-no-shutdown",
    /* libxl's two QMP -chardev/-mon pairs: qmp/launch adds colo's */
    "-nodefaults", "-no-user-config", "-name", "tick", "-vnc", "none",
    "-display", "none", "-kernel", "/usr/share/nested/vmlinuz", "-initrd",
    "/usr/share/nested/tick.cpio.gz", "-append", "console=hvc0 quiet", "-boot",
    "order=cda", "-net", "none", "-machine",
    "xenfv" /* ,suppress-vmdesc=on: from qmp_secondary_args() */, "-m", "128",
    NULL};

Test(dom, libxl_json_hvm)
{
    struct ckpt_xen_newdom nd;
    char why[256] = "";

    cr_assert_eq(ckpt_xen_newdom_from_json(hvm_cfg, strlen(hvm_cfg), &nd, why,
                                           sizeof(why)),
                 0, "%s", why);
    cr_assert_eq(nd.type, CKPT_XEN_DOM_HVM);
    cr_assert_eq(nd.hvm.video_memkb, 8192);
    cr_assert_str_eq(nd.hvm.vga, "cirrus");
    cr_assert_str_eq(nd.hvm.serial, "pty");
    cr_assert_str_eq(nd.hvm.boot, "c");
    cr_assert(nd.hvm.acpi);
    cr_assert_not(nd.hvm.hpet);
    cr_assert(nd.hvm.vpt_align);
    cr_assert(nd.hvm.xen_platform_pci);
    cr_assert_eq(nd.hvm.timer_mode, 3);
}

Test(dom, libxl_json_hvm_defaults)
{
    static const char cfg[] =
        "{\"c_info\": {\"type\": \"hvm\", \"name\": \"h\"},"
        " \"b_info\": {\"max_memkb\": 65536, \"type.hvm\": {\"vga\": "
        "{\"kind\": \"none\"}}}}";
    struct ckpt_xen_newdom nd;
    char why[256] = "";

    cr_assert_eq(
        ckpt_xen_newdom_from_json(cfg, strlen(cfg), &nd, why, sizeof(why)), 0,
        "%s", why);
    cr_assert_str_eq(nd.hvm.vga, "none");
    cr_assert_eq(nd.hvm.video_memkb, 0);
    cr_assert_str_eq(nd.hvm.serial, "");
    cr_assert_str_eq(nd.hvm.boot, "cda");
    cr_assert(nd.hvm.hpet);
    cr_assert_eq(nd.hvm.timer_mode, 1); /* no_delay_for_missed_ticks */
}

Test(dom, libxl_json_hvm_rejected)
{
#define HVM(b, top)                                                   \
    "{\"c_info\": {\"type\": \"hvm\", \"name\": \"h\"}, \"b_info\": " \
    "{\"max_memkb\": 65536" b "}" top "}"
    bad(HVM("", ", \"disks\": [{\"vdev\": \"xvda\"}]"), "disks");
    bad(HVM("", ", \"nics\": [{}]"), "nics");
    bad(HVM(", \"device_model_version\": \"qemu_xen_traditional\"", ""),
        "qemu_xen device models only");
    bad(HVM(", \"device_model_stubdomain\": \"True\"", ""), "stub-domain");
    bad(HVM(", \"type.hvm\": {\"vnc\": {\"enable\": \"True\"}}", ""),
        "type.hvm.vnc");
    bad(HVM(", \"type.hvm\": {\"soundhw\": \"ac97\"}", ""), "soundhw");
    bad(HVM(", \"type.hvm\": {\"vga\": {\"kind\": \"qxl\"}}", ""), "vga.kind");
    bad(HVM(", \"timer_mode\": \"sometimes\"", ""), "timer_mode");
#undef HVM
}

/* The device model's argv: libxl's layout for the supported subset, the
 * memory without video RAM, and the incoming-load arguments last. */
Test(dom, dm_argv)
{
    struct ckpt_xen_newdom nd;
    char why[256] = "", **av = NULL, line[2048] = "";
    size_t n = 0;

    cr_assert_eq(ckpt_xen_newdom_from_json(hvm_cfg, strlen(hvm_cfg), &nd, why,
                                           sizeof(why)),
                 0, "%s", why);
    cr_assert_eq(ckpt_xen_dm_argv(&nd, 7, "/dm", &av), 0);
    for (; av[n]; n++) {
        strcat(line, " ");
        strcat(line, av[n]);
    }
    cr_assert_str_eq(av[0], "/dm");
    cr_assert(strstr(line, " -xen-domid 7 "), "%s", line);
    cr_assert(strstr(line, " -name tick "), "%s", line);
    cr_assert(strstr(line, " -serial pty "), "%s", line);
    cr_assert(strstr(line, " -device cirrus-vga,vgamem_mb=8 "), "%s", line);
    cr_assert(strstr(line, " -boot order=c "), "%s", line);
    cr_assert(strstr(line, " -smp 2,maxcpus=2 "), "%s", line);
    cr_assert(strstr(line, " -machine xenfv "), "%s", line);
    cr_assert(strstr(line, " -m 128 "), "%s", line); /* 136 MiB - 8 video */
    cr_assert(strstr(line, " -incoming defer "), "%s", line);
    cr_assert_null(strstr(line, "-no-acpi"), "%s", line);
    ckpt_xen_dm_argv_free(av);
}

/* colo's device model for the nested HVM guest is libxl's, argument by
 * argument, then the incoming-load arguments. */
Test(dom, dm_argv_is_libxls)
{
    const char *const *sec = qmp_secondary_args();
    struct ckpt_xen_newdom nd;
    char why[256] = "", **av = NULL;
    size_t n = 0, k;

    cr_assert_eq(ckpt_xen_newdom_from_json(xl_hvm_cfg, strlen(xl_hvm_cfg), &nd,
                                           why, sizeof(why)),
                 0, "%s", why);
    cr_assert_eq(
        ckpt_xen_dm_argv(&nd, 1, "/usr/libexec/xen-qemu-system-i386", &av), 0);
    for (n = 0; xl_hvm_dm[n]; n++) {
        cr_assert_not_null(av[n], "argv ends before '%s'", xl_hvm_dm[n]);
        cr_assert_str_eq(av[n], xl_hvm_dm[n], "argument %zu", n);
    }
    for (k = 0; sec[k]; k++)
        cr_assert_str_eq(av[n + k], sec[k], "argument %zu", n + k);
    cr_assert_null(av[n + k]);
    ckpt_xen_dm_argv_free(av);
}

Test(dom, open_without_xen)
{
    struct ckpt_xen_dom *d = (void *)1;
    char why[512] = "";
    int rc = ckpt_xen_dom_open(&d, why, sizeof(why));

    if (rc == 0) {
        ckpt_xen_dom_close(d);
        cr_skip_test("a Xen hypervisor is present (nested tests cover it)");
    }
    cr_assert_eq(rc, -COLO_EXEN);
    cr_assert_null(d);
    cr_assert(strstr(why, "no Xen hypervisor"), "%s", why);
}

/* What xl save would write after an `xl migrate` (issue 25): the stored
 * configuration still names the receiving side's "tick--incoming"; the
 * running domain's name, uuid, memory and vcpus win. */
Test(dom, config_refresh_from_running_domain)
{
    static const uint8_t uuid[16] = {0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6,
                                     0x47, 0x08, 0x89, 0x1a, 0x2b, 0x3c,
                                     0x4d, 0x5e, 0x6f, 0x70};
    struct ckpt_xen_live lv = {.name = "tick",
                               .uuid = uuid,
                               .target_memkb = 65536,
                               .max_memkb = 131072,
                               .have_vcpus = true,
                               .avail_vcpus_mask = 1};
    struct ckpt_xen_newdom nd;
    char *stored = strdup(pvh_cfg), *out = NULL, why[256] = "", *p;
    size_t len = 0;

    cr_assert_not_null(stored);
    p = strstr(stored, "\"tick\"");
    cr_assert_not_null(p);
    {
        /* the stored name as xl migrate-receive left it */
        char buf[sizeof(pvh_cfg) + 32];

        snprintf(buf, sizeof(buf), "%.*s\"tick--incoming\"%s",
                 (int)(p - stored), stored, p + strlen("\"tick\""));
        free(stored);
        stored = strdup(buf);
    }
    cr_assert_eq(ckpt_xen_config_refresh(stored, strlen(stored), &lv, &out,
                                         &len, why, sizeof(why)),
                 0, "%s", why);
    cr_assert_eq(len, strlen(out));
    cr_assert_eq(ckpt_xen_newdom_from_json(out, len, &nd, why, sizeof(why)), 0,
                 "%s", why);
    cr_assert_str_eq(nd.name, "tick");
    cr_assert(nd.have_uuid);
    cr_assert_eq(memcmp(nd.uuid, uuid, 16), 0);
    cr_assert_eq(nd.target_memkb, 65536);
    cr_assert_eq(nd.max_memkb, 131072);
    cr_assert_eq(nd.avail_vcpus_mask, 1); /* vcpu 1 unplugged */
    cr_assert_eq(nd.max_vcpus, 2);        /* kept as stored */
    cr_assert_eq(nd.shadow_memkb, 2048);
    free(out);

    /* Nothing known about the running domain: the stored values stay. */
    {
        struct ckpt_xen_live none = {0};

        cr_assert_eq(ckpt_xen_config_refresh(pvh_cfg, strlen(pvh_cfg), &none,
                                             &out, &len, why, sizeof(why)),
                     0);
        cr_assert_eq(ckpt_xen_newdom_from_json(out, len, &nd, why, sizeof(why)),
                     0);
        cr_assert_str_eq(nd.name, "tick");
        cr_assert_eq(nd.uuid[0], 0x6b);
        cr_assert_eq(nd.target_memkb, 131072);
        cr_assert_eq(nd.avail_vcpus_mask, 3);
        free(out);
    }
    /* Not a libxl configuration. */
    cr_assert_eq(
        ckpt_xen_config_refresh("[1]", 3, &lv, &out, &len, why, sizeof(why)),
        -EINVAL);
    cr_assert_null(out);
    cr_assert_eq(ckpt_xen_config_refresh("{\"c_info\":", 10, &lv, &out, &len,
                                         why, sizeof(why)),
                 -EINVAL);
    cr_assert_not_null(strstr(why, "not a libxl"), "%s", why);
    free(stored);
}
