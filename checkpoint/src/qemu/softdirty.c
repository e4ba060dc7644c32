/*
 * Soft-dirty tracking of QEMU's mapping of the RAM file. See softdirty.h.
 */
#include "softdirty.h"

#include "common/error.h"
#include "common/fd.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#define PM_SOFT_DIRTY (1ull << 55)
#define SD_PAGE_SIZE  4096ull
/* pagemap entries read per pread (512 KiB). */
#define SD_READ_ENTRIES 65536u
/* Cap on the mappings of one file we follow. */
#define SD_MAX_SEGS 64u

struct sd_seg {
    uint64_t vaddr;  /* start of the mapping */
    uint64_t off;    /* file offset mapped there */
    uint64_t npages; /* length in pages (clipped to the file) */
};

struct ckpt_sd {
    int clear_fd;
    int pagemap_fd;
    uint64_t file_pages;
    struct sd_seg segs[SD_MAX_SEGS];
    unsigned nsegs;
    uint64_t *buf; /* SD_READ_ENTRIES pagemap entries */
};

/* why = "<what>: <error>" */
static void set_why(char *why, size_t len, const char *what, int rc)
{
    if (why && len)
        snprintf(why, len, "%s: %s", what, colo_strerror(rc));
}

/* ---- the probe --------------------------------------------------------- */

/* In a child: 0 the bit follows writes, 1 it never reads set, 2 a clear
 * did not clear it, 3.. a step failed. Only system calls (async-signal
 * safe after fork in a threaded parent). */
static int probe_child(void)
{
    volatile uint8_t *p;
    uint64_t e = 0, vpn;
    int cfd, pfd;

    p = mmap(NULL, SD_PAGE_SIZE, PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 3;
    p[0] = 1; /* present, like QEMU's pages of the RAM file */
    cfd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    pfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (cfd < 0 || pfd < 0)
        return 4;
    vpn = (uint64_t)(uintptr_t)p / SD_PAGE_SIZE;
    if (write(cfd, "4", 1) != 1)
        return 5;
    if (pread(pfd, &e, sizeof(e), (off_t)(vpn * 8)) != (ssize_t)sizeof(e))
        return 6;
    if (e & PM_SOFT_DIRTY)
        return 2;
    p[0] = 2;
    if (pread(pfd, &e, sizeof(e), (off_t)(vpn * 8)) != (ssize_t)sizeof(e))
        return 6;
    return (e & PM_SOFT_DIRTY) ? 0 : 1;
}

int ckpt_sd_probe(char *why, size_t why_len)
{
    pid_t pid, w;
    int status = 0, rc;

    if (access("/proc/self/pagemap", R_OK) != 0) {
        set_why(why, why_len, "/proc/self/pagemap", -errno);
        return 0;
    }
    pid = fork();
    if (pid < 0) {
        rc = -errno;
        set_why(why, why_len, "soft-dirty probe: fork", rc);
        return rc;
    }
    if (pid == 0)
        _exit(probe_child());
    do
        w = waitpid(pid, &status, 0);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        rc = -errno;
        set_why(why, why_len, "soft-dirty probe: waitpid", rc);
        return rc;
    }
    if (!WIFEXITED(status)) {
        if (why && why_len)
            snprintf(why, why_len, "soft-dirty probe: the child died");
        return -EINVAL;
    }
    switch (WEXITSTATUS(status)) {
    case 0:
        return 1;
    case 1:
        if (why && why_len)
            snprintf(why, why_len,
                     "this kernel has no soft-dirty bits (a page written "
                     "after clear_refs did not read soft-dirty: "
                     "CONFIG_MEM_SOFT_DIRTY off)");
        return 0;
    case 2:
        if (why && why_len)
            snprintf(why, why_len, "clear_refs did not clear soft-dirty");
        return 0;
    default:
        if (why && why_len)
            snprintf(why, why_len,
                     "soft-dirty probe failed at step %d (no "
                     "/proc/self/clear_refs or pagemap?)",
                     WEXITSTATUS(status));
        return 0;
    }
}

/* ---- tracking ------------------------------------------------------------ */

