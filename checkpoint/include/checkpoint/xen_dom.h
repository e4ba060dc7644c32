/*
 * Xen domain operations: the part of libxl's job colo needs around
 * libxenguest, done directly with libxenctrl and libxenstore (Xen's
 * tools/libs/light/libxl_dom.c, libxl_create.c, libxl_dom_suspend.c are
 * the reference). Only checkpoint/ includes xenctrl.h; this header keeps
 * it out.
 *
 * What is covered, per domain type:
 *   PVH   everything below (the nested Xen tests run PVH guests)
 *   PV    everything but creation with e820_host / vNUMA
 *   HVM   everything below; the device model (QEMU) is xen_dm.h's
 * Backend devices (vbd, vif, ...) are not set up on restore and not torn
 * down on destroy: a domain that has any is refused by create and destroy
 * with a message naming the device class.
 *
 * Suspend is asynchronous (a libevent watch on xenstore's fd and a
 * deadline). Everything else is a short synchronous hypercall or xenstore
 * transaction, as libxl does them.
 *
 * States of the suspend operation held by a handle:
 *   IDLE       nothing.   suspend_start -> REQUESTED (on error: IDLE)
 *   REQUESTED  control/shutdown = "suspend" written (or
 *              xc_domain_shutdown for an HVM guest without PV drivers),
 *              xenstore watches on @releaseDomain and control/shutdown,
 *              a deadline timer. Each watch event re-reads the domain's
 *              state: shut down with reason suspend -> done(0); shut down
 *              otherwise, crashed, gone -> done(-COLO_EXEN).
 *              deadline -> the request is withdrawn (control/shutdown
 *              removed) -> done(-ETIMEDOUT).
 *   suspend_cancel: REQUESTED -> IDLE, no callback.
 * done is called exactly once per successful start, from the loop, as the
 * last thing the handle does; the owner may close the handle inside it.
 */
#ifndef COLO_CHECKPOINT_XEN_DOM_H
#define COLO_CHECKPOINT_XEN_DOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct ckpt_xen_dom;
struct ckpt_xen_newdom;

enum ckpt_xen_domtype {
    CKPT_XEN_DOM_PV = 1,
    CKPT_XEN_DOM_PVH = 2,
    CKPT_XEN_DOM_HVM = 3,
};

struct ckpt_xen_dominfo {
    uint32_t domid;
    enum ckpt_xen_domtype type;
    bool paused, shutdown, dying, crashed;
    unsigned int shutdown_reason; /* SHUTDOWN_* if shutdown */
    uint64_t max_memkb;
    uint64_t nr_pages;
    unsigned int max_vcpus;
    uint8_t uuid[16];
    char name[128]; /* from xenstore; "" if it has none */
};

/* Open libxenctrl and xenstore. -COLO_EXEN with "no Xen hypervisor: ..."
 * or "xenstore: ..." in why when this is not a working dom0. */
int ckpt_xen_dom_open(struct ckpt_xen_dom **ret, char *why, size_t whysz);
void ckpt_xen_dom_close(struct ckpt_xen_dom *d); /* NULL ok */

/* The last failure's text (stable until the next call on d). */
const char *ckpt_xen_dom_error(const struct ckpt_xen_dom *d);

/* A decimal domid or a name (xenstore's /local/domain/N/name).
 * -ENOENT if no such domain; domain 0 is refused (-EPERM). */
int ckpt_xen_dom_find(struct ckpt_xen_dom *d, const char *what,
                      uint32_t *ret_domid);
int ckpt_xen_dom_info(struct ckpt_xen_dom *d, uint32_t domid,
                      struct ckpt_xen_dominfo *ret);

/* The domain's libxl configuration (the JSON libxl keeps in
 * /var/lib/xen/userdata-d<domid>.<uuid>.libxl-json), brought up to date
 * from the running domain as xl save does (ckpt_xen_config_refresh:
 * name, uuid, memory, vcpus), malloc'd and NUL-terminated. -ENOENT if the
 * domain was not made by libxl or colo. */
int ckpt_xen_dom_config(struct ckpt_xen_dom *d, uint32_t domid, char **ret_json,
                        size_t *ret_len);

/* What libxl_retrieve_domain_configuration (xl save, xl migrate) brings
 * up to date in the stored configuration from the running domain: the
 * userdata file keeps what the domain was created with, which after an `xl
 * migrate` names the receiving side's "NAME--incoming", and misses balloon
 * and vcpu hotplug changes. Fields left at 0 / NULL / false stay as
 * stored. */
