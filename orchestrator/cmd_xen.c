/*
 * Xen commands.
 *
 *   colo __xen-helper save|restore ...   (hidden) the libxenguest helper
 *       process; argv as in checkpoint/xen_helper.h. Started by colo
 *       itself, never by hand.
 *   colo save DOMID|NAME FILE [--continue] [--live]
 *       write an xl-format save file (xl header with the domain's libxl
 *       configuration, then the libxl v2 stream with libxc's inside) that
 *       `xl restore` can restore. The file appears only when complete.
 *   colo restore FILE [--paused] [--name NAME]
 *       restore an xl-format save file (colo's or xl's): PV and PVH.
 *
 * Without a hypervisor both fail with "no Xen hypervisor" and exit 1
 * before touching FILE.
 */
#include "orch.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/xen_dom.h"
#include "checkpoint/xen_helper.h"
#include "checkpoint/xen_job.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "transport/xen_stream.h"

int orch_cmd_xen_helper(int argc, char **argv);
#include "cmd_vm.h"

int orch_cmd_xen_helper(int argc, char **argv)
{
    int st = ckpt_xen_helper_main(argc - 1, argv + 1, ckpt_xen_real_ops());

    if (st == 2)
        return orch_usage_error("__xen-helper",
                                "internal command, started by colo itself");
    return st;
}

bool orch_xen_domain_exists(const char *what)
{
    struct ckpt_xen_dom *d;
    char why[256];
    uint32_t domid;
    bool found;

    if (ckpt_xen_dom_open(&d, why, sizeof(why)) < 0)
        return false;
    found = ckpt_xen_dom_find(d, what, &domid) == 0;
    ckpt_xen_dom_close(d);
    return found;
}

struct xrun {
    struct event_base *base;
    int rc;
    char why[768];
    bool done;
    bool tty;
    uint64_t last_pct;
};

static void job_done(struct ckpt_xen_job *j, int rc, const char *why,
                     void *opaque)
{
    struct xrun *r = opaque;

    (void)j;
    r->rc = rc;
    snprintf(r->why, sizeof(r->why), "%s", why);
    r->done = true;
    event_base_loopbreak(r->base);
}

static void job_progress(struct ckpt_xen_job *j, uint64_t done, uint64_t total,
                         const char *what, void *opaque)
{
    struct xrun *r = opaque;
    uint64_t pct = total ? done * 100 / total : 0;

    (void)j;
    if (r->tty && pct != r->last_pct) {
        fprintf(stderr, "\r%s: %3" PRIu64 "%%", what, pct);
        r->last_pct = pct;
    }
}

static int run_loop(struct xrun *r)
{
    while (!r->done)
        if (event_base_dispatch(r->base) < 0)
            return -EIO;
    if (r->tty && r->last_pct != (uint64_t)-1)
        fputc('\n', stderr);
    return 0;
}

static int open_dom(const char *cmd, struct ckpt_xen_dom **d)
{
    char why[512] = "";

    if (ckpt_xen_dom_open(d, why, sizeof(why)) < 0) {
        fprintf(stderr, "colo: %s: %s\n", cmd, why);
        return ORCH_EXIT_FAIL;
    }
    return 0;
}

static int exit_for(int rc)
{
    switch (rc) {
    case -COLO_ESTREAM_TRUNCATED:
    case -COLO_ESTREAM_CORRUPT:
    case -COLO_ESTREAM_TOO_BIG:
    case -COLO_ESTREAM_UNSUPPORTED:
        return ORCH_EXIT_STREAM;
    default:
        return ORCH_EXIT_FAIL;
    }
}

/* ---- save -------------------------------------------------------------- */

