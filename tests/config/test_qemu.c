/*
 * The argv built by orch_config_qemu_argv() starts a real QEMU 7.2, and
 * QEMU understood it: names, uuid, accelerator, the RAM file, escaped
 * commas in paths and device properties, the kernel runs and writes to the
 * serial file. KVM when /dev/kvm opens, TCG otherwise.
 *
 * Every QEMU started here dies with the test: PR_SET_PDEATHSIG in the child
 * and a kill in the fixture's fini.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/fd.h"
#include "config.h"

#define DEADLINE_MS 30000

static char dir[64];
static pid_t qemu_pid = -1;
static int qmp_fd = -1;
static char rbuf[65536];
static size_t rlen;

static void fini(void)
{
    if (qemu_pid > 0) {
        kill(qemu_pid, SIGKILL);
        waitpid(qemu_pid, NULL, 0);
        qemu_pid = -1;
    }
    colo_close(&qmp_fd);
    if (dir[0]) {
        char cmd[128];

        /* Only our own mkdtemp directory. */
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
        dir[0] = '\0';
    }
}

static int have_qemu(void)
{
    return system("qemu-system-x86_64 --version >/dev/null 2>&1") == 0;
}

static void init(void)
{
    if (!have_qemu()) {
        cr_skip_test("qemu-system-x86_64 not found");
    }
    snprintf(dir, sizeof(dir), "/tmp/colo-cfgq-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void dir_path(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", dir, name);
}

static void write_file(const char *path, const void *data, size_t len,
                       size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    cr_assert_geq(fd, 0);
    cr_assert_eq(colo_write_all(fd, data, len), 0);
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    colo_close(&fd);
}

/* A flat multiboot image (address fields in the header, so no ELF): it
 * writes "OK\n" to COM1 and halts. */
static void write_kernel(const char *path)
{
    static const uint8_t code[] = {
        0x66, 0xba, 0xf8, 0x03, /* mov dx, 0x3f8 */
        0xb0, 'O',  0xee,       /* mov al, 'O'; out dx, al */
        0xb0, 'K',  0xee,       /* mov al, 'K'; out dx, al */
        0xb0, '\n', 0xee,       /* mov al, '\n'; out dx, al */
        0xf4,                   /* hlt */
        0xeb, 0xfd,             /* jmp hlt */
    };
    uint8_t img[4096] = {0};
    uint32_t hdr[8] = {
        0x1badb002, 0x00010000, 0, 0x100000, 0x100000, 0, 0, 0x100020,
    };

    hdr[2] = (uint32_t) - (hdr[0] + hdr[1]);
    memcpy(img, hdr, sizeof(hdr));
    memcpy(img + sizeof(hdr), code, sizeof(code));
    write_file(path, img, sizeof(img), sizeof(img));
}

static int kvm_usable(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

    if (fd < 0)
        return 0;
    colo_close(&fd);
    return 1;
}

static void print_qemu_log(void)
{
    char path[128], *buf = NULL;
    size_t len = 0;

    dir_path(path, sizeof(path), "qemu.log");
    if (colo_read_file(path, 65536, &buf, &len) == 0)
        fprintf(stderr, "qemu log:\n%s\n", buf);
    free(buf);
}

/* Bind and listen on the QMP socket before QEMU starts, so connecting
 * never races QEMU's startup; QEMU gets this fd (-chardev ...,fd=N). */
static int listen_qmp(struct sockaddr_un *sa)
{
    int lfd;

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    dir_path(sa->sun_path, sizeof(sa->sun_path), "qmp.sock");
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(lfd, 0);
    cr_assert_eq(bind(lfd, (struct sockaddr *)sa, sizeof(*sa)), 0);
    cr_assert_eq(listen(lfd, 4), 0);
    return lfd;
}

/* The launcher's part of the command line: the monitor on fd lfd. */
static void qmp_args(const char *extra[5], char *buf, size_t size, int lfd)
{
    snprintf(buf, size, "socket,id=qmp,fd=%d,server=on,wait=off", lfd);
    extra[0] = "-chardev";
    extra[1] = buf;
    extra[2] = "-mon";
    extra[3] = "chardev=qmp,mode=control";
    extra[4] = NULL;
}