struct ckpt_xen_live {
    const char *name;          /* xenstore /local/domain/N/name */
    const uint8_t *uuid;       /* 16 octets: the hypervisor's handle */
    uint64_t target_memkb;     /* xenstore memory/target (balloon target) */
    uint64_t max_memkb;        /* xenstore memory/static-max */
    bool have_vcpus;           /* avail_vcpus_mask below is valid */
    uint64_t avail_vcpus_mask; /* cpu/K/availability "online", K < 64 */
};
/* json (len octets) with c_info.name, c_info.uuid, b_info.target_memkb
 * (plus b_info.video_memkb, as libxl adds it), b_info.max_memkb and
 * b_info.avail_vcpus replaced from live; malloc'd, NUL-terminated, into
 * *ret_json. -EINVAL (reason in why) when json is not a libxl domain
 * configuration object. */
int ckpt_xen_config_refresh(const char *json, size_t len,
                            const struct ckpt_xen_live *live, char **ret_json,
                            size_t *ret_len, char *why, size_t whysz);

/* The userdata directory (tests point it elsewhere); default
 * /var/lib/xen. Borrowed, must outlive d. */
void ckpt_xen_dom_set_userdata_dir(struct ckpt_xen_dom *d, const char *dir);

int ckpt_xen_dom_pause(struct ckpt_xen_dom *d, uint32_t domid);
int ckpt_xen_dom_unpause(struct ckpt_xen_dom *d, uint32_t domid);
/*
 * Resume a domain that suspended itself. fast: the guest sees its suspend
 * hypercall return 1 ("cancelled") and runs on in place (checkpoints,
 * save --continue); otherwise it is the full resume a restore needs.
 * Tells xenstored too (xs_resume_domain), as libxl does. An HVM
 * domain's device model gets `cont` first (a blocking QMP exchange on its
 * own connection, ckpt_xen_dm_call).
 */
int ckpt_xen_dom_resume(struct ckpt_xen_dom *d, uint32_t domid, bool fast);
/* The same without an HVM domain's device model, for a caller that sent
 * its `cont` itself (a Remus checkpoint, on its own QMP connection). */
int ckpt_xen_dom_resume_vcpus(struct ckpt_xen_dom *d, uint32_t domid,
                              bool fast);
/* Log-dirty tracking of the domain's memory on or off (a COLO secondary
 * reports the pages it dirtied between checkpoints). Turning it on when it
 * is on already turns it off and on again, as libxl does. */
int ckpt_xen_dom_logdirty(struct ckpt_xen_dom *d, uint32_t domid, bool on);
/*
 * A COLO secondary's full resume into the same domain, the way libxl's
 * soft reset makes a domain new for its guest: the guest (suspended, the
 * primary's state just loaded) re-registers its vcpu_info and event
 * channels on resume, which Xen refuses in a domain where they exist
 * (Linux then panics: "register_vcpu_info failed"). So: pause, soft reset
 * (event channels closed, vcpu_info unmapped; Xen un-shuts the domain),
 * the store and console event channels allocated again (the same ports:
 * the first ones of the reset domain; nd updated if not), xenstored
 * re-introduced (it rebinds), the console port written again (xenconsoled
 * rebinds), unpause. The guest then sees its suspend return 0.
 */
int ckpt_xen_dom_reset_resume(struct ckpt_xen_dom *d, uint32_t domid,
                              struct ckpt_xen_newdom *nd, uint64_t store_gfn);
/* Destroy the domain and remove what colo or libxl wrote for it
 * (xenstore /local/domain/N, /vm/UUID, /libxl/N; the userdata file).
 * An HVM domain's device model is killed (its pid from xenstore, checked
 * against its command line) and its xenstore directory and QMP sockets
 * removed. */
int ckpt_xen_dom_destroy(struct ckpt_xen_dom *d, uint32_t domid);

/* Rename a domain (xenstore name nodes, as libxl__domain_rename).
 * -EEXIST if another domain has that name. */
int ckpt_xen_dom_rename(struct ckpt_xen_dom *d, uint32_t domid,
                        const char *name);

typedef void ckpt_xen_suspend_done(struct ckpt_xen_dom *d, int rc,
                                   void *opaque);
int ckpt_xen_dom_suspend_start(struct ckpt_xen_dom *d, struct event_base *base,
                               uint32_t domid, int timeout_ms,
                               ckpt_xen_suspend_done *done, void *opaque);
void ckpt_xen_dom_suspend_cancel(struct ckpt_xen_dom *d);

/* ---- the receiving side ------------------------------------------------ */

/* What creating an empty domain for a restore needs; parsed from libxl's
 * JSON domain configuration (c_info / b_info). */
#define CKPT_XEN_AFFINITY_VCPUS 16

