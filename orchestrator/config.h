/*
 * The configuration of one colo VM: a model over jansson.
 *
 * The model keeps the whole JSON document (normalized, see below), so fields
 * colo does not understand survive parse -> generate -> parse unchanged,
 * including nested unknown objects and arrays and the libxl form of a Xen
 * domain, which is kept verbatim. The schema is documented in
 * docs/config.md.
 *
 * Two kinds of configuration:
 *   ORCH_VM_QEMU  colo's own schema: name, uuid, memory, vcpus, kernel,
 *                 ramdisk, cmdline, disks, devices, qemu, helpers.
 *   ORCH_VM_XEN   {"xen": <libxl domain config>, ...}: the libxl JSON form
 *                 (`xl create -n`, the "config" of `xl list -l`, the JSON in
 *                 an xl save header). A bare libxl document (top-level
 *                 "c_info"/"b_info") or an `xl list -l` array of exactly one
 *                 domain is accepted as input and wrapped into "xen".
 *
 * Parsing normalizes: the "memory_mb" shorthand becomes "memory"
 * {max_mb, target_mb}; defaults are written out (vcpus, qemu.binary,
 * qemu.machine, qemu.accel, disks[].format/readonly/interface/id); a missing
 * uuid is generated (RFC 4122 version 4) and the uuid is lower-cased. So a
 * configuration that travels to another host does not depend on that host's
 * defaults, and two configurations are equal (orch_config_equal) when their
 * normalized documents are equal.
 *
 * Errors: content errors return -COLO_ECONFIG and fill struct
 * orch_config_error (source name, JSON path such as `$.devices[2].id`,
 * what was expected; line and column for syntax errors). I/O errors return
 * -errno and fill it too. The library never prints: the caller logs
 * err->text once.
 *
 * Ownership: every function borrows its arguments; returned strings and
 * argv vectors belong to the caller (free() / orch_config_argv_free()).
 * Not thread-safe per object; distinct objects are independent.
 */
#ifndef COLO_ORCH_CONFIG_H
#define COLO_ORCH_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Caps on what a configuration may contain. The configuration travels in
 * the stream, so these bound what a peer can make colo allocate. */
#define ORCH_CONFIG_MAX_BYTES   (1024 * 1024) /* a whole document */
#define ORCH_CONFIG_MAX_STRING  4096          /* any string colo reads */
#define ORCH_CONFIG_MAX_DISKS   64
#define ORCH_CONFIG_MAX_DEVICES 256
#define ORCH_CONFIG_MAX_NICS    16
#define ORCH_CONFIG_MAX_PROPS   64  /* properties per device */
#define ORCH_CONFIG_MAX_EXTRA   256 /* qemu.extra_args entries */
#define ORCH_CONFIG_MAX_MEM_MB  (16LL * 1024 * 1024) /* 16 TiB */
#define ORCH_CONFIG_MAX_VCPUS   1024

enum orch_vm_type {
    ORCH_VM_QEMU = 0,
    ORCH_VM_XEN = 1,
};

/* Where and why a configuration was refused. All strings NUL-terminated
 * (possibly truncated); empty when not applicable. */
struct orch_config_error {
    char source[512];  /* file name, or the source name given for a string */
    char path[256];    /* JSON path "$.devices[2].id"; "" for syntax/IO */
    int line, column;  /* 1-based, syntax errors only; 0 otherwise */
    char message[512]; /* "expected integer >= 1, got string" */
    /* The whole thing, ready to log:
     *   "vm.json: $.devices[2].id: expected string, got integer"
     *   "vm.json:3:14: syntax error: ..." */
    char text[1400];
};

struct orch_vm_config;

/* ---- Parsing ---------------------------------------------------------- */

/* Read and parse a file (at most ORCH_CONFIG_MAX_BYTES). */
int orch_config_parse_file(const char *path, struct orch_vm_config **ret,
                           struct orch_config_error *err);
