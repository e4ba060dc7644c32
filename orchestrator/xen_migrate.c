/*
 * Xen domain migration between two colo hosts.
 *
 *   source:  colo migrate DOMID|NAME HOST[:PORT]   (this process does it)
 *   target:  colo receive [--listen H:P]           (host.c hands the link
 *                                                   over on a Xen HELLO)
 *
 * The exchange (docs/xen.md has it with the record layouts):
 *   S -> T  link handshake (TLS unless --insecure), HELLO (flag XEN,
 *           name, RAM), VM_CONFIG (libxl's JSON configuration)
 *   T       checks the configuration and its Xen interface
 *   T -> S  ACK(0)                 "ready": the target stops its link
 *   S       stops its link; from here both sides use the raw socket
 *   S -> T  libxl v2 stream with libxc's inside (live precopy, then the
 *           domain is suspended and the rest sent); END
 *   T       restores the domain PAUSED (as NAME--incoming if a domain of
 *           that name runs on the target, i.e. a local migration)
 *   T -> S  ACK(domid)             "restored, paused"
 *   S       destroys the source domain
 *   S -> T  ACK(1)                 "go"
 *   T       renames, unpauses: the domain runs on the target
 *   T -> S  ACK(domid)             "running"
 * A failure before the target's "restored" makes the source resume its
 * domain in place (nothing lost). After it, exactly one copy may run: if
 * "go" never arrives the target keeps its copy paused and says so, since it
 * cannot know whether the source destroyed its own (no split brain).
 */
#include "orch.h"

#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "checkpoint/secondary.h"
#include "checkpoint/xen_dom.h"
#include "checkpoint/xen_helper.h"
#include "checkpoint/xen_job.h"
#include "cmd_vm.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "host.h"
#include "netutil.h"
#include "transport/colo_rec.h"
#include "transport/link.h"
#include "transport/record.h"
#include "xen_migrate.h"

#define READY_TIMEOUT_MS   60000
#define RESTORE_TIMEOUT_MS 600000 /* target restoring after the stream */
#define GO_TIMEOUT_MS      60000
#define SOCK_TIMEOUT_S     120 /* a silent peer during the raw phase */
#define ACK_GO             1u

/* ---- raw records on the detached, blocking socket ---------------------- */

/* "ready" through the link, before both sides stop it. */
static int send_ack_link(struct xprt_link *l)
{
    uint8_t b[8];

    colo_put_le64(b, 0);
    return xprt_link_send(l, XPRT_COLO_ACK, b, sizeof(b));
}

static void sock_timeouts(int fd)
{
    (void)colo_fd_set_timeouts(fd, SOCK_TIMEOUT_S * 1000u,
                               SOCK_TIMEOUT_S * 1000u);
}

/* ==================== SOURCE ==================== */

struct xsrc {
    struct event_base *base;
    struct xprt_link *link;
    int fd; /* the link's, after detach */
    int rc;
    bool done;
    char why[768];
    const char *name;
    const char *json;
    uint64_t ram;
    uint32_t flags; /* HELLO flags */
    bool ready;     /* the target's ACK(0) came through the link */
    char refused[600];
};

static void src_stop(struct xsrc *m, int rc, const char *why)
{
    if (m->done)
        return;
    m->rc = rc;
    if (why)
        snprintf(m->why, sizeof(m->why), "%s", why);
    m->done = true;
    event_base_loopbreak(m->base);
}

/* The target's answer before the raw phase: ACK(0) "ready" or an ERROR
 * saying why it refuses. */
static void src_answer(struct xsrc *m, uint32_t type, const uint8_t *body,
                       uint32_t len)
{
    int32_t code;
    char text[400] = "";

    if (type == XPRT_COLO_ACK) {
        m->ready = true;
    } else if (type == XPRT_COLO_ERROR) {
        xprt_error_decode(body, len, &code, text, sizeof(text));
        snprintf(m->refused, sizeof(m->refused), "the target says: %s", text);
    }
}

static void src_detached(struct xprt_link *l, int rc, int fd,
                         struct colo_buf *leftover, void *arg)
{
    struct xsrc *m = arg;

    (void)l;
    if (rc < 0) {
        src_stop(m, rc, "the link failed while it was being handed over");
        return;
    }
    /* Bytes read but not delivered: the target's ready (or refusal) may
     * be among them, after heartbeats. */
    for (size_t off = 0; off + 8 <= leftover->len;) {
        uint32_t type = colo_get_le32(leftover->data + off);
        uint32_t len = colo_get_le32(leftover->data + off + 4);
        size_t padded = ((size_t)len + 7) & ~(size_t)7;

        if (off + 8 + padded > leftover->len)
            break;
        src_answer(m, type, leftover->data + off + 8, len);
        off += 8 + padded;
    }
    colo_buf_reset(leftover);
    m->fd = fd;
    src_stop(m, 0, NULL);
}

/* The protection parameters the standby needs ride in the configuration
 * JSON the source sends, under a key libxl does not have; the standby
 * takes them out again before it uses or records the configuration. Its
 * failover deadline then covers the primary's interval (a silent primary
 * is one that missed more than its interval). */
