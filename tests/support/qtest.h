/* The QMP fixture (qmp, dbus tests): loop-driven waits, a bare QEMU. */
#ifndef COLO_TEST_QMP_QTEST_H
#define COLO_TEST_QMP_QTEST_H

#include <stdbool.h>

#include <event2/event.h>

#include "qmp/launch.h"
#include "qmp/qmp.h"

/* Run the loop until *flag or ms elapsed; returns *flag. Never sleeps
 * (tloop.h: the deadline is a timer on the base). */
bool qt_run_until(struct event_base *base, const bool *flag, int ms);
/* Run the loop until *counter >= want or ms elapsed. */
bool qt_run_until_count(struct event_base *base, const int *counter, int want,
                        int ms);
/* True when qemu-system-x86_64 is found; otherwise skips the calling case
 * (cr_skip_test: it does not return). */
bool qt_have_qemu(void);
bool qt_kvm(void);
/* argv for a bare QEMU without guest: -S -nodefaults -vga none ...; extra
 * (may be NULL) NULL-terminated appended. Static storage: one at a time. */
char **qt_bare_argv(const char *const *extra);
/* Launch and wait until up; returns the rc of up_cb (or -ETIMEDOUT). */
int qt_launch(struct event_base *base, char **argv,
              const struct qmp_launch_opts *opts, struct qmp_qemu **ret_q,
              char *status, size_t status_sz);

#endif