/* Parse len bytes of text (need not be NUL-terminated; at most
 * ORCH_CONFIG_MAX_BYTES). source names it in errors (NULL: "<string>"). */
int orch_config_parse_string(const char *text, size_t len, const char *source,
                             struct orch_vm_config **ret,
                             struct orch_config_error *err);
/* Validate a JSON value (borrowed; deep-copied). */
int orch_config_from_json(const json_t *root, const char *source,
                          struct orch_vm_config **ret,
                          struct orch_config_error *err);

void orch_config_free(struct orch_vm_config *c); /* accepts NULL */

/* ---- Generation, copy, compare ---------------------------------------- */

enum {
    ORCH_CONFIG_GEN_PRETTY = 1, /* indented, trailing newline (for humans) */
};

/* Canonical JSON: keys sorted, compact, reals with 17 digits, no trailing
 * newline; the same configuration always gives the same bytes. flags:
 * ORCH_CONFIG_GEN_PRETTY for an indented form (still sorted). *ret_len may
 * be NULL. */
int orch_config_generate(const struct orch_vm_config *c, unsigned flags,
                         char **ret_text, size_t *ret_len);
/* Xen only: the libxl domain configuration alone (what xl's save header
 * and libxl_domain_config_from_json() take). -EINVAL for a QEMU VM. */
int orch_config_generate_xen(const struct orch_vm_config *c, unsigned flags,
                             char **ret_text, size_t *ret_len);

int orch_config_dup(const struct orch_vm_config *c,
                    struct orch_vm_config **ret);
/* 1 when equal after normalization (key order, defaults, memory shorthand,
 * uuid case do not matter), 0 otherwise. */
int orch_config_equal(const struct orch_vm_config *a,
                      const struct orch_vm_config *b);

/* The normalized document (borrowed; valid until the next mutation). */
const json_t *orch_config_json(const struct orch_vm_config *c);
/* Xen only: the libxl object (borrowed), NULL for a QEMU VM. */
const json_t *orch_config_xen_json(const struct orch_vm_config *c);

/* ---- Accessors --------------------------------------------------------- */

enum orch_vm_type orch_config_type(const struct orch_vm_config *c);
const char *orch_config_name(const struct orch_vm_config *c);
const char *orch_config_uuid(const struct orch_vm_config *c); /* lower */
/* Memory in MiB. Xen: b_info.max_memkb / target_memkb rounded down; 0 when
 * the libxl document leaves them to libxl's default. */
uint64_t orch_config_max_mb(const struct orch_vm_config *c);
uint64_t orch_config_target_mb(const struct orch_vm_config *c);
/* Xen: b_info.max_vcpus, 0 when absent. */
unsigned orch_config_vcpus(const struct orch_vm_config *c);
/* QEMU only: number of devices and the device with this id (borrowed,
 * NULL if none). A device object is exactly the arguments of QMP
 * device_add: {"driver", "id", props...}. */
size_t orch_config_device_count(const struct orch_vm_config *c);
const json_t *orch_config_device_get(const struct orch_vm_config *c,
                                     const char *id);
/* QEMU only: number of NICs ($.nics) and the id of NIC i (its netdev's and
 * its device's id; NULL when out of range or for a Xen VM). */
/* Disks: id, path (this host's) and whether "replicate" is set (a
 * writable raw disk colo replicates by checkpoint: docs/config.md). */
size_t orch_config_disk_count(const struct orch_vm_config *c);
int orch_config_disk_get(const struct orch_vm_config *c, size_t i,
                         const char **id, const char **path, bool *replicate);
/* This host's image for disk id (the secondary's own paths). */
int orch_config_disk_set_path(struct orch_vm_config *c, const char *id,
                              const char *path);
size_t orch_config_nic_count(const struct orch_vm_config *c);
const char *orch_config_nic_id(const struct orch_vm_config *c, size_t i);