#define PROTECT_KEY "colo_protect"

static char *json_with_protect(const char *json, unsigned interval_ms)
{
    json_t *root = json_loads(json, 0, NULL);
    char *out = NULL;

    if (root && json_object_set_new(root, PROTECT_KEY,
                                    json_pack("{s:I}", "interval_ms",
                                              (json_int_t)interval_ms)) == 0)
        out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return out;
}

/* The configuration without the protection parameters (malloc'd), and the
 * primary's interval (0 when it sent none: an older colo). */
static char *json_take_protect(const char *json, unsigned *interval_ms)
{
    json_t *root = json_loads(json, 0, NULL);
    json_t *p = root ? json_object_get(root, PROTECT_KEY) : NULL;
    json_t *iv = p ? json_object_get(p, "interval_ms") : NULL;
    char *out;

    *interval_ms = 0;
    if (!p) {
        json_decref(root);
        return strdup(json);
    }
    if (json_is_integer(iv) && json_integer_value(iv) > 0 &&
        json_integer_value(iv) <= 100000000)
        *interval_ms = (unsigned)json_integer_value(iv);
    json_object_del(root, PROTECT_KEY);
    out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return out;
}

/* The standby's failover deadline for a primary checkpointing every
 * interval_ms (at most 1e8, json_take_protect): twice the interval and
 * 5 s more; 5 s (the default) when it is unknown (0). */
static unsigned failover_ms_for(unsigned interval_ms)
{
    return 2 * interval_ms + 5000;
}

static void src_up(struct xprt_link *l, void *arg)
{
    struct xsrc *m = arg;
    struct xprt_colo_hello h = {.version = XPRT_COLO_VERSION,
                                .role = XPRT_ROLE_PRIMARY,
                                .page_size = 4096,
                                .flags = m->flags,
                                .ram_size = m->ram};
    struct colo_buf b;
    int rc;

    snprintf(h.vm_name, sizeof(h.vm_name), "%s", m->name);
    colo_buf_init(&b, 0);
    rc = xprt_colo_hello_write(&b, &h);
    if (rc >= 0)
        rc = xprt_link_send_raw(l, b.data, b.len);
    colo_buf_reset(&b);
    if (rc >= 0)
        rc = xprt_colo_config_write(&b, m->json, strlen(m->json));
    if (rc >= 0)
        rc = xprt_link_send_raw(l, b.data, b.len);
    colo_buf_dispose(&b);
    /* Nothing more goes through the link: hand the socket over once the
     * two records are out (no heartbeats after that). */
    if (rc >= 0)
        rc = xprt_link_detach_start(l, src_detached, m);
    if (rc < 0)
        src_stop(m, rc, "sending HELLO and the configuration failed");
}

static void src_record(struct xprt_link *l, const struct xprt_item *it,
                       void *arg)
{
    struct xsrc *m = arg;

    (void)l;
    /* The target's answer can overtake our detach. */
    src_answer(m, it->type, it->body, it->length);
}

static void src_error(struct xprt_link *l, int rc, void *arg)
{
    struct xsrc *m = arg;
    char why[600];

    snprintf(why, sizeof(why), "link: %s", xprt_link_why(l));
    src_stop(m, rc, why);
}

static const struct xprt_link_cbs src_cbs = {
    .up = src_up,
    .record = src_record,
    .error = src_error,
};

struct xsave {
    struct event_base *base;
    int rc;
    bool done;
    char why[768];
};

static void save_done(struct ckpt_xen_job *j, int rc, const char *why,
                      void *opaque)
{
    struct xsave *s = opaque;

    (void)j;
    s->rc = rc;
    snprintf(s->why, sizeof(s->why), "%s", why);
    s->done = true;
    event_base_loopbreak(s->base);
}

static int read_key_opt(const char *key_file, bool insecure, uint8_t **key,
                        size_t *len, char *why, size_t whysz)
{
    *key = NULL;
    *len = 0;
    if (!key_file) {
        if (insecure)
            return 0;
        fprintf(stderr, "colo: migrate: no --key-file given: links are "
                        "authenticated by default (use --insecure to run "
                        "without authentication)\n");
        return -COLO_ECONFIG;
    }
    return xprt_key_read_file(key_file, key, len, why, whysz);
}

/* colo protect: SIGINT/SIGTERM end protection cleanly (the next
 * checkpoint is the last one). */
static void src_signal(evutil_socket_t sig, short what, void *arg)
{
    struct ckpt_xen_job *j = *(struct ckpt_xen_job **)arg;

    (void)sig;
    (void)what;
    colo_info("ending protection after the next checkpoint");
    ckpt_xen_job_stop(j);
}

static void src_checkpoint(struct ckpt_xen_job *j, uint64_t n,
                           uint64_t pause_us, void *opaque)
{
    (void)j;
    (void)opaque;
    if (n == 1)
        printf("checkpoint 1 acked: the domain is protected\n");
    else if (n % 10 == 0)
        printf("checkpoint %" PRIu64 " acked (pause %.1f ms)\n", n,
               (double)pause_us / 1000.0);
    fflush(stdout);
}

