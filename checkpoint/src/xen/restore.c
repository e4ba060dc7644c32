/*
 * Restore side of a Xen job: the libxl records after libxc's stream
 * (up to END), the device model's start, the domain handed over.
 */
#include "job_priv.h"

void ckpt_xj_dm_started(int rc, const char *why, void *opaque)
{
    struct ckpt_xen_job *j = opaque;

    ckpt_xen_dm_start_free(j->dms);
    j->dms = NULL;
    if (rc < 0) {
        ckpt_xj_job_end(j, rc, "%s", why);
        return;
    }
    ckpt_xj_restore_complete(j);
}

void ckpt_xj_restore_complete(struct ckpt_xen_job *j)
{
    int rc;

    if (!j->rp.paused) {
        rc = ckpt_xen_dom_unpause(j->d, j->domid);
        if (rc < 0) {
            ckpt_xj_job_end(j, rc, "%s", ckpt_xen_dom_error(j->d));
            return;
        }
    }
    j->created = false; /* it is the user's domain now */
    ckpt_xj_job_end(j, 0, NULL);
}

/* ---- restore: the libxl layer around libxc ----------------------------- */

/* After libxc's END: libxl records up to libxl's END. PV/PVH streams have
 * none; HVM streams carry the device model's xenstore keys and state. */
int ckpt_xj_read_tail(struct ckpt_xen_job *j)
{
    for (int n = 0; n < 64; n++) {
        uint8_t *body;
        uint32_t type = 0, len = 0;
        int rc = ckpt_xen_read_rec_raw(j->fd, &type, &len, &body);

        if (rc == -COLO_ESTREAM_TOO_BIG) {
            ckpt_xj_job_end(j, rc,
                            "libxl record type %" PRIu32 " of %" PRIu32
                            " bytes is "
                            "over the cap",
                            type, len);
            return rc;
        }
        if (rc < 0) {
            if (rc == -COLO_EPEER_CLOSED)
                rc = -COLO_ESTREAM_TRUNCATED;
            ckpt_xj_job_end(j, rc, "reading a libxl record: %s",
                            colo_strerror(rc));
            return rc;
        }
        switch (type) {
        case XPRT_LIBXL_END:
            free(body);
            if (j->hvm && !j->emu) {
                ckpt_xj_job_end(
                    j, -COLO_ESTREAM_CORRUPT,
                    "an HVM stream without the device model's state "
                    "(no EMULATOR_CONTEXT record)");
                return -COLO_ESTREAM_CORRUPT;
            }
            return 0;
        case XPRT_LIBXL_EMULATOR_XENSTORE_DATA:
        case XPRT_LIBXL_EMULATOR_CONTEXT:
            rc = ckpt_xj_take_emulator(j, type, body, len, false);
            if (rc < 0) {
                free(body);
                ckpt_xj_job_end(
                    j, rc, "device-model record %" PRIu32 ": %s (%s)", type,
                    colo_strerror(rc), ckpt_xj_emulator_why(j));
                return rc;
            }
            continue;
        case XPRT_LIBXL_CHECKPOINT_END:
            free(body);
            ckpt_xj_job_end(j, -COLO_ESTREAM_UNSUPPORTED,
                            "a checkpointed (Remus/COLO) stream is not a save "
                            "file; use colo standby to receive it");
            return -COLO_ESTREAM_UNSUPPORTED;
        default:
            free(body);
            if (type & 0x80000000u)
                continue; /* optional: skipped */
            ckpt_xj_job_end(j, -COLO_ESTREAM_CORRUPT,
                            "unexpected libxl record type %" PRIu32
                            " after libxc's stream",
                            type);
            return -COLO_ESTREAM_CORRUPT;
        }
    }
    ckpt_xj_job_end(j, -COLO_ESTREAM_CORRUPT, "no libxl END record");
    return -COLO_ESTREAM_CORRUPT;
}
