/*
 * libxl's records on an fd: the ones colo writes around libxc's stream
 * (libxl_stream_write.c's order), the ACK / ERROR / CHECKPOINT_STATE
 * exchange of Remus and COLO, and one record read whole. All of these
 * block on the fd (a save file, or a socket within a deadline).
 */
#include "libxl_rec.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "checkpoint/xen_helper.h"
#include "checkpoint/xen_job.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/timeutil.h"
#include "transport/colo_rec.h"
#include "transport/record.h"
#include "transport/xen_stream.h"

int ckpt_xen_stream_begin(int fd)
{
    uint8_t hdr[XPRT_LIBXL_HDR_SIZE];
    int rc;

    xprt_libxl_hdr_encode(hdr);
    rc = colo_write_all(fd, hdr, sizeof(hdr));
    if (rc < 0)
        return rc;
    return xprt_rec_write_fd(fd, XPRT_LIBXL_LIBXC_CONTEXT, NULL, 0);
}

static int emulator_rec(int fd, uint32_t type, const void *data, size_t len)
{
    uint8_t h[8];
    struct iovec iov[2] = {{h, 8}, {(void *)data, len}};

    xprt_emulator_hdr_encode(h, XPRT_EMULATOR_QEMU_UPSTREAM, 0);
    return xprt_rec_writev_fd(fd, type, iov, 2);
}

static int emulator_context(int fd, const void *emu, size_t emu_len)
{
    return emulator_rec(fd, XPRT_LIBXL_EMULATOR_CONTEXT, emu, emu_len);
}

int ckpt_xen_stream_emulator_xenstore(int fd, const void *data, size_t len)
{
    return emulator_rec(fd, XPRT_LIBXL_EMULATOR_XENSTORE_DATA, data, len);
}

int ckpt_xen_stream_checkpoint_end(int fd, const void *emu, size_t emu_len)
{
    int rc;

    if (emu) {
        rc = emulator_context(fd, emu, emu_len);
        if (rc < 0)
            return rc;
    }
    return xprt_rec_write_fd(fd, XPRT_LIBXL_CHECKPOINT_END, NULL, 0);
}

int ckpt_xen_stream_end(int fd, const void *emu, size_t emu_len)
{
    int rc;

    if (emu) {
        rc = emulator_context(fd, emu, emu_len);
        if (rc < 0)
            return rc;
    }
    return xprt_rec_write_fd(fd, XPRT_LIBXL_END, NULL, 0);
}

/* ---- ACK, ERROR, CHECKPOINT_STATE ------------------------------------- */

int ckpt_xen_send_ack(int fd, uint64_t v)
{
    uint8_t b[8];

    colo_put_le64(b, v);
    return xprt_rec_write_fd(fd, XPRT_COLO_ACK, b, sizeof(b));
}

int ckpt_xen_send_error(int fd, int code, const char *text)
{
    struct colo_buf b;
    int rc;

    colo_buf_init(&b, 0);
    rc = xprt_error_write(&b, code, text);
    if (rc >= 0)
        rc = colo_write_all(fd, b.data, b.len);
    colo_buf_dispose(&b);
    return rc;
}

/* One record from the peer within ms, heartbeats skipped; an ERROR
 * becomes -COLO_EPEER_REJECTED (its code in *code when asked). */
