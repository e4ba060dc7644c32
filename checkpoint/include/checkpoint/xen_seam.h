/*
 * The helper's only door into libxenguest: a table of four functions with
 * libxenguest's own signatures (the 4.17 restore form; xen/helper_child.c
 * adapts to newer libraries). Tests swap it for ckpt_xen_fake_ops(), which
 * writes and reads real libxc-format streams. Included only by checkpoint/
 * sources: it pulls in xenctrl.h / xenguest.h.
 */
#ifndef COLO_CHECKPOINT_XEN_SEAM_H
#define COLO_CHECKPOINT_XEN_SEAM_H

#include <xenctrl.h>
#include <xenguest.h>

struct ckpt_xen_guest_ops {
    const char *name;
    /* NULL on failure, with a reason in why (errno kept). */
    xc_interface *(*open)(xentoollog_logger *lg, char *why, size_t whysz);
    void (*close)(xc_interface *xch);
    int (*save)(xc_interface *xch, int io_fd, uint32_t dom, uint32_t flags,
                struct save_callbacks *cb, xc_stream_type_t stream,
                int recv_fd);
    int (*restore)(xc_interface *xch, int io_fd, uint32_t dom,
                   unsigned int store_evtchn, unsigned long *store_mfn,
                   uint32_t store_domid, unsigned int console_evtchn,
                   unsigned long *console_mfn, uint32_t console_domid,
                   xc_stream_type_t stream, struct restore_callbacks *cb,
                   int send_back_fd);
};

#endif