static int xen_source(int argc, char **argv, bool protect)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"key-file", required_argument, NULL, 'k'},
        {"insecure", no_argument, NULL, 'I'},
        {"tls-creds", required_argument, NULL, 'C'},
        {"mode", required_argument, NULL, 'm'},
        {"interval", required_argument, NULL, 'i'},
        {"count", required_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = protect ? "protect" : "migrate";
    struct xsrc m = {.fd = -1};
    struct xsave sv = {0};
    struct ckpt_xen_job_common jc = {
        .done = save_done, .checkpoint = src_checkpoint, .opaque = &sv};
    struct ckpt_xen_save_params sp = {.live = true, .leave_suspended = true};
    struct ckpt_xen_dom *d = NULL;
    struct ckpt_xen_job *j = NULL;
    struct ckpt_xen_dominfo di;
    struct xprt_link_cfg cfg;
    struct event *sig_int = NULL, *sig_term = NULL;
    const char *key_file = NULL, *tls_creds = NULL;
    bool insecure = false, suspended = false;
    char *host = NULL, *json = NULL, why[512] = "", *end;
    uint8_t *key = NULL;
    size_t key_len = 0, json_len;
    unsigned long num;
    uint16_t port;
    uint64_t v, t0;
    int c, rc, st = ORCH_EXIT_FAIL;

    if (protect) {
        sp.stream = CKPT_XEN_STREAM_REMUS;
        sp.leave_suspended = false;
    }
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            if (protect)
                printf("Usage: colo protect DOMID|NAME HOST[:PORT] [--mode "
                       "remus|colo] [--interval MS]\n"
                       "                    [--count N] [--key-file FILE | "
                       "--insecure]\n"
                       "Protect a running Xen domain with checkpoints "
                       "to HOST (running\n'colo standby'). Runs in the "
                       "foreground; Ctrl-C (SIGINT/SIGTERM) ends\n"
                       "protection after the next checkpoint and the domain "
                       "runs on here.\nIf the standby is lost, the domain "
                       "runs on unprotected.\n"
                       "      --mode remus      the standby's copy stays "
                       "paused (default)\n"
                       "      --mode colo       the standby's copy runs "
                       "between checkpoints\n"
                       "      --interval MS     between checkpoints "
                       "(default 200)\n"
                       "      --count N         stop after N checkpoints\n");
            else
                printf("Usage: colo migrate DOMID|NAME HOST[:PORT] "
                       "[--key-file FILE | --insecure]\n"
                       "Move a running Xen domain to HOST (running 'colo "
                       "receive'): live precopy,\nthen a short suspend. The "
                       "source is destroyed only once the target has\nthe "
                       "domain; on any failure before that it runs on "
                       "here.\n");
            printf(
                "      --key-file FILE   shared key (mode 0600): TLS 1.3 with "
                "a key derived from it\n"
                "      --tls-creds DIR   TLS with x509 certificates "
                "instead (QEMU's layout)\n"
                "      --insecure        no TLS, no authentication\n");
            return ORCH_EXIT_OK;
        case 'k':
            key_file = optarg;
            break;
        case 'I':
            insecure = true;
            break;
        case 'C':
            tls_creds = optarg;
            break;
        case 'm':
            if (!protect)
                return orch_usage_error(cmd, "--mode is for protect");
            if (strcmp(optarg, "remus") == 0)
                sp.stream = CKPT_XEN_STREAM_REMUS;
            else if (strcmp(optarg, "colo") == 0)
                sp.stream = CKPT_XEN_STREAM_COLO;
            else
                return orch_usage_error(cmd, "--mode takes remus or colo");
            break;
        case 'i':
        case 'n':
            errno = 0;
            num = strtoul(optarg, &end, 10);
            if (!protect || errno || end == optarg || *end || !num ||
                num > 100000000)
                return orch_usage_error(cmd, "bad number '%s'", optarg);
            if (c == 'i')
                sp.interval_ms = (unsigned)num;
            else
                sp.max_checkpoints = num;
            break;
        default:
            return orch_usage_error(cmd, "unknown option '%s'",
                                    argv[optind - 1]);
        }
    }
    if (optind != argc - 2)
        return orch_usage_error(cmd, "expected DOMID|NAME and HOST[:PORT]");
    if (tls_creds && (key_file || insecure))
        return orch_usage_error(cmd, "--tls-creds excludes --key-file and "
                                     "--insecure");
    if (orch_parse_hostport(argv[optind + 1], ORCH_DEFAULT_PORT, &host, &port) <
        0)
        return orch_usage_error(cmd, "bad HOST[:PORT] '%s'", argv[optind + 1]);
    rc = read_key_opt(key_file, insecure || tls_creds, &key, &key_len, why,
                      sizeof(why));
    if (rc >= 0 && tls_creds) {
        xprt_link_cfg_init(&cfg);
        cfg.tls_creds = tls_creds;
        rc = xprt_link_cfg_check(&cfg, why, sizeof(why));
        if (rc < 0)
            fprintf(stderr, "colo: %s: %s\n", cmd, why);
    } else if (rc < 0 && key_file) {
        fprintf(stderr, "colo: %s: key file %s\n", cmd, why);
    }
    if (rc < 0) {
        st = ORCH_EXIT_CONFIG;
        goto out;
    }
    if (ckpt_xen_dom_open(&d, why, sizeof(why)) < 0) {
        fprintf(stderr, "colo: %s: %s\n", cmd, why);
        goto out;
    }
    if (ckpt_xen_dom_find(d, argv[optind], &sp.domid) < 0 ||
        ckpt_xen_dom_info(d, sp.domid, &di) < 0) {
        fprintf(stderr, "colo: %s: %s\n", cmd, ckpt_xen_dom_error(d));
        goto out;
    }
    if (di.type != CKPT_XEN_DOM_PVH && sp.stream == CKPT_XEN_STREAM_COLO) {
        /* PV: the running copy's page tables are pinned, so the next
         * checkpoint cannot be applied over them (libxl refuses COLO for
         * PV too). HVM: the copy's device model would need its state
         * reloaded at every checkpoint, which colo does not do yet. */
        fprintf(stderr,
                "colo: %s: domain %" PRIu32 " is %s: COLO mode protects "
                "PVH domains; use --mode remus\n",
                cmd, sp.domid, di.type == CKPT_XEN_DOM_PV ? "PV" : "HVM");
        goto out;
    }
    if (ckpt_xen_dom_config(d, sp.domid, &json, &json_len) < 0) {
        fprintf(stderr,
                "colo: %s: %s; the target needs it to create the "
                "domain\n",
                cmd, ckpt_xen_dom_error(d));
        st = ORCH_EXIT_CONFIG;
        goto out;
    }
    m.base = event_base_new();
    if (!m.base)
        goto out;
    m.name = di.name;
    if (protect) {
        char *pj =
            json_with_protect(json, sp.interval_ms ? sp.interval_ms : 200);

        if (!pj) {
            fprintf(stderr,
                    "colo: %s: the domain's configuration is not "
                    "valid JSON\n",
                    cmd);
            goto out;
        }
        free(json);
        json = pj;
    }
    m.json = json;
    m.ram = di.max_memkb * 1024;
    m.ram -= m.ram % 4096;
    m.flags = XPRT_HELLO_FLAG_XEN | (protect ? XPRT_HELLO_FLAG_XEN_REMUS : 0) |
              (sp.stream == CKPT_XEN_STREAM_COLO ? XPRT_HELLO_FLAG_COLO : 0);
    xprt_link_cfg_init(&cfg);
    cfg.name = "to-target";
    /* The link only carries the handshake, HELLO and the configuration;
     * the target may be slow to answer while it checks its Xen. */
    cfg.heartbeat_ms = 1000;
    cfg.heartbeat_misses = 30;
    cfg.handshake_timeout_ms = 30000;
    cfg.connect_timeout_ms = 30000;
    cfg.key = key;
    cfg.key_len = key_len;
    cfg.tls_creds = tls_creds;
    cfg.plain = !key && !tls_creds;
    t0 = colo_now_ns();
    rc = xprt_link_connect(m.base, host, port, &cfg, &src_cbs, &m, &m.link);
    if (rc < 0) {
        fprintf(stderr, "colo: %s: connecting to %s:%u: %s\n", cmd, host, port,
                colo_strerror(rc));
        st = ORCH_EXIT_PEER;
        goto out;
    }
    while (!m.done)
        if (event_base_dispatch(m.base) < 0)
            break;
    if (m.rc < 0 || m.fd < 0) {
        fprintf(stderr, "colo: %s: %s:%u: %s\n", cmd, host, port,
                m.why[0] ? m.why : colo_strerror(m.rc));
        st = ORCH_EXIT_PEER;
        goto out;
    }
    sock_timeouts(m.fd);
    if (m.refused[0]) {
        fprintf(stderr, "colo: %s: %s:%u: %s\n", cmd, host, port, m.refused);
        st = ORCH_EXIT_PEER;
        goto out;
    }
    rc = m.ready
             ? 0
             : ckpt_xen_read_ack(m.fd, READY_TIMEOUT_MS, &v, why, sizeof(why));
    if (rc < 0) {
        fprintf(stderr, "colo: %s: %s:%u: %s\n", cmd, host, port, why);
        st = ORCH_EXIT_PEER;
        goto out;
    }
    colo_info("%s domain %" PRIu32 " (%s) to %s:%u%s",
              protect ? "protecting" : "migrating", sp.domid, di.name, host,
              port, sp.stream == CKPT_XEN_STREAM_COLO ? " (COLO)" : "");
    sv.base = m.base;
    sp.fd = m.fd;
    rc = ckpt_xen_save_start(&j, m.base, d, &sp, &jc);
    if (rc < 0) {
        fprintf(stderr, "colo: %s: domain %" PRIu32 ": %s\n", cmd, sp.domid,
                colo_strerror(rc));
        goto out;
    }
    if (protect) {
        sig_int = evsignal_new(m.base, SIGINT, src_signal, &j);
        sig_term = evsignal_new(m.base, SIGTERM, src_signal, &j);
        if (sig_int)
            evsignal_add(sig_int, NULL);
        if (sig_term)
            evsignal_add(sig_term, NULL);
    }
    while (!sv.done)
        if (event_base_dispatch(m.base) < 0)
            break;
    if (sv.rc < 0) {
        /* The job resumed the domain already. */
        fprintf(stderr,
                "colo: %s: domain %" PRIu32 ": %s; it runs on "
                "here\n",
                cmd, sp.domid, sv.why);
        goto out;
    }
    if (protect) {
        uint64_t n = ckpt_xen_job_checkpoints(j);

        if (ckpt_xen_job_target_lost(j)) {
            printf("domain %" PRIu32 " (%s): the standby is lost after %" PRIu64
                   " checkpoints; it runs on here, unprotected\n",
                   sp.domid, di.name, n);
            st = ORCH_EXIT_PEER;
        } else {
            printf("domain %" PRIu32 " (%s): protection ended after %" PRIu64
                   " checkpoints; it runs on here\n",
                   sp.domid, di.name, n);
            st = ORCH_EXIT_OK;
        }
        goto out;
    }
    suspended = true;
    rc = ckpt_xen_read_ack(m.fd, RESTORE_TIMEOUT_MS, &v, why, sizeof(why));
    if (rc < 0) {
        fprintf(stderr,
                "colo: migrate: %s; domain %" PRIu32 " runs on "
                "here\n",
                why, sp.domid);
        st = ORCH_EXIT_PEER;
        goto out;
    }
    /* The target holds a complete, paused copy: ours goes. */
    rc = ckpt_xen_dom_destroy(d, sp.domid);
    if (rc < 0) {
        fprintf(stderr,
                "colo: migrate: destroying the source: %s; the "
                "target's copy stays paused\n",
                ckpt_xen_dom_error(d));
        goto out;
    }
    suspended = false;
    rc = ckpt_xen_send_ack(m.fd, ACK_GO);
    if (rc >= 0)
        rc = ckpt_xen_read_ack(m.fd, GO_TIMEOUT_MS, &v, why, sizeof(why));
    if (rc < 0) {
        fprintf(stderr,
                "colo: migrate: the source is destroyed but the "
                "target did not confirm it runs the domain (%s); "
                "check the target\n",
                why[0] ? why : colo_strerror(rc));
        st = ORCH_EXIT_PEER;
        goto out;
    }
    printf("domain %" PRIu32 " (%s) migrated to %s:%u as domain %" PRIu64
           " in %.1f s, %" PRIu64 " ms of downtime\n",
           sp.domid, di.name, host, port, v, (double)(colo_now_ns() - t0) / 1e9,
           ckpt_xen_job_downtime_ms(j));
    st = ORCH_EXIT_OK;
