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
