/* Test harness for the Xen helper: an event loop, an owner that records
 * every callback, and a bounded run. */
#ifndef COLO_TESTS_XEN_TUTIL_H
#define COLO_TESTS_XEN_TUTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "checkpoint/xen_helper.h"

#define FAKE_HELPER    COLO_BINARY_DIR "/tests/xen/xen-fake-helper"
#define COLO_EXE       COLO_BINARY_DIR "/orchestrator/colo"
#define TUTIL_NO_REPLY (-1000) /* on_call: answer later */

struct tctx {
    struct event_base *base;
    struct ckpt_xen_helper *h;
    char seq[8192]; /* "suspend postcopy ..." */
    char logs[16384];
    int ncalls[CKPT_XEN_CB_MAX + 1];
    int nlogs, nprogress, nresults, ndone;
    int rc;
    struct ckpt_xen_result res;
    uint64_t store_gfn, console_gfn;
    /* Reply value for a call (default: ok values). */
    int (*on_call)(struct tctx *t, const struct ckpt_xen_call *c);
    void *user;
    int io_fd;
    bool own_base;
    bool free_in_done; /* done() frees the helper object */
};

void tctx_init(struct tctx *t);
/* Share another context's loop (not freed by dispose). */
void tctx_init_on(struct tctx *t, struct event_base *base);
void tctx_dispose(struct tctx *t);
/* Run the loop until done fired once (or timeout_ms: test fails). */
void tctx_run(struct tctx *t, int timeout_ms);
/* Start the fake helper (or exe if not NULL) with params p. */
void tctx_start(struct tctx *t, const char *exe,
                const struct ckpt_xen_helper_params *p);
/* The default reply for a callback (what libxl would answer when all is
 * well). */
int tctx_default_reply(const struct ckpt_xen_call *c);
/* Write a file, return an fd open for reading (deleted path). */
int tutil_tmpfile(void);
/* Run verify-stream-v2 on fd's contents; returns its exit status or -1
 * when the tool is missing. */
int tutil_oracle(int fd, const char *fmt);

#endif