out:
    if (suspended && ckpt_xen_dom_resume(d, sp.domid, true) < 0)
        fprintf(stderr, "colo: %s: resuming domain %" PRIu32 ": %s\n", cmd,
                sp.domid, ckpt_xen_dom_error(d));
    if (sig_int)
        event_free(sig_int);
    if (sig_term)
        event_free(sig_term);
    ckpt_xen_job_free(j);
    xprt_link_free(m.link);
    if (m.base)
        event_base_free(m.base);
    ckpt_xen_dom_close(d);
    if (key) {
        explicit_bzero(key, key_len);
        free(key);
    }
    free(json);
    free(host);
    return st;
}

int orch_cmd_xen_migrate(int argc, char **argv)
{
    return xen_source(argc, argv, false);
}

int orch_cmd_xen_protect(int argc, char **argv)
{
    return xen_source(argc, argv, true);
}

/* ==================== TARGET ==================== */

struct orch_xen_recv {
    struct event_base *base;
    struct xprt_link *link;
    struct ckpt_xen_dom *d;
    struct ckpt_xen_job *job;
    struct event *ev_done;
    orch_xen_recv_done *done;
    void *arg;
    int fd;          /* the link's, after detach */
    bool remus;      /* a standby: checkpoints, failover */
    bool colo;       /* ... and the copy runs between them */
    char *fence_cmd; /* the tie-breaker; NULL: none */
    unsigned fence_timeout_ms;
    char *witness; /* or this HOST:PORT must answer */
    struct orch_connect *wconn;
    struct orch_child *fence;
    char final_name[128];
    char *json;
    unsigned failover_ms; /* REMUS/COLO: a silent primary's deadline */
    struct ckpt_xen_newdom nd;
    uint32_t domid;
    int rc;
    char why[768];
};