int orch_cmd_xen_save(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"continue", no_argument, NULL, 'c'},
        {"live", no_argument, NULL, 'l'},
        {NULL, 0, NULL, 0},
    };
    struct xrun r = {.tty = isatty(2), .last_pct = (uint64_t)-1};
    struct ckpt_xen_job_common jc = {
        .done = job_done, .progress = job_progress, .opaque = &r};
    struct ckpt_xen_save_params sp = {0};
    struct ckpt_xen_dom *d = NULL;
    struct ckpt_xen_job *j = NULL;
    struct ckpt_xen_dominfo di;
    struct colo_buf hdr;
    char tmp[PATH_MAX], *json = NULL;
    size_t json_len = 0;
    const char *file;
    int c, rc, st = ORCH_EXIT_FAIL, fd = -1;

    colo_buf_init(&hdr, 0);
    tmp[0] = '\0';
    opterr = 0;
    while ((c = getopt_long(argc, argv, "hcl", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("Usage: colo save DOMID|NAME FILE [--continue] "
                   "[--live]\n"
                   "Save a Xen domain to FILE, an xl save file ('xl "
                   "restore' and 'colo restore'\nread it), with its libxl "
                   "configuration. The domain is destroyed afterwards\n"
                   "unless --continue (it runs on in place). On failure the "
                   "domain runs on\nand FILE is not created.\n"
                   "      --continue  resume the domain in place afterwards "
                   "(implies --live)\n"
                   "      --live      copy memory while the domain runs, "
                   "then suspend it for\n"
                   "                  the rest (shorter pause; default: "
                   "suspend first, as xl save)\n");
            return ORCH_EXIT_OK;
        case 'c':
            sp.keep_running = true;
            sp.live = true;
            break;
        case 'l':
            sp.live = true;
            break;
        default:
            return orch_usage_error("save", "unknown option '%s'",
                                    argv[optind - 1]);
        }
    }
    if (optind != argc - 2)
        return orch_usage_error("save", "usage: colo save DOMID|NAME FILE");
    file = argv[optind + 1];
    if (open_dom("save", &d))
        return ORCH_EXIT_FAIL;
    rc = ckpt_xen_dom_find(d, argv[optind], &sp.domid);
    if (rc < 0) {
        fprintf(stderr, "colo: save: %s\n", ckpt_xen_dom_error(d));
        goto out;
    }
    rc = ckpt_xen_dom_info(d, sp.domid, &di);
    if (rc < 0) {
        fprintf(stderr, "colo: save: %s\n", ckpt_xen_dom_error(d));
        goto out;
    }
    rc = ckpt_xen_dom_config(d, sp.domid, &json, &json_len);
    if (rc < 0)
        colo_warn("%s; the file will carry no configuration ('xl restore' "
                  "then needs one)",
                  ckpt_xen_dom_error(d));
    rc = xprt_xl_hdr_write(&hdr, json, json_len);
    if (rc < 0) {
        fprintf(stderr, "colo: save: xl header: %s\n", colo_strerror(rc));
        goto out;
    }
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.colo-XXXXXX", file) >=
        sizeof(tmp)) {
        tmp[0] = '\0';
        fprintf(stderr, "colo: save: %s: path too long\n", file);
        goto out;
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd >= 0 && fchmod(fd, 0644) < 0)
        colo_warn("%s: chmod: %s", tmp, strerror(errno));
    if (fd < 0) {
        fprintf(stderr, "colo: save: %s: %s\n", tmp, strerror(errno));
        tmp[0] = '\0';
        goto out;
    }
    rc = colo_write_all(fd, hdr.data, hdr.len);
    if (rc < 0) {
        fprintf(stderr, "colo: save: %s: %s\n", tmp, colo_strerror(rc));
        goto out;
    }
    r.base = event_base_new();
    if (!r.base)
        goto out;
    sp.fd = fd;
    rc = ckpt_xen_save_start(&j, r.base, d, &sp, &jc);
    if (rc < 0) {
        fprintf(stderr, "colo: save: domain %" PRIu32 ": %s\n", sp.domid,
                colo_strerror(rc));
        goto out;
    }
    colo_info("saving domain %" PRIu32 " (%s) to %s", sp.domid, di.name, file);
    if (run_loop(&r) < 0 || r.rc < 0) {
        fprintf(stderr, "colo: save: domain %" PRIu32 ": %s\n", sp.domid,
                r.why[0] ? r.why : colo_strerror(r.rc));
        st = exit_for(r.rc);
        goto out;
    }
    if (fsync(fd) < 0 || rename(tmp, file) < 0) {
        fprintf(stderr, "colo: save: %s: %s\n", file, strerror(errno));
        goto out;
    }
    tmp[0] = '\0';
    printf("domain %" PRIu32 " (%s) saved to %s in %" PRIu64
           " ms of downtime; %s\n",
           sp.domid, di.name, file, ckpt_xen_job_downtime_ms(j),
           sp.keep_running ? "it runs on" : "it is destroyed");
    st = ORCH_EXIT_OK;