static void start_qemu(char **argv, int lfd, const struct sockaddr_un *sa)
{
    char logp[128];
    int logfd;

    dir_path(logp, sizeof(logp), "qemu.log");
    logfd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    cr_assert_geq(logfd, 0);

    /* No cr_assert between fork and exec: the child shares Criterion's
     * reporting socket. */
    qemu_pid = fork();
    if (qemu_pid < 0)
        cr_assert_fail("fork: %s", strerror(errno));
    if (qemu_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(logfd, 1);
        dup2(logfd, 2);
        /* The monitor fd (named in argv) must survive exec. */
        fcntl(lfd, F_SETFD, 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    colo_close(&logfd);
    /* The backlog accepts at once; the greeting comes when QEMU is up. */
    qmp_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(qmp_fd, 0);
    cr_assert_eq(connect(qmp_fd, (const struct sockaddr *)sa, sizeof(*sa)), 0);
    colo_close(&lfd);
    rlen = 0;
}

/* Read one QMP line (a JSON object) before the deadline. */
static json_t *read_msg(int64_t deadline)
{
    for (;;) {
        char *nl = memchr(rbuf, '\n', rlen);
        struct pollfd pfd = {.fd = qmp_fd, .events = POLLIN};
        int64_t left;
        ssize_t n;

        if (nl) {
            json_error_t jerr;
            json_t *j = json_loadb(rbuf, (size_t)(nl - rbuf), 0, &jerr);

            rlen -= (size_t)(nl + 1 - rbuf);
            memmove(rbuf, nl + 1, rlen);
            cr_assert_not_null(j, "bad QMP JSON: %s", jerr.text);
            return j;
        }
        left = deadline - now_ms();
        if (left <= 0) {
            print_qemu_log();
            cr_assert_fail("QMP deadline passed");
        }
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            cr_assert_fail("poll: %s", strerror(errno));
        if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        cr_assert_lt(rlen, sizeof(rbuf), "QMP line too long");
        n = read(qmp_fd, rbuf + rlen, sizeof(rbuf) - rlen);
        if (n <= 0) {
            print_qemu_log();
            cr_assert_fail("QEMU closed QMP (it died?)");
        }
        rlen += (size_t)n;
    }
}

/* Send a command, return its "return" value (new reference). */
static json_t *qmp(const char *cmd)
{
    int64_t deadline = now_ms() + DEADLINE_MS;
    json_t *msg, *ret;

    cr_assert_eq(colo_write_all(qmp_fd, cmd, strlen(cmd)), 0);
    cr_assert_eq(colo_write_all(qmp_fd, "\n", 1), 0);
    for (;;) {
        msg = read_msg(deadline);
        if (json_object_get(msg, "event")) {
            json_decref(msg);
            continue;
        }
        ret = json_object_get(msg, "return");
        if (!ret) {
            char *dump = json_dumps(msg, 0);

            cr_log_error("QMP error for %s: %s", cmd, dump);
            free(dump);
            cr_assert_fail("QMP command failed");
        }
        json_incref(ret);
        json_decref(msg);
        return ret;
    }
}

static void handshake(void)
{
    json_t *greeting = read_msg(now_ms() + DEADLINE_MS);

    cr_assert_not_null(json_object_get(greeting, "QMP"), "no greeting");
    json_decref(greeting);
    json_decref(qmp("{\"execute\":\"qmp_capabilities\"}"));
}

static void assert_status(const char *want)
{
    json_t *r = qmp("{\"execute\":\"query-status\"}");

    cr_assert_str_eq(json_string_value(json_object_get(r, "status")), want);
    json_decref(r);
}

/* Wait, on inotify events with a deadline, until the file contains s. */
static void wait_file_contains(const char *path, const char *s, int ifd)
{
    int64_t deadline = now_ms() + DEADLINE_MS;

    for (;;) {
        char *buf = NULL, ev[4096];
        size_t len = 0;
        struct pollfd pfd = {.fd = ifd, .events = POLLIN};
        int64_t left;

        if (colo_read_file(path, 65536, &buf, &len) == 0 && strstr(buf, s)) {
            free(buf);
            return;
        }
        free(buf);
        left = deadline - now_ms();
        if (left <= 0) {
            print_qemu_log();
            cr_assert_fail("%s never contained \"%s\"", path, s);
        }
        if (poll(&pfd, 1, (int)left) > 0 && read(ifd, ev, sizeof(ev)) < 0)
            cr_assert_fail("inotify read: %s", strerror(errno));
    }
}

TestSuite(config_qemu, .init = init, .fini = fini, .timeout = 90);

/* Boot a full configuration from its argv; kvm decides "auto". */
static void boot_full_config(enum orch_kvm_mode kvm_mode)
{
    char kernel[128], module[128], disk[128], data[128], ram[128], serial[128],
        text[4096], chardev[160];
    char **argv = NULL;
    const char *extra[5];
    struct sockaddr_un sa;
    int lfd;
    struct orch_config_error err = {0};
    struct orch_vm_config *c = NULL;
    json_t *r, *b;
    struct stat st;
    size_t i;
    int ifd, found = 0;

    dir_path(kernel, sizeof(kernel), "ker,nel.bin");
    dir_path(module, sizeof(module), "module.bin");
    dir_path(disk, sizeof(disk), "disk,1.img");
    dir_path(data, sizeof(data), "data.img");
    dir_path(ram, sizeof(ram), "ram,file");
    dir_path(serial, sizeof(serial), "serial,log");
    write_kernel(kernel);
    write_file(module, "module", 6, 4096);
    write_file(disk, "", 0, 1024 * 1024);
    write_file(data, "", 0, 1024 * 1024);

    snprintf(text, sizeof(text),
             "{\"name\": \"qtest\", \"uuid\": "
             "\"1B4E28BA-2FA1-41D2-883F-0016D3CCA427\",\n"
             " \"memory_mb\": 32, \"vcpus\": 1, \"kernel\": \"%s\",\n"
             " \"ramdisk\": \"%s\", \"cmdline\": \"a,b c=d\",\n"
             " \"disks\": [{\"path\": \"%s\"},\n"
             "   {\"path\": \"%s\", \"readonly\": true, \"interface\": "
             "\"none\", \"id\": \"data\", \"x-keep\": 1}],\n"
             " \"devices\": [{\"driver\": \"virtio-serial-pci\", \"id\": "
             "\"vs0\"},\n"
             "   {\"driver\": \"virtserialport\", \"id\": \"port0\", "
             "\"bus\": \"vs0.0\", \"name\": \"org.colo,test\"},\n"
             "   {\"driver\": \"virtio-blk-pci\", \"id\": \"vblk\", "
             "\"drive\": \"data\"}],\n"
             " \"qemu\": {\"extra_args\": [\"-rtc\", \"base=utc\"]}}",
             kernel, module, disk, data);
    cr_assert_eq(orch_config_parse_string(text, strlen(text), "t", &c, &err), 0,
                 "%s", err.text);

    lfd = listen_qmp(&sa);
    qmp_args(extra, chardev, sizeof(chardev), lfd);
    {
        struct orch_qemu_launch_params p = {
            .ram_path = ram,
            .serial_path = serial,
            .paused = 1,
            .kvm = kvm_mode,
            .extra_args = extra,
        };

        cr_assert_eq(orch_config_qemu_argv(c, &p, &argv), 0);
    }
    start_qemu(argv, lfd, &sa);
    handshake();

    assert_status("prelaunch");
    r = qmp("{\"execute\":\"query-name\"}");
    cr_assert_str_eq(json_string_value(json_object_get(r, "name")), "qtest");
    json_decref(r);
    r = qmp("{\"execute\":\"query-uuid\"}");
    cr_assert_str_eq(json_string_value(json_object_get(r, "UUID")),
                     "1b4e28ba-2fa1-41d2-883f-0016d3cca427");
    json_decref(r);
    {
        int want = kvm_mode == ORCH_KVM_DETECT && kvm_usable();

        r = qmp("{\"execute\":\"query-kvm\"}");
        cr_assert_eq(json_is_true(json_object_get(r, "enabled")), want);
        json_decref(r);
        fprintf(stderr, "accel: %s\n", want ? "kvm" : "tcg");
    }

    /* A device property with a comma arrived whole. */
    r = qmp("{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
            "\"/machine/peripheral/port0\",\"property\":\"name\"}}");
    cr_assert_str_eq(json_string_value(r), "org.colo,test");
    json_decref(r);

    /* Disks: the comma in the path, read-only, interface. */
    r = qmp("{\"execute\":\"query-block\"}");
    json_array_foreach(r, i, b)
    {
        const char *dev = json_string_value(json_object_get(b, "device"));
        json_t *ins = json_object_get(b, "inserted");

        if (!strcmp(dev, "disk0")) {
            cr_assert_str_eq(json_string_value(json_object_get(ins, "file")),
                             disk);
            cr_assert(json_is_false(json_object_get(ins, "ro")));
            found++;
        } else if (!strcmp(dev, "data")) {
            cr_assert_str_eq(json_string_value(json_object_get(ins, "file")),
                             data);
            cr_assert(json_is_true(json_object_get(ins, "ro")));
            found++;
        }
    }
    cr_assert_eq(found, 2, "both disks in query-block");
    json_decref(r);

    /* Guest RAM is the file colo will map. */
    cr_assert_eq(stat(ram, &st), 0);
    cr_assert_eq(st.st_size, 32 * 1024 * 1024);

    /* The kernel from a path with a comma boots and writes to the serial
     * file (also with a comma). */
    ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    cr_assert_geq(ifd, 0);
    cr_assert_geq(inotify_add_watch(ifd, serial, IN_MODIFY), 0);
    json_decref(qmp("{\"execute\":\"cont\"}"));
    assert_status("running");
    wait_file_contains(serial, "OK\n", ifd);
    colo_close(&ifd);

    /* A device added to the configuration is, as stored, the arguments of
     * QMP device_add: hot-plug it into the running guest. */
    {
        json_t *dev =
            json_pack("{s:s,s:s,s:s,s:s,s:i}", "driver", "virtserialport", "id",
                      "port1", "bus", "vs0.0", "name", "org.colo,hot", "nr", 2);
        json_t *cmd;
        char *line;

        cr_assert_eq(orch_config_device_add(c, dev, &err), 0, "%s", err.text);
        json_decref(dev);
        cmd = json_pack("{s:s,s:O}", "execute", "device_add", "arguments",
                        orch_config_device_get(c, "port1"));
        line = json_dumps(cmd, JSON_COMPACT);
        json_decref(cmd);
        json_decref(qmp(line));
        free(line);
        r = qmp("{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
                "\"/machine/peripheral/port1\",\"property\":\"name\"}}");
        cr_assert_str_eq(json_string_value(r), "org.colo,hot");
        json_decref(r);
    }

    orch_config_argv_free(argv);
    orch_config_free(c);
}

Test(config_qemu, argv_starts_real_qemu)
{
    boot_full_config(ORCH_KVM_DETECT);
}

Test(config_qemu, argv_starts_real_qemu_tcg)
{
    boot_full_config(ORCH_KVM_NO);
}

Test(config_qemu, incoming_defer_starts_real_qemu)
{
    static const char text[] =
        "{\"name\": \"sec\", \"memory\": {\"max_mb\": 16, \"target_mb\": 8},"
        " \"devices\": [{\"driver\": \"isa-serial\", \"id\": \"com2\", "
        "\"index\": 1}]}";
    char ram[128], mon[96];
    const char *extra[5];
    struct orch_vm_config *c = NULL;
    char **argv = NULL;
    struct sockaddr_un sa;
    json_t *r;
    int lfd;

    dir_path(ram, sizeof(ram), "ram");
    cr_assert_eq(orch_config_parse_string(text, strlen(text), "t", &c, NULL),
                 0);
    lfd = listen_qmp(&sa);
    qmp_args(extra, mon, sizeof(mon), lfd);
    {
        struct orch_qemu_launch_params p = {
            .ram_path = ram,
            .paused = 1,
            .incoming_defer = 1,
            .kvm = ORCH_KVM_DETECT,
            .extra_args = extra,
        };

        cr_assert_eq(orch_config_qemu_argv(c, &p, &argv), 0);
    }
    start_qemu(argv, lfd, &sa);
    handshake();
    assert_status("inmigrate");
    r = qmp("{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"/machine\","
            "\"property\":\"suppress-vmdesc\"}}");
    cr_assert(json_is_true(r), "suppress-vmdesc merged into -machine");
    json_decref(r);
    r = qmp("{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
            "\"/machine/peripheral/com2\",\"property\":\"index\"}}");
    cr_assert_eq(json_integer_value(r), 1);
    json_decref(r);
    orch_config_argv_free(argv);
    orch_config_free(c);
}