static int read_peer_rec(int fd, int ms, uint32_t *type, uint8_t *body,
                         size_t cap, uint32_t *len, int32_t *code, char *why,
                         size_t whysz)
{
    uint64_t end = colo_now_ns() + (uint64_t)ms * 1000000u;
    uint8_t h[8];

    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = (int64_t)(end - colo_now_ns()) / 1000000;
        uint32_t padded;
        int rc;

        if (left <= 0 || poll(&p, 1, (int)left) == 0) {
            snprintf(why, whysz, "no answer from the peer in %d ms", ms);
            return -ETIMEDOUT;
        }
        rc = colo_read_all(fd, h, sizeof(h));
        if (rc < 0) {
            snprintf(why, whysz, "the peer closed the connection (%s)",
                     colo_strerror(rc));
            return rc;
        }
        *type = colo_get_le32(h);
        *len = colo_get_le32(h + 4);
        padded = (*len + 7) & ~7u; /* wraps for a huge len: checked */
        if (*len > cap || padded > cap) {
            snprintf(why, whysz, "oversized record from the peer");
            return -COLO_ESTREAM_TOO_BIG;
        }
        rc = colo_read_all(fd, body, padded);
        if (rc < 0) {
            snprintf(why, whysz, "the peer closed the connection (%s)",
                     colo_strerror(rc));
            return rc;
        }
        if (*type == XPRT_COLO_HEARTBEAT)
            continue;
        if (*type == XPRT_COLO_ERROR) {
            int32_t c = 0;
            char text[400] = "";

            xprt_error_decode(body, *len, &c, text, sizeof(text));
            if (code)
                *code = c;
            snprintf(why, whysz, "the peer says: %s", text);
            return -COLO_EPEER_REJECTED;
        }
        return 0;
    }
}

int ckpt_xen_read_ack(int fd, int ms, uint64_t *v, char *why, size_t whysz)
{
    uint8_t body[512];
    uint32_t type, len;
    int rc = read_peer_rec(fd, ms, &type, body, sizeof(body), &len, NULL, why,
                           whysz);

    if (rc < 0)
        return rc;
    if (type == XPRT_COLO_ACK && len == 8) {
        *v = colo_get_le64(body);
        return 0;
    }
    snprintf(why, whysz, "unexpected record 0x%08" PRIx32 " from the peer",
             type);
    return -COLO_ESTREAM_CORRUPT;
}

/* COLO: libxl's CHECKPOINT_STATE with the id want, within ms. */
int ckpt_xen_read_state(int fd, int ms, uint32_t want, int32_t *code, char *why,
                        size_t whysz)
{
    static const char *const names[] = {"CHECKPOINT_NEW", "SVM_SUSPENDED",
                                        "SVM_READY", "SVM_RESUMED"};
    uint8_t body[512];
    uint32_t type, len, id;
    int rc = read_peer_rec(fd, ms, &type, body, sizeof(body), &len, code, why,
                           whysz);

    if (rc < 0)
        return rc;
    if (type != XPRT_LIBXL_CHECKPOINT_STATE ||
        xprt_ckpt_state_decode(body, len, &id) < 0) {
        snprintf(why, whysz,
                 "unexpected record 0x%08" PRIx32 " from the peer (waiting "
                 "for %s)",
                 type, names[want & 3]);
        return -COLO_ESTREAM_CORRUPT;
    }
    if (id != want) {
        snprintf(why, whysz,
                 "checkpoint state %" PRIu32 " from the peer, "
                 "expected %s",
                 id, names[want & 3]);
        return -COLO_ESTREAM_CORRUPT;
    }
    return 0;
}

int ckpt_xen_send_state(int fd, uint32_t id)
{
    uint8_t b[4];

    xprt_ckpt_state_encode(b, id);
    return xprt_rec_write_fd(fd, XPRT_LIBXL_CHECKPOINT_STATE, b, sizeof(b));
}

int ckpt_xen_read_rec_raw(int fd, uint32_t *type, uint32_t *len, uint8_t **body)
{
    uint8_t h[8];
    size_t padded, cap;
    int rc = colo_read_all(fd, h, sizeof(h));

    *body = NULL;
    if (rc < 0)
        return rc;
    *type = colo_get_le32(h);
    *len = colo_get_le32(h + 4);
    padded = ((size_t)*len + 7) & ~(size_t)7;
    cap = *type == XPRT_LIBXL_EMULATOR_CONTEXT ||
                  *type == XPRT_LIBXL_EMULATOR_XENSTORE_DATA ||
                  (*type & 0x80000000u)
              ? LIBXL_REC_MAX
              : 4096;
    if (padded > cap)
        return -COLO_ESTREAM_TOO_BIG;
    *body = malloc(padded ? padded : 1);
    if (!*body)
        return -ENOMEM;
    rc = colo_read_all(fd, *body, padded);
    if (rc < 0) {
        free(*body);
        *body = NULL;
    }
    return rc;
}