out:
    ckpt_xen_job_free(j);
    if (r.base)
        event_base_free(r.base);
    if (tmp[0])
        unlink(tmp);
    colo_close(&fd);
    colo_buf_dispose(&hdr);
    free(json);
    ckpt_xen_dom_close(d);
    return st;
}

/* ---- restore ----------------------------------------------------------- */

/* Read the xl header from fd; the config JSON (or NULL) into *json. */
static int read_xl_header(int fd, char **json, char *why, size_t whysz)
{
    uint8_t fixed[XPRT_XL_FIXED_SIZE];
    struct xprt_xl_hdr h;
    uint8_t *all = NULL;
    uint32_t opt;
    ssize_t n;
    int rc;

    *json = NULL;
    rc = colo_read_all(fd, fixed, sizeof(fixed));
    if (rc < 0) {
        snprintf(why, whysz, "not an xl save file (%s)", colo_strerror(rc));
        return rc == -COLO_EPEER_CLOSED ? -COLO_ESTREAM_TRUNCATED : rc;
    }
    /* The fixed part says how much optional data follows (the parser
     * reads it in either byte order and checks it against the cap). */
    n = xprt_xl_hdr_parse(fixed, sizeof(fixed), 0, &h);
    if (n == -COLO_ESTREAM_TOO_BIG) {
        snprintf(why, whysz,
                 "xl header: %" PRIu32 " bytes of optional data "
                 "is over the cap",
                 h.optional_data_len);
        return (int)n;
    }
    if (n < 0) {
        snprintf(why, whysz, "not an xl save file: %s", colo_strerror((int)n));
        return (int)n;
    }
    opt = h.optional_data_len;
    all = malloc(sizeof(fixed) + opt + 1);
    if (!all)
        return -ENOMEM;
    memcpy(all, fixed, sizeof(fixed));
    rc = colo_read_all(fd, all + sizeof(fixed), opt);
    if (rc < 0) {
        snprintf(why, whysz, "xl header: %s", colo_strerror(rc));
        free(all);
        return rc == -COLO_EPEER_CLOSED ? -COLO_ESTREAM_TRUNCATED : rc;
    }
    n = xprt_xl_hdr_parse(all, sizeof(fixed) + opt, 0, &h);
    if (n <= 0) {
        snprintf(why, whysz, "not an xl save file: %s",
                 colo_strerror(n < 0 ? (int)n : -COLO_ESTREAM_TRUNCATED));
        free(all);
        return n < 0 ? (int)n : -COLO_ESTREAM_TRUNCATED;
    }
    if (h.config) {
        *json = strndup(h.config, h.config_len);
        if (!*json) {
            free(all);
            return -ENOMEM;
        }
    }
    free(all);
    return 0;
}

