/* common/: error vocabulary, buffers and caps, fd helpers, fault points. */
#include "common/buf.h"
#include "common/error.h"
#include "common/fault.h"
#include "common/fd.h"
#include "common/log.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

Test(error, every_code_has_a_message_and_name)
{
    for (int e = COLO_EBASE; e < COLO_EMAX; e++) {
        cr_expect_str_neq(colo_strerror(-e), "unknown colo error", "%d", e);
        cr_expect_str_neq(colo_errname(-e), "EUNKNOWN", "%d", e);
    }
    cr_expect_str_eq(colo_strerror(-ENOENT), strerror(ENOENT));
    cr_expect_str_eq(colo_errname(-ENOENT), "ENOENT");
    cr_expect_str_eq(colo_strerror(0), "success");
    cr_expect_str_eq(colo_strerror(-COLO_EMAX), "unknown colo error");
}

Test(error, qmp_classes_are_apart_from_link_failures)
{
    cr_expect(colo_err_is_qmp_class(-COLO_EQMP_GENERIC));
    cr_expect(colo_err_is_qmp_class(-COLO_EQMP_UNKNOWN_CLASS));
    cr_expect_not(colo_err_is_qmp_class(-COLO_EQMP_DISCONNECTED));
    cr_expect_not(colo_err_is_qmp_class(-COLO_EQMP_PROTOCOL));
    cr_expect_not(colo_err_is_qmp_class(-EIO));
}

Test(buf, cap_is_enforced_exactly)
{
    struct colo_buf b;
    char data[100] = {0};

    colo_buf_init(&b, 100);
    cr_expect_eq(colo_buf_append(&b, data, 60), 0);
    cr_expect_eq(colo_buf_append(&b, data, 40), 0, "exactly at the cap");
    cr_expect_eq(colo_buf_append(&b, data, 1), -COLO_ESTREAM_TOO_BIG);
    cr_expect_eq(b.len, 100u);
    colo_buf_dispose(&b);
    colo_buf_dispose(&b); /* idempotent */
}

Test(buf, wire_integers)
{
    uint8_t p[8];

    colo_put_le32(p, 0x01020304);
    cr_expect_eq(p[0], 4);
    cr_expect_eq(colo_get_le32(p), 0x01020304u);
    colo_put_be32(p, 0x01020304);
    cr_expect_eq(p[0], 1);
    cr_expect_eq(colo_get_be32(p), 0x01020304u);
    colo_put_le64(p, 0x1122334455667788ull);
    cr_expect_eq(colo_get_le64(p), 0x1122334455667788ull);
}

Test(fd, read_file_cap_is_inclusive)
{
    char path[] = "/tmp/colo-common-XXXXXX";
    int fd = mkstemp(path);
    char *buf = NULL;
    size_t len = 0;

    cr_assert_geq(fd, 0);
    cr_assert_eq(colo_write_all(fd, "0123456789", 10), 0);
    close(fd);
    cr_expect_eq(colo_read_file(path, 10, &buf, &len), 0, "exactly max");
    cr_expect_eq(len, 10u);
    cr_expect_str_eq(buf, "0123456789");
    free(buf);
    buf = NULL;
    cr_expect_eq(colo_read_file(path, 9, &buf, &len), -EFBIG);
    cr_expect_null(buf);
    unlink(path);
    cr_expect_eq(colo_read_file(path, 9, &buf, &len), -ENOENT);
}

Test(fd, read_all_reports_truncation)
{
    int p[2];
    char out[8];

    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(colo_write_all(p[1], "abc", 3), 0);
    colo_close(&p[1]);
    cr_expect_eq(p[1], -1);
    cr_expect_eq(colo_read_all(p[0], out, 8), -COLO_ESTREAM_TRUNCATED);
    cr_expect_eq(colo_read_all(p[0], out, 8), -COLO_EPEER_CLOSED);
    colo_close(&p[0]);
    colo_close(&p[0]); /* harmless */
}

/* The kernel keeps socket timeouts in jiffies: up to 10 ms more. */
#define cr_expect_timeout(fd, opt, ms)                                    \
    do {                                                                  \
        unsigned got_ = sock_timeout_ms(fd, opt);                         \
        cr_expect(got_ >= (ms) && got_ <= (ms) + 10, "%s: %u ms, not %u", \
                  #opt, got_, (unsigned)(ms));                            \
    } while (0)

static unsigned sock_timeout_ms(int fd, int opt)
{
    struct timeval tv;
    socklen_t len = sizeof(tv);

    cr_assert_eq(getsockopt(fd, SOL_SOCKET, opt, &tv, &len), 0);
    return (unsigned)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
}

Test(fd, socket_timeouts_set_and_kept)
{
    int sv[2];
    char c;

    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    cr_expect_eq(colo_fd_set_timeouts(sv[0], 1500, 250), 0);
    cr_expect_timeout(sv[0], SO_RCVTIMEO, 1500);
    cr_expect_timeout(sv[0], SO_SNDTIMEO, 250);
    /* 0 leaves a direction as it is. */
    cr_expect_eq(colo_fd_set_timeouts(sv[0], 20, 0), 0);
    cr_expect_timeout(sv[0], SO_RCVTIMEO, 20);
    cr_expect_timeout(sv[0], SO_SNDTIMEO, 250);
    /* A silent peer: the read ends with EAGAIN instead of blocking. */
    errno = 0;
    cr_expect_eq(read(sv[0], &c, 1), -1);
    cr_expect(errno == EAGAIN || errno == EWOULDBLOCK, "errno %d", errno);
    close(sv[0]);
    close(sv[1]);
    /* Not a socket: the error comes back. */
    cr_expect_eq(colo_fd_set_timeouts(-1, 10, 10), -EBADF);
}

Test(fault, points_from_environment)
{
    setenv("COLO_FAULT", "3,7", 1);
    colo_fault_reload();
    cr_expect(colo_fault(3));
    cr_expect(colo_fault(7));
    cr_expect_not(colo_fault(4));
    unsetenv("COLO_FAULT");
    colo_fault_reload();
    cr_expect_not(colo_fault(3));
}

Test(fault, checkpoint_selector)
{
    setenv("COLO_FAULT", "5", 1);
    setenv("COLO_FAULT_CKPT", "10", 1);
    colo_fault_reload();
    cr_expect_not(colo_fault_ckpt(5, 9), "before the selected checkpoint");
    cr_expect(colo_fault_ckpt(5, 10));
    cr_expect(colo_fault_ckpt(5, 11));
    cr_expect_not(colo_fault_ckpt(4, 12), "another point");
    unsetenv("COLO_FAULT");
    unsetenv("COLO_FAULT_CKPT");
    colo_fault_reload();
    cr_expect_not(colo_fault_ckpt(5, 12));
}

Test(log, json_escape)
{
    char out[64];

    colo_json_escape(out, sizeof(out), "a\"b\\c\nd\x01");
    cr_expect_str_eq(out, "a\\\"b\\\\c\\nd\\u0001");
    /* Truncation never splits an escape or overruns. */
    colo_json_escape(out, 4, "\"\"\"\"");
    cr_expect_str_eq(out, "\\\"");
}