/* ---- Mutation (mem-set, device-add, device-remove) ------------------------
 * Each either applies completely or leaves the configuration unchanged. */

/* 1 <= mb <= max_mb, else -COLO_ECONFIG. Xen: sets b_info.target_memkb. */
int orch_config_set_target_mb(struct orch_vm_config *c, uint64_t mb,
                              struct orch_config_error *err);
/* Append a device (borrowed, deep-copied) after validating it like
 * $.devices[N]. -EEXIST if its id is taken, -COLO_ECONFIG if invalid,
 * -EOPNOTSUPP for a Xen VM. */
int orch_config_device_add(struct orch_vm_config *c, const json_t *dev,
                           struct orch_config_error *err);
/* -ENOENT if no device has this id. */
int orch_config_device_remove(struct orch_vm_config *c, const char *id);

/* COLO mode runs a copy of the guest on the secondary between
 * checkpoints, opened from the same configuration: a disk it would open
 * for writing (any disk not "readonly") is one it would share with the
 * primary, and two writers corrupt an image. Until disk replication gives
 * the secondary its own writable copy, such a configuration is refused:
 * -COLO_ECONFIG with the reason in why (naming the disk), 0 when COLO
 * mode may run it. Xen configurations: 0 (their COLO path checks its own
 * disks). */
int orch_config_colo_disks_check(const struct orch_vm_config *c, char *why,
                                 size_t whysz);

/* ---- QEMU command line ------------------------------------------------- */

enum orch_kvm_mode {
    ORCH_KVM_DETECT = 0, /* qemu.accel "auto": KVM if /dev/kvm opens */
    ORCH_KVM_NO,         /* "auto" means TCG */
    ORCH_KVM_YES,        /* "auto" means KVM */
};

struct orch_qemu_launch_params {
    const char *ram_path;    /* required: the memory-backend-file mem-path */
    const char *serial_path; /* COM1 to this file; NULL: no serial port */
    int paused;              /* -S: start in prelaunch */
    /* Secondary waiting for device state: -S -incoming defer,
     * -global migration.send-configuration=off and suppress-vmdesc=on on the
     * one -machine option. */
    int incoming_defer;
    enum orch_kvm_mode kvm;
    /* Appended last, verbatim (NULL-terminated; NULL for none). The
     * launcher passes its QMP monitor here:
     *   -chardev socket,id=qmp,fd=N,server=on,wait=off
     *   -mon chardev=qmp,mode=control */
    const char *const *extra_args;
};

/* Build the argv (argv[0] = qemu.binary, NULL-terminated) for a QEMU VM:
 *   BIN -name NAME -uuid UUID -nodefaults -no-user-config -vga none
 *   -display none -machine M,memory-backend=ram[,suppress-vmdesc=on]
 *   -object memory-backend-file,id=ram,size=MAXM,mem-path=P,share=on
 *   -m MAXM -smp N -accel kvm|tcg [-cpu C] [-kernel K [-initrd R]
 *   [-append C]] [-drive ...]... [-device ...]...
 *   [-netdev stream|tap,id=ID,... -device MODEL,id=ID,netdev=ID]...
 *   [-chardev file,...
 *   -serial chardev:serial0] [-S] [-incoming defer -global ...]
 *   qemu.extra_args... p->extra_args...
 * Option values are escaped for QEMU's key=value syntax (commas doubled).
 * -EINVAL for a Xen VM or a missing ram_path. Free with
 * orch_config_argv_free(). */
int orch_config_qemu_argv(const struct orch_vm_config *c,
                          const struct orch_qemu_launch_params *p,
                          char ***ret_argv);
void orch_config_argv_free(char **argv); /* accepts NULL */

/* Double every comma of s, as QEMU's option parser expects inside a
 * value. Returns a malloc'd string or NULL on ENOMEM. */
char *orch_config_qemu_escape(const char *s);

#endif