/* Rename the domain in its JSON configuration too. */
static char *json_with_name(const char *json, const char *name)
{
    json_t *root = json_loads(json, 0, NULL);
    json_t *ci = json_object_get(root, "c_info");
    char *out = NULL;

    if (json_is_object(ci) &&
        json_object_set_new(ci, "name", json_string(name)) == 0)
        out = json_dumps(root, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return out;
}

int orch_cmd_xen_restore(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"paused", no_argument, NULL, 'p'},
        {"name", required_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    struct xrun r = {.tty = isatty(2), .last_pct = (uint64_t)-1};
    struct ckpt_xen_job_common jc = {
        .done = job_done, .progress = job_progress, .opaque = &r};
    struct ckpt_xen_restore_params rp = {.fd = -1};
    struct ckpt_xen_dom *d = NULL;
    struct ckpt_xen_job *j = NULL;
    const char *name = NULL;
    char why[512] = "", *json = NULL;
    int c, rc, st = ORCH_EXIT_FAIL, fd = -1;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "hpn:", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("Usage: colo restore FILE [--paused] [--name NAME]\n"
                   "Restore a Xen domain from an xl save file ('colo save "
                   "DOMID' or 'xl save'\nwrote it). PV and PVH domains. On "
                   "failure nothing is left behind.\n"
                   "      --paused      leave the domain paused\n"
                   "      --name NAME   give it another name\n");
            return ORCH_EXIT_OK;
        case 'p':
            rp.paused = true;
            break;
        case 'n':
            name = optarg;
            break;
        default:
            return orch_usage_error("restore", "unknown option '%s'",
                                    argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return orch_usage_error("restore", "usage: colo restore FILE");
    fd = open(argv[optind], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "colo: restore: %s: %s\n", argv[optind],
                strerror(errno));
        return ORCH_EXIT_FAIL;
    }
    if (open_dom("restore", &d)) {
        colo_close(&fd);
        return ORCH_EXIT_FAIL;
    }
    rc = read_xl_header(fd, &json, why, sizeof(why));
    if (rc < 0) {
        fprintf(stderr, "colo: restore: %s: %s\n", argv[optind], why);
        st = exit_for(rc);
        goto out;
    }
    if (!json) {
        fprintf(stderr,
                "colo: restore: %s carries no domain configuration; "
                "colo needs it to create the domain\n",
                argv[optind]);
        st = ORCH_EXIT_CONFIG;
        goto out;
    }
    if (name) {
        char *renamed = json_with_name(json, name);

        if (!renamed) {
            fprintf(stderr, "colo: restore: cannot rename the domain in "
                            "its configuration\n");
            st = ORCH_EXIT_CONFIG;
            goto out;
        }
        free(json);
        json = renamed;
    }
    rc = ckpt_xen_newdom_from_json(json, strlen(json), &rp.newdom, why,
                                   sizeof(why));
    if (rc < 0) {
        fprintf(stderr, "colo: restore: %s: %s\n", argv[optind], why);
        st = ORCH_EXIT_CONFIG;
        goto out;
    }
    r.base = event_base_new();
    if (!r.base)
        goto out;
    rp.fd = fd;
    rp.config_json = json;
    rc = ckpt_xen_restore_start(&j, r.base, d, &rp, &jc);
    if (rc < 0) {
        fprintf(stderr, "colo: restore: %s: %s\n", argv[optind],
                rc == -COLO_EXEN || rc == -ENOTSUP || rc == -EEXIST
                    ? ckpt_xen_dom_error(d)
                    : colo_strerror(rc));
        st = exit_for(rc);
        goto out;
    }
    if (run_loop(&r) < 0 || r.rc < 0) {
        fprintf(stderr, "colo: restore: %s: %s\n", argv[optind],
                r.why[0] ? r.why : colo_strerror(r.rc));
        st = exit_for(r.rc);
        goto out;
    }
    printf("domain %" PRIu32 " (%s) restored from %s%s\n",
           ckpt_xen_job_domid(j), rp.newdom.name, argv[optind],
           rp.paused ? ", paused" : "");
    st = ORCH_EXIT_OK;
out:
    ckpt_xen_job_free(j);
    if (r.base)
        event_base_free(r.base);
    free(json);
    colo_close(&fd);
    ckpt_xen_dom_close(d);
    return st;
}
