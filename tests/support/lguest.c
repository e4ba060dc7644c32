/* The Linux test guest as a colo VM (lguest.h). */
#include "lguest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECTOR 512

struct lguest_cfg lguest_cfg_default(void)
{
    struct lguest_cfg c = {.ram_mb = 128, .disk_mb = 4};

    return c;
}

const char *lguest_kernel(void)
{
    return COLO_LINUX_DIR "/vmlinux";
}

const char *lguest_initrd(void)
{
    return COLO_LINUX_DIR "/initramfs.cpio.gz";
}

bool lguest_available(char *why, size_t whysz)
{
    FILE *f = fopen(COLO_LINUX_DIR "/SKIP", "r");

    if (f) {
        if (!fgets(why, (int)whysz, f))
            snprintf(why, whysz, "the Linux test guest was not built");
        why[strcspn(why, "\n")] = '\0';
        fclose(f);
        return false;
    }
    if (access(lguest_kernel(), R_OK) != 0 ||
        access(lguest_initrd(), R_OK) != 0) {
        snprintf(why, whysz,
                 "the Linux test guest is not built (%s: build the "
                 "colo_linux_guest target)",
                 COLO_LINUX_DIR);
        return false;
    }
    return true;
}

const char *lguest_accel(void)
{
    const char *e = getenv("COLO_LINUX_ACCEL");
    char line[4096];
    bool hw = false;
    FILE *f;
    int fd;

    if (e && (!strcmp(e, "kvm") || !strcmp(e, "tcg")))
        return e;
    fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return "tcg";
    close(fd);
    /* A KVM without VMX/SVM (PVM) emulates guest kernel mode: Linux did
     * not reach user space within 30 s there, TCG boots it in ~6 s. */
    f = fopen("/proc/cpuinfo", "r");
    while (f && !hw && fgets(line, sizeof(line), f))
        if (!strncmp(line, "flags", 5) &&
            (strstr(line, " vmx") || strstr(line, " svm")))
            hw = true;
    if (f)
        fclose(f);
    return hw ? "kvm" : "tcg";
}

int lguest_write_config(const char *path, const struct lguest_cfg *c)
{
    FILE *f;

    if (!c->name)
        return -EINVAL;
    if (c->disk_path) {
        int fd = open(c->disk_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

        if (fd < 0)
            return -errno;
        if (ftruncate(fd, (off_t)(c->disk_mb ? c->disk_mb : 4) << 20) < 0) {
            int e = -errno;

            close(fd);
            return e;
        }
        close(fd);
    }
    f = fopen(path, "w");
    if (!f)
        return -errno;
    fprintf(f,
            "{\"name\": \"%s\", \"memory_mb\": %zu, \"vcpus\": 1,\n"
            " \"kernel\": \"%s\", \"ramdisk\": \"%s\",\n"
            " \"cmdline\": \"console=ttyS0 quiet panic=-1%s%s\",\n"
            " \"qemu\": {\"accel\": \"%s\"}",
            c->name, c->ram_mb ? c->ram_mb : 128, lguest_kernel(),
            lguest_initrd(), c->cmdline ? " " : "",
            c->cmdline ? c->cmdline : "", c->accel ? c->accel : lguest_accel());
    if (c->disk_path)
        fprintf(f,
                ",\n \"disks\": [{\"path\": \"%s\", \"format\": \"raw\", "
                "\"id\": \"vda\"}]",
                c->disk_path);
    if (c->wire_path)
        fprintf(f,
                ",\n \"nics\": [{\"id\": \"net0\", \"backend\": \"stream\", "
                "\"path\": \"%s\", \"mac\": \"52:54:00:12:34:56\"}]",
                c->wire_path);
    if (c->extra_json)
        fprintf(f, ",\n %s", c->extra_json);
    fprintf(f, "}\n");
    return fclose(f) == 0 ? 0 : -EIO;
}

int lguest_disk_max(const char *disk_path, uint32_t *max)
{
    char sec[SECTOR + 1];
    int fd = open(disk_path, O_RDONLY | O_CLOEXEC);
    off_t off = SECTOR;

    *max = 0;
    if (fd < 0)
        return -errno;
    for (;;) {
        ssize_t n = pread(fd, sec, SECTOR, off);
        unsigned v;

        if (n != SECTOR)
            break;
        sec[SECTOR] = '\0';
        if (sec[0] == '\0') {
            off += SECTOR;
            if (off > (off_t)(1 + 1024) * SECTOR)
                break;
            continue;
        }
        if (sscanf(sec, "count %u", &v) == 1 && v > *max)
            *max = v;
        off += SECTOR;
        if (off > (off_t)(1 + 1024) * SECTOR)
            break;
    }
    close(fd);
    return 0;
}

uint32_t lguest_serial_max(const char *serial_path)
{
    FILE *f = fopen(serial_path, "r");
    char line[256];
    uint32_t max = 0;
    unsigned v;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "count %u", &v) == 1 && v > max)
            max = v;
    fclose(f);
    return max;
}
