/*
 * Save files of QEMU guests (`colo save VM FILE`, `colo restore FILE`).
 *
 * A save file is a colo stream (docs/protocol.md §4) with role SAVEFILE:
 *   "ColoStrm" header, HELLO (name, RAM size, page size), VM_CONFIG (the
 *   VM's configuration, JSON), CHECKPOINT_BEGIN(1, FULL), RAM_PAGES (every
 *   non-zero page; pages not in the file are zero), DEVICE_STATE (QEMU's
 *   xen-save-devices-state blob), CHECKPOINT_END(1), IMAGE_DIGEST (an
 *   optional record type 0x80C08001: SHA-256 over the configuration, the
 *   whole RAM image and the device state; restore refuses a file whose
 *   digest does not match), END.
 * So the configuration travels with the image, `colo verify-stream` checks
 * a save file, and `colo restore` needs nothing else.
 *
 * Writing goes to FILE.tmp, fsync, rename: a failed save leaves no file
 * and never a partial one. Reading checks every record before trusting
 * it; pages are written into a RAM file the caller created and discards on
 * error, so a corrupt file never becomes a half-restored VM.
 */
#ifndef COLO_ORCH_QSAVE_H
#define COLO_ORCH_QSAVE_H

#include <stddef.h>
#include <stdint.h>

/* Write the save file at path (see above). ram: the guest's RAM (ram_size
 * bytes, a multiple of 4 KiB). Returns 0 or a negative error. */
int orch_qsave_write(const char *path, const char *vm_name,
                     const char *config_json, const uint8_t *ram,
                     size_t ram_size, const uint8_t *dev, size_t dev_len);

struct orch_qsave_image {
    char vm_name[256];
    char *config_json; /* malloc'd */
    uint64_t ram_size;
    uint8_t *dev; /* malloc'd */
    size_t dev_len;
    uint64_t pages; /* non-zero pages restored */
};

/* Read the save file at path. Before any page is written, open_ram(arg,
 * ram_size) is called and returns an fd (O_RDWR, ram_size bytes, zero) the
 * pages go to, or a negative error. On error, *why says where and why
 * (offset, record) and the image is disposed. */
int orch_qsave_read(const char *path,
                    int (*open_ram)(void *arg, uint64_t ram_size), void *arg,
                    struct orch_qsave_image *ret, char *why, size_t whysz);
void orch_qsave_image_dispose(struct orch_qsave_image *img);

/* True when the file starts with a colo stream header (else it may be an
 * xl save file). */
int orch_qsave_is_colo(const char *path);

#endif
