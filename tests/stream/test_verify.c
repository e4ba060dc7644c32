/*
 * The stream verifier (transport/verify.h) and `colo verify-stream`:
 * checkpoint numbering, record placement, summaries, exit codes and the
 * "where and why" of a failure.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "transport/colo_rec.h"
#include "transport/verify.h"
#include "transport/xen_stream.h"

static uint8_t page[4096];

static void colo_head(struct colo_buf *b)
{
    uint8_t hdr[XPRT_COLO_HDR_SIZE];
    struct xprt_colo_hello h = {.version = 1,
                                .role = XPRT_ROLE_SAVEFILE,
                                .page_size = 4096,
                                .ram_size = 1 << 20};

    strcpy(h.vm_name, "guest-7");
    xprt_colo_hdr_encode(hdr);
    colo_buf_append(b, hdr, sizeof(hdr));
    cr_assert_eq(xprt_colo_hello_write(b, &h), 0);
}

static void ckpt(struct colo_buf *b, uint64_t n, int npages)
{
    const void *pages[4] = {page, page, page, page};
    uint64_t pfns[4] = {1, 2, 3, 4};

    cr_assert_eq(xprt_ckpt_begin_write(b, n, n == 0 ? XPRT_CKPT_FLAG_FULL : 0),
                 0);
    if (npages)
        cr_assert_eq(xprt_ram_pages_write(b, (uint32_t)npages, 12, pfns, pages),
                     0);
    cr_assert_eq(xprt_devstate_write(b, XPRT_DEVSTATE_QEMU_XEN_SAVE, "dev", 3),
                 0);
    cr_assert_eq(xprt_ckpt_end_write(b, n), 0);
}

static int verify(const struct colo_buf *b, struct xprt_verifier *v)
{
    int rc;

    xprt_verifier_init(v, XPRT_FMT_AUTO, 0);
    rc = xprt_verifier_push(v, b->data, b->len);
    if (rc == 0)
        rc = xprt_verifier_finish(v);
    return rc;
}

Test(verify, good_colo_stream_summary)
{
    struct colo_buf b;
    struct xprt_verifier v;

    colo_buf_init(&b, 0);
    colo_head(&b);
    ckpt(&b, 0, 4);
    ckpt(&b, 1, 2);
    ckpt(&b, 2, 0);
    xprt_rec_write_buf(&b, XPRT_COLO_END, NULL, 0);
    cr_assert_eq(verify(&b, &v), 0, "%s", xprt_verifier_why(&v));
    cr_assert_eq(v.sum.fmt, XPRT_FMT_COLO);
    cr_assert_eq(v.sum.checkpoints, 3);
    cr_assert_eq(v.sum.first_ckpt, 0);
    cr_assert_eq(v.sum.last_ckpt, 2);
    cr_assert_eq(v.sum.pages, 6);
    cr_assert_eq(v.sum.devstate_bytes, 9);
    cr_assert_str_eq(v.sum.vm_name, "guest-7");
    cr_assert_eq(v.sum.bytes, b.len);
    xprt_verifier_dispose(&v);
    colo_buf_dispose(&b);
}

static void expect_bad(struct colo_buf *b, int want, const char *needle)
{
    struct xprt_verifier v;
    int rc = verify(b, &v);

    cr_assert_eq(rc, want, "rc %s, why: %s", colo_strerror(rc),
                 xprt_verifier_why(&v));
    cr_assert(strstr(xprt_verifier_why(&v), needle), "why: %s",
              xprt_verifier_why(&v));
    xprt_verifier_dispose(&v);
}

Test(verify, colo_rule_violations)
{
    struct colo_buf b;
    const uint64_t pfn = 1;
    const void *pages[1] = {page};

    colo_buf_init(&b, 0);
    /* Numbering gap. */
    colo_head(&b);
    ckpt(&b, 4, 1);
    ckpt(&b, 6, 1);
    xprt_rec_write_buf(&b, XPRT_COLO_END, NULL, 0);
    expect_bad(&b, -COLO_ESTREAM_CORRUPT, "checkpoint 6 follows 4");
    /* END(n) closing another n. */
    b.len = 0;
    colo_head(&b);
    xprt_ckpt_begin_write(&b, 1, 0);
    xprt_ckpt_end_write(&b, 2);
    expect_bad(&b, -COLO_ESTREAM_CORRUPT, "closes checkpoint 1");
    /* Pages outside a checkpoint. */
    b.len = 0;
    colo_head(&b);
    xprt_ram_pages_write(&b, 1, 12, &pfn, pages);
    expect_bad(&b, -COLO_ESTREAM_CORRUPT, "outside a checkpoint");
    /* Stream ends inside a checkpoint. */
    b.len = 0;
    colo_head(&b);
    xprt_ckpt_begin_write(&b, 0, 0);
    xprt_rec_write_buf(&b, XPRT_COLO_END, NULL, 0);
    expect_bad(&b, -COLO_ESTREAM_TRUNCATED, "END inside checkpoint 0");
    /* First record not HELLO; offset of the culprit is reported. */
    b.len = 0;
    {
        uint8_t hdr[XPRT_COLO_HDR_SIZE];
        xprt_colo_hdr_encode(hdr);
        colo_buf_append(&b, hdr, sizeof(hdr));
    }
    xprt_ckpt_begin_write(&b, 0, 0);
    expect_bad(&b, -COLO_ESTREAM_CORRUPT, "at offset 16, record #0");
    /* Page size differs from HELLO's. */
    b.len = 0;
    colo_head(&b);
    xprt_ckpt_begin_write(&b, 0, 0);
    {
        static uint8_t big[8192];
        const void *bp[1] = {big};
        xprt_ram_pages_write(&b, 1, 13, &pfn, bp);
    }
    expect_bad(&b, -COLO_ESTREAM_CORRUPT, "page size 8192");
    colo_buf_dispose(&b);
}