static void recv_fire(evutil_socket_t fd, short what, void *arg)
{
    struct orch_xen_recv *r = arg;

    (void)fd;
    (void)what;
    r->done(r->arg, r->rc, r->why, r->domid); /* last: may free r */
}

static void recv_end(struct orch_xen_recv *r, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void recv_end(struct orch_xen_recv *r, int rc, const char *fmt, ...)
{
    va_list ap;

    if (event_pending(r->ev_done, EV_TIMEOUT, NULL))
        return;
    r->rc = rc;
    if (fmt) {
        va_start(ap, fmt);
        vsnprintf(r->why, sizeof(r->why), fmt, ap);
        va_end(ap);
    }
    if (rc < 0 && r->fd >= 0)
        ckpt_xen_send_error(r->fd, rc, r->why);
    event_active(r->ev_done, EV_TIMEOUT, 0);
}

/* The copy is ours to run: take the guest's own name back (a local
 * pairing restored it as NAME--incoming) and unpause it. */
static int recv_run(struct orch_xen_recv *r)
{
    if (strcmp(r->nd.name, r->final_name) != 0 &&
        ckpt_xen_dom_rename(r->d, r->domid, r->final_name) < 0)
        colo_warn("domain %" PRIu32 ": %s", r->domid, ckpt_xen_dom_error(r->d));
    else
        snprintf(r->nd.name, sizeof(r->nd.name), "%s", r->final_name);
    return ckpt_xen_dom_unpause(r->d, r->domid);
}

/* Remus failover: the tie-breaker's answer. */
static void recv_fenced(void *arg, int st)
{
    struct orch_xen_recv *r = arg;
    int rc;

    r->fence = NULL;
    r->wconn = NULL;
    if (st != 0) {
        /* The primary may be alive: our copy is stale, and must not run. */
        colo_err("the tie-breaker refused the takeover (%s); destroying "
                 "the standby copy, domain %" PRIu32,
                 st < 0 ? colo_strerror(st) : "non-zero exit", r->domid);
        ckpt_xen_dom_destroy(r->d, r->domid);
        recv_end(r, -COLO_EPEER_REJECTED,
                 "failover refused by the tie-breaker; the primary runs on");
        return;
    }
    rc = recv_run(r);
    if (rc < 0) {
        recv_end(r, rc, "%s", ckpt_xen_dom_error(r->d));
        return;
    }
    recv_end(r, 0,
             "Xen domain %" PRIu32 " (%s) now runs here after failover, from "
             "checkpoint %" PRIu64,
             r->domid, r->nd.name, ckpt_xen_job_checkpoints(r->job));
}

static void recv_witness(void *arg, int fd_or_rc)
{
    int fd = fd_or_rc;

    if (fd >= 0)
        colo_close(&fd);
    recv_fenced(arg, fd_or_rc >= 0 ? 0 : fd_or_rc);
}

static void recv_checkpoint(struct ckpt_xen_job *j, uint64_t n,
                            uint64_t pause_us, void *opaque)
{
    (void)j;
    (void)pause_us;
    (void)opaque;
    if (n == 1 || n % 10 == 0)
        colo_info("checkpoint %" PRIu64 " committed", n);
}

static void recv_failover(struct orch_xen_recv *r)
{
    uint64_t n = ckpt_xen_job_checkpoints(r->job);
    int rc;

    r->fd = -1; /* the source is gone: no answers */
    if (!r->fence_cmd && !r->witness) {
        recv_end(r, 0,
                 "failover: domain %" PRIu32 " (%s) holds checkpoint %" PRIu64
                 " and stays PAUSED: no tie-breaker (--fence-cmd, --witness); "
                 "run 'colo failover %s' once the primary is known dead",
                 r->domid, r->nd.name, n, r->nd.name);
        return;
    }
    colo_info("the primary is gone after checkpoint %" PRIu64 "; asking the "
              "tie-breaker",
              n);
    if (r->fence_cmd) {
        rc = orch_child_start(r->base, r->fence_cmd, r->fence_timeout_ms,
                              recv_fenced, r, &r->fence);
    } else {
        char *host = NULL;
        uint16_t port;

        rc = orch_parse_hostport(r->witness, 0, &host, &port);
        if (rc == 0)
            rc = orch_connect_start(r->base, host, port, 2000, recv_witness, r,
                                    &r->wconn);
        free(host);
    }
    if (rc < 0)
        recv_fenced(r, rc);
}

static void recv_restored(struct ckpt_xen_job *j, int rc, const char *why,
                          void *opaque)
{
    struct orch_xen_recv *r = opaque;
    char w[512] = "";
    uint64_t v;

    if (rc < 0) {
        if (rc == -COLO_ECANCELLED)
            r->fd = -1;
        recv_end(r, rc, "%s%s",
                 rc == -COLO_ECANCELLED ? "" : "restoring: ", why);
        return;
    }
    if (r->remus) {
        r->domid = ckpt_xen_job_domid(j);
        recv_failover(r);
        return;
    }
    r->domid = ckpt_xen_job_domid(j);
    colo_info("domain %" PRIu32 " (%s) restored, paused; waiting for the "
              "source to let go",
              r->domid, r->nd.name);
    rc = ckpt_xen_send_ack(r->fd, r->domid);
    if (rc >= 0)
        rc = ckpt_xen_read_ack(r->fd, GO_TIMEOUT_MS, &v, w, sizeof(w));
    if (rc < 0 || v != ACK_GO) {
        /* Unknown whether the source destroyed its copy: ours stays
         * paused rather than risk two running copies. */
        r->fd = -1; /* no ERROR to a peer that is gone */
        recv_end(r, rc < 0 ? rc : -COLO_ESTREAM_CORRUPT,
                 "no word from the source after the restore (%s): domain "
                 "%" PRIu32 " (%s) stays PAUSED; unpause it (xl unpause) "
                 "only if the source domain is gone",
                 w[0] ? w : "bad answer", r->domid, r->nd.name);
        return;
    }
    rc = recv_run(r);
    if (rc < 0) {
        recv_end(r, rc, "%s", ckpt_xen_dom_error(r->d));
        return;
    }
    ckpt_xen_send_ack(r->fd, r->domid);
    recv_end(r, 0, NULL);
}

static void recv_detached(struct xprt_link *l, int rc, int fd,
                          struct colo_buf *leftover, void *arg)
{
    struct orch_xen_recv *r = arg;
    struct ckpt_xen_job_common jc = {
        .done = recv_restored, .checkpoint = recv_checkpoint, .opaque = r};
    struct ckpt_xen_restore_params rp = {.paused = true};

    (void)l;
    if (rc < 0) {
        recv_end(r, rc, "the link failed while it was being handed over");
        return;
    }
    r->fd = fd;
    if (leftover->len) {
        /* The source sends nothing between VM_CONFIG and our ready. */
        recv_end(r, -COLO_ESTREAM_CORRUPT,
                 "the source sent %zu bytes before it was told to",
                 leftover->len);
        return;
    }
    sock_timeouts(fd);
    rp.fd = fd;
    rp.newdom = r->nd;
    rp.config_json = r->json;
    rp.failover_timeout_ms = r->failover_ms;
    if (r->remus)
        rp.stream = r->colo ? CKPT_XEN_STREAM_COLO : CKPT_XEN_STREAM_REMUS;
    rc = ckpt_xen_restore_start(&r->job, r->base, r->d, &rp, &jc);
    if (rc < 0)
        recv_end(r, rc, "starting the restore: %s",
                 rc == -COLO_EXEN || rc == -EEXIST ? ckpt_xen_dom_error(r->d)
                                                   : colo_strerror(rc));
}

static void recv_record(struct xprt_link *l, const struct xprt_item *it,
                        void *arg)
{
    struct orch_xen_recv *r = arg;

    (void)l;
    recv_end(r, -COLO_ESTREAM_CORRUPT,
             "unexpected record 0x%08" PRIx32 " before the stream", it->type);
}

static void recv_link_error(struct xprt_link *l, int rc, void *arg)
{
    struct orch_xen_recv *r = arg;

    recv_end(r, rc, "link: %s", xprt_link_why(l));
}

static const struct xprt_link_cbs recv_cbs = {
    .record = recv_record,
    .error = recv_link_error,
};

static void refuse_drained(struct xprt_link *l, int rc, int fd,
                           struct colo_buf *leftover, void *arg)
{
    struct orch_xen_recv *r = arg;

    (void)l;
    (void)rc;
    (void)fd;
    colo_buf_reset(leftover);
    event_active(r->ev_done, EV_TIMEOUT, 0);
}

int orch_xen_recv_start(struct event_base *base, struct xprt_link *link,
                        const struct orch_xen_recv_opts *o,
                        uint32_t hello_flags, const char *name,
                        const char *config, orch_xen_recv_done *done, void *arg,
                        struct orch_xen_recv **ret)
{
    struct orch_xen_recv *r = calloc(1, sizeof(*r));
    char why[512] = "";
    uint32_t other;
    int rc;

    *ret = NULL;
    if (!r) {
        xprt_link_free(link);
        return -ENOMEM;
    }
    r->base = base;
    r->link = link;
    r->done = done;
    r->arg = arg;
    r->fd = -1;
    r->remus = hello_flags & XPRT_HELLO_FLAG_XEN_REMUS;
    r->colo = r->remus && (hello_flags & XPRT_HELLO_FLAG_COLO);
    xprt_link_set_cbs(link, &recv_cbs, r);
    r->ev_done = event_new(base, -1, 0, recv_fire, r);
    {
        unsigned interval_ms;

        r->json = json_take_protect(config, &interval_ms);
        r->failover_ms = failover_ms_for(interval_ms);
        if (r->remus)
            colo_info("the primary checkpoints every %u ms; failover after "
                      "%u ms of silence",
                      interval_ms ? interval_ms : 200, r->failover_ms);
    }
    if (o->fence_cmd)
        r->fence_cmd = strdup(o->fence_cmd);
    r->fence_timeout_ms = o->fence_timeout_ms ? o->fence_timeout_ms : 10000;
    if (o->witness)
        r->witness = strdup(o->witness);
    if (!r->ev_done || !r->json || (o->fence_cmd && !r->fence_cmd) ||
        (o->witness && !r->witness)) {
        orch_xen_recv_free(r);
        return -ENOMEM;
    }
    *ret = r;
    if (r->remus != o->standby) {
        snprintf(r->why, sizeof(r->why), "%s",
                 r->remus ? "the source asks for protection: this host runs "
                            "'colo receive', not 'colo standby'"
                          : "the source asks for a migration: this host runs "
                            "'colo standby', not 'colo receive'");
        rc = -COLO_EPEER_REJECTED;
        goto refuse;
    }
    rc = ckpt_xen_newdom_from_json(r->json, strlen(r->json), &r->nd, why,
                                   sizeof(why));
    if (rc < 0) {
        snprintf(r->why, sizeof(r->why), "domain '%s': %s", name, why);
        goto refuse;
    }
    rc = ckpt_xen_dom_open(&r->d, why, sizeof(why));
    if (rc < 0) {
        snprintf(r->why, sizeof(r->why), "%s", why);
        goto refuse;
    }
    snprintf(r->final_name, sizeof(r->final_name), "%s", r->nd.name);
    if (ckpt_xen_dom_find(r->d, r->nd.name, &other) == 0) {
        /* A local migration (or a name clash): restore under a temporary
         * name, as xl does. */
        if (strlen(r->nd.name) + 11 >= sizeof(r->nd.name)) {
            snprintf(r->why, sizeof(r->why), "domain '%s' exists here",
                     r->nd.name);
            rc = -EEXIST;
            goto refuse;
        }
        strcat(r->nd.name, "--incoming");
    }
    colo_info("incoming Xen domain '%s'%s", r->final_name,
              r->colo ? " (COLO: the copy runs between checkpoints)" : "");
    rc = send_ack_link(link);
    if (rc >= 0)
        rc = xprt_link_detach_start(link, recv_detached, r);
    if (rc < 0) {
        snprintf(r->why, sizeof(r->why), "answering the source: %s",
                 colo_strerror(rc));
        goto refuse;
    }
    return 0;
refuse : {
    struct colo_buf b;

    colo_buf_init(&b, 0);
    if (xprt_error_write(&b, rc, r->why) >= 0)
        xprt_link_send_raw(link, b.data, b.len);
    colo_buf_dispose(&b);
}
    colo_err("refusing the incoming domain: %s", r->why);
    /* Reported from the loop, like every other outcome, once the ERROR
     * has gone out (detaching drains the link's output). */
    r->rc = rc;
    if (xprt_link_detach_start(link, refuse_drained, r) < 0)
        event_active(r->ev_done, EV_TIMEOUT, 0);
    return 0;
}

void orch_xen_recv_free(struct orch_xen_recv *r)
{
    if (!r)
        return;
    orch_child_cancel(r->fence);
    orch_connect_cancel(r->wconn);
    ckpt_xen_job_free(r->job);
    xprt_link_free(r->link);
    free(r->fence_cmd);
    free(r->witness);
    if (r->ev_done)
        event_free(r->ev_done);
    ckpt_xen_dom_close(r->d);
    free(r->json);
    free(r);
}

/* ==================== FAILOVER BY HAND ==================== */

int orch_cmd_xen_failover(int argc, char **argv)
{
    struct ckpt_xen_dom *d = NULL;
    struct ckpt_xen_dominfo di;
    char why[512], name[128];
    uint32_t domid, other;
    size_t n;
    int st = ORCH_EXIT_FAIL;

    if (argc != 2 || argv[1][0] == '-') {
        if (argc == 2 && strcmp(argv[1], "--help") == 0) {
            printf("Usage: colo failover DOMID|NAME\nOn a Xen standby "
                   "host: run the paused copy a standby left when no\n"
                   "tie-breaker agreed. Only when the primary is known to "
                   "be dead.\n");
            return ORCH_EXIT_OK;
        }
        return orch_usage_error("failover", "expected DOMID|NAME");
    }
    if (ckpt_xen_dom_open(&d, why, sizeof(why)) < 0) {
        fprintf(stderr, "colo: failover: %s\n", why);
        return ORCH_EXIT_FAIL;
    }
    if (ckpt_xen_dom_find(d, argv[1], &domid) < 0 ||
        ckpt_xen_dom_info(d, domid, &di) < 0) {
        fprintf(stderr, "colo: failover: %s\n", ckpt_xen_dom_error(d));
        goto out;
    }
    if (!di.paused || di.shutdown) {
        fprintf(stderr,
                "colo: failover: domain %" PRIu32 " (%s) is not a "
                "paused standby copy\n",
                domid, di.name);
        goto out;
    }
    /* NAME--incoming (a local pairing) takes NAME once it is free. */
    snprintf(name, sizeof(name), "%s", di.name);
    n = strlen(name);
    if (n > 10 && strcmp(name + n - 10, "--incoming") == 0) {
        name[n - 10] = '\0';
        if (ckpt_xen_dom_find(d, name, &other) == 0) {
            fprintf(stderr,
                    "colo: failover: domain %" PRIu32 " (%s) still "
                    "exists: is the primary really dead?\n",
                    other, name);
            goto out;
        }
        if (ckpt_xen_dom_rename(d, domid, name) < 0)
            colo_warn("%s", ckpt_xen_dom_error(d));
    }
    if (ckpt_xen_dom_unpause(d, domid) < 0) {
        fprintf(stderr, "colo: failover: %s\n", ckpt_xen_dom_error(d));
        goto out;
    }
    printf("colo: Xen domain %" PRIu32 " (%s) now runs here\n", domid, name);
    st = ORCH_EXIT_OK;
out:
    ckpt_xen_dom_close(d);
    return st;
}
