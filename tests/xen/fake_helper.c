/*
 * xen-fake-helper: the test helper executable.
 *   xen-fake-helper WORD save|restore ...  colo's helper main over the fake
 *                                          libxc (WORD stands where colo
 *                                          has "__xen-helper")
 *   xen-fake-helper script NAME FD         a scripted helper speaking the
 *                                          channel protocol on FD: "all"
 *                                          (every message, byte at a time),
 *                                          "exit-early", "garbage",
 *                                          "truncated", "after-done",
 *                                          "hang"
 */
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <unistd.h>

#include "checkpoint/xen_helper.h"
#include "common/buf.h"
#include "common/fd.h"
#include "common/timeutil.h"

/* Write one byte at a time and wait until the parent has taken each one
 * (the unix socket's send queue drains), so the parent really sees
 * 1-byte reads. Bounded by a deadline. */
static int slow_write(int fd, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t end = colo_now_ns() + 2000000000ull;
        int q = 1;

        if (write(fd, p + i, 1) != 1)
            return -1;
        while (ioctl(fd, SIOCOUTQ, &q) == 0 && q > 0 && colo_now_ns() < end)
            sched_yield();
    }
    return 0;
}

static int child_send(int fd, const struct ckpt_xen_msg *m, bool slow)
{
    struct colo_buf b;
    int rc;

    colo_buf_init(&b, 0);
    rc = ckpt_xen_msg_encode(&b, m);
    if (rc == 0)
        rc = slow ? slow_write(fd, b.data, b.len)
                  : colo_write_all(fd, b.data, b.len);
    colo_buf_dispose(&b);
    return rc;
}

/* The script: LOG, PROGRESS, a CALL for every callback (the reply must be
 * cb * 3 + a), RESULTS, DONE. Exit 0 if every reply matched. */
static int script_all(int fd)
{
    struct ckpt_xen_msg m = {.type = CKPT_XEN_MSG_LOG,
                             .u32a = 5,
                             .text = "xc: hello",
                             .text_len = 9};

    if (child_send(fd, &m, true) < 0)
        return 20;
    m = (struct ckpt_xen_msg){.type = CKPT_XEN_MSG_PROGRESS,
                              .u64a = 1,
                              .u64b = 2,
                              .text = "xc: Frames",
                              .text_len = 10};
    if (child_send(fd, &m, true) < 0)
        return 21;
    for (uint32_t cb = 1; cb <= CKPT_XEN_CB_MAX; cb++) {
        uint8_t f[16];
        ssize_t n;

        m = (struct ckpt_xen_msg){.type = CKPT_XEN_MSG_CALL,
                                  .u32a = cb,
                                  .u32b = cb + 1,
                                  .u64a = 100 + cb};
        if (child_send(fd, &m, true) < 0)
            return 22;
        if (colo_read_all(fd, f, sizeof(f)) < 0)
            return 23;
        n = ckpt_xen_msg_decode(f, sizeof(f), &m);
        if (n != 16 || m.type != CKPT_XEN_MSG_REPLY || m.u32a != cb ||
            m.i32a != (int32_t)(cb * 3 + cb + 1))
            return 30 + (int)cb;
    }
    m = (struct ckpt_xen_msg){
        .type = CKPT_XEN_MSG_RESULTS, .u64a = 0x1234, .u64b = 0x5678};
    if (child_send(fd, &m, true) < 0)
        return 24;
    m = (struct ckpt_xen_msg){
        .type = CKPT_XEN_MSG_DONE, .u64a = 0x1234, .u64b = 0x5678};
    if (child_send(fd, &m, true) < 0)
        return 25;
    return 0;
}

static int run_script(int fd, const char *s)
{
    struct ckpt_xen_msg m = {
        .type = CKPT_XEN_MSG_LOG, .text = "one", .text_len = 3};
    uint8_t bad[8] = {CKPT_XEN_MSG_LOG, 0, 0, 0, 0, 0, 0, 0x7f};
    char c;

    if (!strcmp(s, "all"))
        return script_all(fd);
    if (!strcmp(s, "exit-early")) {
        child_send(fd, &m, false);
        return 0;
    }
    if (!strcmp(s, "garbage")) {
        /* An oversized frame, then wait: the parent must kill us. */
        colo_write_all(fd, bad, sizeof(bad));
        while (read(fd, &c, 1) > 0)
            ;
        for (;;)
            pause();
    }
    if (!strcmp(s, "hang")) {
        /* One line, then silence until killed. */
        child_send(fd, &m, false);
        for (;;)
            pause();
    }
    if (!strcmp(s, "truncated")) {
        colo_write_all(fd, bad, 3);
        return 0;
    }
    if (!strcmp(s, "after-done")) {
        m.type = CKPT_XEN_MSG_DONE;
        child_send(fd, &m, false);
        m.type = CKPT_XEN_MSG_LOG;
        child_send(fd, &m, false);
        return 0;
    }
    return 99;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "script"))
        return run_script(atoi(argv[3]), argv[2]);
    if (argc < 2)
        return 2;
    return ckpt_xen_helper_main(argc - 2, argv + 2, ckpt_xen_fake_ops());
}
