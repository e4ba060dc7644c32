#include "qtest.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fd.h"
#include "common/timeutil.h"
#include "tloop.h"

bool qt_run_until(struct event_base *base, const bool *flag, int ms)
{
    return tloop_until_flag(base, flag, (unsigned)ms);
}

bool qt_run_until_count(struct event_base *base, const int *counter, int want,
                        int ms)
{
    return tloop_until_count(base, counter, want, (unsigned)ms);
}

bool qt_have_qemu(void)
{
    if (access("/usr/bin/qemu-system-x86_64", X_OK) == 0)
        return true;
    cr_skip_test("qemu-system-x86_64 not installed");
}

bool qt_kvm(void)
{
    const char *tcg = getenv("COLO_TEST_TCG");
    int fd;

    if (tcg && *tcg == '1')
        return false;
    fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return false;
    colo_close(&fd);
    return true;
}

char **qt_bare_argv(const char *const *extra)
{
    static char *argv[64];
    static const char *base[] = {
        "qemu-system-x86_64",
        "-S",
        "-nodefaults",
        "-vga",
        "none",
        "-display",
        "none",
        "-machine",
        "pc",
        "-m",
        "64",
        "-accel",
    };
    size_t n = 0;

    for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
        argv[n++] = (char *)base[i];
    argv[n++] = (char *)(qt_kvm() ? "kvm" : "tcg");
    for (size_t i = 0; extra && extra[i] && n < 63; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    return argv;
}

struct launch_wait {
    bool done;
    int rc;
    char *status;
    size_t status_sz;
};

static void launch_cb(struct qmp_qemu *q, int rc, const char *status, void *arg)
{
    struct launch_wait *w = arg;

    (void)q;
    w->done = true;
    w->rc = rc;
    if (status && w->status)
        snprintf(w->status, w->status_sz, "%s", status);
}

int qt_launch(struct event_base *base, char **argv,
              const struct qmp_launch_opts *opts, struct qmp_qemu **ret_q,
              char *status, size_t status_sz)
{
    struct launch_wait w = {.status = status, .status_sz = status_sz};
    int rc = qmp_qemu_launch(base, argv, opts, launch_cb, &w, ret_q);

    if (rc < 0)
        return rc;
    if (!qt_run_until(base, &w.done, 60000))
        return -ETIMEDOUT;
    return w.rc;
}