static int find_segs(struct ckpt_sd *sd, pid_t pid, dev_t dev, ino_t ino,
                     char *why, size_t why_len)
{
    char path[64], line[512];
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    f = fopen(path, "re");
    if (!f) {
        int rc = -errno;

        set_why(why, why_len, path, rc);
        return rc;
    }
    while (fgets(line, sizeof(line), f)) {
        uint64_t lo, hi, off, lino, np;
        unsigned maj, mnr;
        char perms[8];

        if (sscanf(line,
                   "%" SCNx64 "-%" SCNx64 " %7s %" SCNx64 " %x:%x %" SCNu64,
                   &lo, &hi, perms, &off, &maj, &mnr, &lino) != 7)
            continue;
        if (lino != (uint64_t)ino || makedev(maj, mnr) != dev)
            continue;
        if (perms[1] != 'w' || perms[3] != 's')
            continue; /* only a shared writable mapping writes the file */
        if (lo % SD_PAGE_SIZE || off % SD_PAGE_SIZE ||
            off / SD_PAGE_SIZE >= sd->file_pages)
            continue;
        np = (hi - lo) / SD_PAGE_SIZE;
        if (np > sd->file_pages - off / SD_PAGE_SIZE)
            np = sd->file_pages - off / SD_PAGE_SIZE;
        if (sd->nsegs == SD_MAX_SEGS) {
            fclose(f);
            if (why && why_len)
                snprintf(why, why_len, "%s: too many mappings of the RAM file",
                         path);
            return -E2BIG;
        }
        sd->segs[sd->nsegs++] = (struct sd_seg){
            .vaddr = lo, .off = off / SD_PAGE_SIZE, .npages = np};
    }
    fclose(f);
    if (!sd->nsegs) {
        if (why && why_len)
            snprintf(why, why_len,
                     "%s: the process does not map the RAM file (shared, "
                     "writable)",
                     path);
        return -ENOENT;
    }
    return 0;
}

int ckpt_sd_open(pid_t pid, dev_t dev, ino_t ino, size_t size,
                 struct ckpt_sd **ret, char *why, size_t why_len)
{
    struct ckpt_sd *sd;
    char path[64];
    int rc;

    *ret = NULL;
    if (pid <= 0 || !size || size % SD_PAGE_SIZE)
        return -EINVAL;
    sd = calloc(1, sizeof(*sd));
    if (!sd)
        return -ENOMEM;
    sd->clear_fd = -1;
    sd->pagemap_fd = -1;
    sd->file_pages = size / SD_PAGE_SIZE;
    snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)pid);
    sd->clear_fd = open(path, O_WRONLY | O_CLOEXEC);
    if (sd->clear_fd < 0) {
        rc = -errno;
        set_why(why, why_len, path, rc);
        goto fail;
    }
    snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
    sd->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (sd->pagemap_fd < 0) {
        rc = -errno;
        set_why(why, why_len, path, rc);
        goto fail;
    }
    rc = find_segs(sd, pid, dev, ino, why, why_len);
    if (rc < 0)
        goto fail;
    sd->buf = malloc(SD_READ_ENTRIES * sizeof(*sd->buf));
    if (!sd->buf) {
        rc = -ENOMEM;
        goto fail;
    }
    *ret = sd;
    return 0;
fail:
    ckpt_sd_free(sd);
    return rc;
}

int ckpt_sd_clear(struct ckpt_sd *sd)
{
    ssize_t n;

    do
        n = pwrite(sd->clear_fd, "4", 1, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return n == 1 ? 0 : -EIO;
}

int64_t ckpt_sd_read(struct ckpt_sd *sd, uint64_t *dirty)
{
    int64_t marked = 0;

    for (unsigned s = 0; s < sd->nsegs; s++) {
        const struct sd_seg *g = &sd->segs[s];

        for (uint64_t i = 0; i < g->npages;) {
            uint64_t want = g->npages - i, got;
            off_t at = (off_t)((g->vaddr / SD_PAGE_SIZE + i) * 8);
            ssize_t n;

            if (want > SD_READ_ENTRIES)
                want = SD_READ_ENTRIES;
            do
                n = pread(sd->pagemap_fd, sd->buf, want * 8, at);
            while (n < 0 && errno == EINTR);
            if (n < 0)
                return -errno;
            got = (uint64_t)n / 8;
            if (!got)
                return -EIO; /* the mapping went away */
            for (uint64_t k = 0; k < got; k++) {
                if (sd->buf[k] & PM_SOFT_DIRTY) {
                    uint64_t pfn = g->off + i + k;

                    dirty[pfn / 64] |= 1ull << (pfn % 64);
                    marked++;
                }
            }
            i += got;
        }
    }
    return marked;
}

void ckpt_sd_free(struct ckpt_sd *sd)
{
    if (!sd)
        return;
    colo_close(&sd->clear_fd);
    colo_close(&sd->pagemap_fd);
    free(sd->buf);
    free(sd);
}