Test(verify, libxl_page_data_checked)
{
    struct colo_buf b;
    uint8_t hdr[XPRT_LIBXL_HDR_SIZE], head[16];
    struct iovec iov[2] = {{head, 16}, {page, 4096}};

    colo_buf_init(&b, 0);
    xprt_libxl_hdr_encode(hdr);
    colo_buf_append(&b, hdr, sizeof(hdr));
    xprt_rec_write_buf(&b, XPRT_LIBXL_LIBXC_CONTEXT, NULL, 0);
    {
        uint8_t ih[24], dh[16];
        struct xprt_libxc_dhdr d = {2, 12, 4, 17};
        xprt_libxc_ihdr_encode(ih, 3);
        xprt_libxc_dhdr_encode(dh, &d);
        colo_buf_append(&b, ih, 24);
        colo_buf_append(&b, dh, 16);
    }
    colo_put_le32(head, 2); /* claims two pfns, carries one */
    colo_put_le32(head + 4, 0);
    colo_put_le64(head + 8, 5);
    xprt_rec_writev_buf(&b, XPRT_LIBXC_PAGE_DATA, iov, 2);
    expect_bad(&b, -COLO_ESTREAM_CORRUPT, "PAGE_DATA");
    colo_buf_dispose(&b);
}

/* The CLI, when the colo binary is built. */
static int run_cli(const char *path, char *err, size_t errsz)
{
    char exe[512];
    int p[2], status;
    pid_t pid;
    ssize_t n;

    snprintf(exe, sizeof(exe), "%s/orchestrator/colo", COLO_BINARY_DIR);
    cr_assert(pipe(p) == 0);
    pid = fork();
    if (pid == 0) { /* no cr_assert in the child */
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(p[1], 2);
        close_range(3, ~0u, 0);
        execl(exe, exe, "verify-stream", path, (char *)NULL);
        _exit(127);
    }
    cr_assert(pid > 0);
    close(p[1]);
    n = read(p[0], err, errsz - 1);
    err[n > 0 ? n : 0] = '\0';
    close(p[0]);
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

Test(verify, cli_exit_codes)
{
    char exe[512], path[] = "/tmp/colo-verify-XXXXXX", err[1024];
    struct colo_buf b;
    int fd;

    snprintf(exe, sizeof(exe), "%s/orchestrator/colo", COLO_BINARY_DIR);
    if (access(exe, X_OK) != 0) {
        cr_skip_test("%s not built", exe);
    }
    colo_buf_init(&b, 0);
    colo_head(&b);
    ckpt(&b, 0, 1);
    xprt_rec_write_buf(&b, XPRT_COLO_END, NULL, 0);
    fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(colo_write_all(fd, b.data, b.len), 0);
    close(fd);
    cr_assert_eq(run_cli(path, err, sizeof(err)), 0, "%s", err);
    /* Corrupt one padding byte of the HELLO record (name "guest-7" is 7
     * octets: body 39, one pad octet at 16 + 8 + 39). */
    b.data[16 + 8 + 39] = 0x11;
    colo_write_file(path, b.data, b.len);
    cr_assert_eq(run_cli(path, err, sizeof(err)), 6);
    cr_assert(strstr(err, "padding"), "%s", err);
    cr_assert(strstr(err, "offset 16"), "%s", err);
    /* Truncated. */
    colo_write_file(path, b.data, b.len - 3);
    b.data[16 + 8 + 39] = 0;
    colo_write_file(path, b.data, b.len - 3);
    cr_assert_eq(run_cli(path, err, sizeof(err)), 6);
    cr_assert(strstr(err, "EOF in"), "%s", err);
    unlink(path);
    cr_assert_eq(run_cli("/nonexistent/colo", err, sizeof(err)), 1);
    colo_buf_dispose(&b);
}

/* Disk records: DISK_INFO only in a FULL checkpoint, DISK_WRITE only for an
 * announced disk and inside its size; codec caps. */
static void disk_ckpt(struct colo_buf *b, uint64_t n, bool info, uint32_t disk,
                      uint64_t off, uint32_t len, uint32_t flags)
{
    static uint8_t data[8192];
    struct xprt_disk_info d = {.disk = 0, .size = 1 << 20};

    strcpy(d.id, "disk0");
    cr_assert_eq(xprt_ckpt_begin_write(b, n, info ? XPRT_CKPT_FLAG_FULL : 0),
                 0);
    if (info)
        cr_assert_eq(xprt_disk_info_write(b, &d), 0);
    cr_assert_eq(xprt_disk_write_write(b, disk, flags, off, data, len), 0);
    cr_assert_eq(xprt_devstate_write(b, XPRT_DEVSTATE_QEMU_XEN_SAVE, "dev", 3),
                 0);
    cr_assert_eq(xprt_ckpt_end_write(b, n), 0);
}

Test(verify, disk_records)
{
    struct {
        bool info2;
        uint32_t disk;
        uint64_t off;
        uint32_t len, flags;
        int rc;
        const char *why;
    } cases[] = {
        {false, 0, 4096, 8192, 0, 0, NULL},
        {false, 0, (1 << 20) - 512, 512, 0, 0, NULL},
        {false, 0, 0, 1 << 20, XPRT_DISK_WRITE_ZEROES, 0, NULL},
        {false, 0, (1 << 20) - 512, 1024, 0, -COLO_ESTREAM_CORRUPT,
         "past the end"},
        {false, 1, 0, 512, 0, -COLO_ESTREAM_CORRUPT, "without its DISK_INFO"},
        {true, 0, 0, 512, 0, -COLO_ESTREAM_CORRUPT, "outside a FULL"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct colo_buf b;
        struct xprt_verifier v;
        int rc;

        colo_buf_init(&b, 0);
        colo_head(&b);
        disk_ckpt(&b, 1, true, 0, 0, 4096, 0);
        if (cases[i].info2) {
            /* DISK_INFO in a checkpoint that is not FULL. */
            struct xprt_disk_info d = {.disk = 0, .size = 1 << 20};

            cr_assert_eq(xprt_ckpt_begin_write(&b, 2, 0), 0);
            cr_assert_eq(xprt_disk_info_write(&b, &d), 0);
        } else {
            disk_ckpt(&b, 2, false, cases[i].disk, cases[i].off, cases[i].len,
                      cases[i].flags);
        }
        xprt_rec_write_buf(&b, XPRT_COLO_END, NULL, 0);
        rc = verify(&b, &v);
        cr_assert_eq(rc, cases[i].rc, "case %zu: %d %s", i, rc,
                     xprt_verifier_why(&v));
        if (cases[i].why)
            cr_assert_not_null(strstr(xprt_verifier_why(&v), cases[i].why),
                               "case %zu: %s", i, xprt_verifier_why(&v));
        else
            cr_assert_eq(v.sum.disk_writes, 2);
        xprt_verifier_dispose(&v);
        colo_buf_dispose(&b);
    }
}

Test(verify, disk_codec_caps)
{
    uint8_t body[XPRT_DISK_WRITE_HEAD_SIZE + 16];
    struct xprt_disk_write_view w;
    struct xprt_disk_info d;
    struct colo_buf b;

    /* A data length over the cap, a ZEROES with data, a disk index over
     * the cap, a length that does not match the body. */
    xprt_disk_write_head_encode(body, 0, 0, 0, XPRT_DISK_WRITE_MAX + 1);
    cr_assert_eq(xprt_disk_write_decode(body, sizeof(body), &w),
                 -COLO_ESTREAM_TOO_BIG);
    xprt_disk_write_head_encode(body, 0, XPRT_DISK_WRITE_ZEROES, 0, 16);
    cr_assert_eq(xprt_disk_write_decode(body, sizeof(body), &w),
                 -COLO_ESTREAM_CORRUPT);
    cr_assert_eq(xprt_disk_write_decode(body, XPRT_DISK_WRITE_HEAD_SIZE, &w),
                 0);
    xprt_disk_write_head_encode(body, XPRT_DISK_MAX, 0, 0, 16);
    cr_assert_eq(xprt_disk_write_decode(body, sizeof(body), &w),
                 -COLO_ESTREAM_TOO_BIG);
    xprt_disk_write_head_encode(body, 0, 0, 0, 15);
    cr_assert_eq(xprt_disk_write_decode(body, sizeof(body), &w),
                 -COLO_ESTREAM_CORRUPT);
    xprt_disk_write_head_encode(body, 0, 0, UINT64_MAX - 4, 16);
    cr_assert_eq(xprt_disk_write_decode(body, sizeof(body), &w),
                 -COLO_ESTREAM_CORRUPT);
    /* DISK_INFO: round trip; id over the cap refused by the writer. */
    colo_buf_init(&b, 0);
    memset(&d, 0, sizeof(d));
    d.disk = 3;
    d.size = 12345;
    strcpy(d.id, "root");
    cr_assert_eq(xprt_disk_info_write(&b, &d), 0);
    memset(&d, 0, sizeof(d));
    cr_assert_eq(xprt_disk_info_decode(b.data + 8, 24 + 4, &d), 0);
    cr_assert_eq(d.disk, 3);
    cr_assert_eq(d.size, 12345);
    cr_assert_str_eq(d.id, "root");
    cr_assert_eq(xprt_disk_info_decode(b.data + 8, 24 + 3, &d),
                 -COLO_ESTREAM_CORRUPT);
    colo_buf_dispose(&b);
}