struct ckpt_xen_newdom {
    enum ckpt_xen_domtype type;
    char name[128];
    uint8_t uuid[16];
    bool have_uuid;
    unsigned int max_vcpus;
    uint64_t avail_vcpus_mask; /* bit i: vcpu i online (first 64) */
    uint64_t max_memkb, target_memkb;
    uint64_t shadow_memkb; /* 0: libxl's formula */
    bool hap; /* c_info.hap (xl's hap=): HVM/PVH paging, else shadow */
    unsigned int event_channels;
    int max_grant_frames, max_maptrack_frames; /* -1: Xen's default */
    int max_grant_version;                     /* -1: what the host has */
    int tsc_mode; /* 0 default, 1 always_emulate, 2 native */
    /* b_info.vcpu_hard_affinity: CPUs (bit n = CPU n, first 64) vcpu i
     * may run on; 0 = any. */
    uint64_t hard_affinity[CKPT_XEN_AFFINITY_VCPUS];
    /* HVM: b_info's "type.hvm" (device model and platform). */
    struct {
        uint64_t video_memkb;
        char vga[16];    /* "none", "std", "cirrus" */
        char serial[32]; /* "" (none) or a QEMU -serial value ("pty") */
        char boot[16];   /* boot order, "cda" */
        bool acpi, hpet, vpt_align;
        int timer_mode; /* HVM_PARAM_TIMER_MODE */
        bool xen_platform_pci;
        /* Direct kernel boot (b_info.kernel/ramdisk/cmdline): libxl hands
         * them to the device model on every start, restores included. */
        char kernel[256], ramdisk[256], cmdline[1024];
    } hvm;
    /* Filled by create: */
    uint32_t store_evtchn, console_evtchn;
    uint32_t store_domid, console_domid;
};

/* Parse libxl's domain configuration JSON (what xl save puts in its
 * header; `xl list -l` prints it). -EINVAL with the reason in why. */
int ckpt_xen_newdom_from_json(const char *json, size_t len,
                              struct ckpt_xen_newdom *ret, char *why,
                              size_t whysz);

/*
 * Create a paused, empty domain for a restore (libxl__domain_make +
 * libxl__build_pre): createdomain, max memory, TSC mode, paging pool,
 * the xenstore skeleton and the store/console event channels. On error
 * nothing is left behind (the half-made domain is destroyed).
 */
int ckpt_xen_dom_create(struct ckpt_xen_dom *d, struct ckpt_xen_newdom *nd,
                        uint32_t *ret_domid);
/*
 * COLO's copy, before xc_domain_restore: libxenguest sizes the bitmap of
 * the pages the running copy dirtied (the list the primary sends again at
 * each checkpoint) from XENMEM_maximum_gpfn when the restore starts. A
 * fresh domain has nothing mapped, so only pfn 0 would ever be reported
 * and the copy's own writes elsewhere would outlive every checkpoint. One
 * page at a pfn past any the guest uses (4 GiB + its memory) raises that
 * mark; *ret_pfn is it. ckpt_xen_dom_dirty_span_drop frees the page (the
 * mark stays).
 */
int ckpt_xen_dom_dirty_span(struct ckpt_xen_dom *d, uint32_t domid,
                            const struct ckpt_xen_newdom *nd,
                            uint64_t *ret_pfn);
int ckpt_xen_dom_dirty_span_drop(struct ckpt_xen_dom *d, uint32_t domid,
                                 uint64_t pfn);
/*
 * After a successful xc_domain_restore (libxl__build_post + the console):
 * the xenstore nodes (memory, store, console, cpus), introduce the domain
 * to xenstored, record the configuration JSON (if not NULL) where libxl
 * keeps it, so xl sees a domain like its own. The domain stays paused.
 */
int ckpt_xen_dom_finish(struct ckpt_xen_dom *d, uint32_t domid,
                        const struct ckpt_xen_newdom *nd, uint64_t store_gfn,
                        uint64_t console_gfn, const char *json);

/* ---- an HVM domain's device model: libxl's xenstore bookkeeping -------- */

/* The device model's xenstore keys a stream carries
 * (EMULATOR_XENSTORE_DATA, libxl__save_emulator_xenstore_data): the
 * physmap entries under /local/domain/0/device-model/<domid>, as
 * "key\0value\0" pairs with keys relative to that directory. *ret is
 * malloc'd; NULL with *len 0 when there are none. */
int ckpt_xen_dom_dm_xs_save(struct ckpt_xen_dom *d, uint32_t domid, char **ret,
                            size_t *ret_len);
/* Make /local/domain/0/device-model/<domid> (QEMU reports its state
 * there) and write such pairs below it. -COLO_ESTREAM_CORRUPT for a
 * malformed blob or a key outside physmap/. */
int ckpt_xen_dom_dm_xs_restore(struct ckpt_xen_dom *d, uint32_t domid,
                               const char *data, size_t len);
/* Record the device model's pid where libxl keeps it
 * (/local/domain/<domid>/image/device-model-pid): xl destroy and
 * ckpt_xen_dom_destroy() kill it with the domain. */
int ckpt_xen_dom_dm_record(struct ckpt_xen_dom *d, uint32_t domid, int pid);

#endif
