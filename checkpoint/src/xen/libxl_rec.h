/*
 * libxl's records on an fd (libxl_rec.c), private to checkpoint/src/xen/.
 * The public ones (the stream's own records, ACK / ERROR) are declared in
 * checkpoint/xen_helper.h and checkpoint/xen_job.h.
 */
#ifndef COLO_CHECKPOINT_XEN_LIBXL_REC_H
#define COLO_CHECKPOINT_XEN_LIBXL_REC_H

#include <stddef.h>
#include <stdint.h>

#define LIBXL_REC_MAX (16u << 20) /* cap on a libxl record body */

/* COLO: libxl's CHECKPOINT_STATE with the id want, within ms; an ERROR
 * from the peer is -COLO_EPEER_REJECTED with its code in *code (if not
 * NULL). */
int ckpt_xen_read_state(int fd, int ms, uint32_t want, int32_t *code, char *why,
                        size_t whysz);
/* COLO: libxl's CHECKPOINT_STATE with the id. */
int ckpt_xen_send_state(int fd, uint32_t id);
/* One libxl record; *body malloc'd (the caller frees it), *type and *len
 * set even when it is refused. Capped at LIBXL_REC_MAX for the device
 * model's records and optional ones, at 4 KiB for the rest (libxl's own
 * are a few bytes). */
int ckpt_xen_read_rec_raw(int fd, uint32_t *type, uint32_t *len,
                          uint8_t **body);

#endif
