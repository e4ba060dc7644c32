/*
 * The VM commands: start, receive, standby (long-running hosts, host.c)
 * and migrate, protect, unprotect, failover, status, stop, config
 * (short-lived clients of a host's control socket, ctl.c).
 */
#include "cmd_vm.h"
#include "xen_migrate.h"

#include "ctl.h"
#include "host.h"
#include "netutil.h"
#include "orch.h"
#include "progress.h"
#include "qsave.h"

#include "common/error.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "transport/link.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    OPT_STATE_DIR = 0x100,
    OPT_KEY_FILE,
    OPT_INSECURE,
    OPT_TLS_CREDS,
    OPT_LISTEN,
    OPT_WITNESS,
    OPT_FENCE,
    OPT_FENCE_TIMEOUT,
    OPT_TAKEOVER,
    OPT_HEARTBEAT,
    OPT_TIMEOUT,
    OPT_ACCEL,
    OPT_DISK,
    OPT_MODE,
    OPT_INTERVAL,
    OPT_DOWNTIME,
    OPT_ROUNDS,
    OPT_COUNT,
    OPT_FOLLOW,
    OPT_JSON,
};

static int parse_uint(const char *cmd, const char *what, const char *s,
                      unsigned long max, unsigned long *ret)
{
    char *end;
    unsigned long v = 0;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max)
        return orch_usage_error(cmd, "bad %s '%s'", what, s);
    *ret = v;
    return 0;
}

/* ---- long-running hosts ---- */

static const char host_common_help[] =
    "      --state-dir DIR   where control sockets and VM files live\n"
    "      --key-file FILE   shared key (text, mode 0600): the link runs TLS "
    "1.3\n"
    "                        with a key derived from it (both hosts: the "
    "same)\n"
    "      --tls-creds DIR   TLS with x509 certificates instead (QEMU's "
    "layout:\n"
    "                        ca-cert.pem, server-cert.pem, server-key.pem,\n"
    "                        client-cert.pem, client-key.pem)\n"
    "      --insecure        no TLS, no authentication (explicitly; both "
    "hosts)\n"
    "      --heartbeat MS    link heartbeat interval (default 200)\n"
    "      --timeout MS      peer silent this long is gone (default 1000)\n"
    "      --accel kvm|tcg   override the configuration's accelerator\n";

static int host_opts_parse(const char *cmd, int argc, char **argv,
                           struct orch_host_opts *o, bool secondary,
                           const char *usage)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"key-file", required_argument, NULL, OPT_KEY_FILE},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"tls-creds", required_argument, NULL, OPT_TLS_CREDS},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"witness", required_argument, NULL, OPT_WITNESS},
        {"fence-cmd", required_argument, NULL, OPT_FENCE},
        {"fence-timeout", required_argument, NULL, OPT_FENCE_TIMEOUT},
        {"takeover", required_argument, NULL, OPT_TAKEOVER},
        {"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"accel", required_argument, NULL, OPT_ACCEL},
        {"disk", required_argument, NULL, OPT_DISK},
        {NULL, 0, NULL, 0},
    };
    static char *listen_host;
    static const char *disk_map[ORCH_HOST_MAX_DISK_MAP];
    unsigned long v = 0;
    uint16_t port;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("%s%s", usage, host_common_help);
            return 1;
        case OPT_STATE_DIR:
            o->state_dir = optarg;
            break;
        case OPT_KEY_FILE:
            o->key_file = optarg;
            break;
        case OPT_INSECURE:
            o->insecure = true;
            break;
        case OPT_TLS_CREDS:
            o->tls_creds = optarg;
            break;
        case OPT_LISTEN:
            if (!secondary)
                goto bad;
            free(listen_host);
            if (orch_parse_hostport(optarg, ORCH_DEFAULT_PORT, &listen_host,
                                    &port) < 0)
                return orch_usage_error(cmd, "bad --listen '%s'", optarg);
            o->listen_host = listen_host;
            o->listen_port = port;
            break;
        case OPT_WITNESS:
            if (!secondary)
                goto bad;
            o->witness = optarg;
            break;
        case OPT_FENCE:
            if (!secondary)
                goto bad;
            o->fence_cmd = optarg;
            break;
        case OPT_FENCE_TIMEOUT:
            if (!secondary)
                goto bad;
            if (parse_uint(cmd, "--fence-timeout milliseconds", optarg, 3600000,
                           &v))
                return ORCH_EXIT_USAGE;
            if (v == 0)
                return orch_usage_error(cmd, "--fence-timeout must be > 0");
            o->fence_timeout_ms = (unsigned)v;
            break;
        case OPT_TAKEOVER:
            if (!secondary)
                goto bad;
            if (strcmp(optarg, "cluster") == 0)
                o->takeover_cluster = true;
            else if (strcmp(optarg, "auto") == 0)
                o->takeover_cluster = false;
            else
                return orch_usage_error(cmd, "--takeover takes auto or "
                                             "cluster");
            break;
        case OPT_HEARTBEAT:
        case OPT_TIMEOUT:
            if (parse_uint(cmd, "milliseconds", optarg, 600000, &v))
                return ORCH_EXIT_USAGE;
            if (c == OPT_HEARTBEAT)
                o->heartbeat_ms = (unsigned)v;
            else
                o->timeout_ms = (unsigned)v;
            break;
        case OPT_DISK:
            if (!secondary)
                goto bad;
            if (!strchr(optarg, '=') || optarg[0] == '=' ||
                !strchr(optarg, '=')[1])
                return orch_usage_error(cmd, "--disk takes ID=PATH");
            if (o->n_disk_map == ORCH_HOST_MAX_DISK_MAP)
                return orch_usage_error(cmd, "at most %d --disk options",
                                        ORCH_HOST_MAX_DISK_MAP);
            disk_map[o->n_disk_map++] = optarg;
            o->disk_map = disk_map;
            break;
        case OPT_ACCEL:
            if (strcmp(optarg, "kvm") && strcmp(optarg, "tcg"))
                return orch_usage_error(cmd, "--accel takes kvm or tcg");
            o->accel = optarg;
            break;
        default:
            goto bad;
        }
    }
    if ((o->key_file || o->tls_creds) && o->insecure)
        return orch_usage_error(cmd, "--insecure excludes --key-file and "
                                     "--tls-creds");
    if (o->key_file && o->tls_creds)
        return orch_usage_error(cmd, "--key-file and --tls-creds exclude "
                                     "each other");
    if (!o->key_file && !o->tls_creds && !o->insecure)
        return orch_usage_error(cmd, "give --key-file FILE or --tls-creds DIR "
                                     "(or --insecure to run without TLS)");
    if (o->tls_creds) {
        /* Load them now: a bad file is named before anything starts. */
        struct xprt_link_cfg lc;
        char why[512];

        xprt_link_cfg_init(&lc);
        lc.tls_creds = o->tls_creds;
        if (xprt_link_cfg_check(&lc, why, sizeof(why)) < 0) {
            fprintf(stderr, "colo: %s: %s\n", cmd, why);
            return ORCH_EXIT_CONFIG;
        }
    }
    return 0;
bad:
    return orch_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
}

int orch_cmd_start(int argc, char **argv)
{
    struct orch_host_opts o = {0};
    int rc = host_opts_parse(
        "start", argc, argv, &o, false,
        "Usage: colo start CONFIG [OPTIONS]\n"
        "Launch the VM described by CONFIG (JSON, see docs/config.md) under\n"
        "colo on this host and keep it running; runs in the foreground.\n");

    if (rc)
        return rc == 1 ? ORCH_EXIT_OK : rc;
    if (optind != argc - 1)
        return orch_usage_error("start", "expected one CONFIG file");
    return orch_host_run_start(argv[optind], &o);
}

static int run_secondary(const char *cmd, int argc, char **argv, bool standby)
{
    struct orch_host_opts o = {.standby = standby};
    int rc = host_opts_parse(
        cmd, argc, argv, &o, true,
        standby
            ? "Usage: colo standby [--listen HOST:PORT] [OPTIONS]\n"
              "Be the secondary of a protected VM: receive its checkpoints\n"
              "and take over when the primary is gone. Automatic takeover\n"
              "needs a tie-breaker; without one, wait for 'colo failover'.\n"
              "      --listen HOST:PORT  where to listen (default "
              "0.0.0.0:8790)\n"
              "      --witness HOST:PORT  take over only if this endpoint "
              "answers\n"
              "      --fence-cmd CMD   take over only if CMD exits 0\n"
              "      --fence-timeout MS  CMD's deadline (default 10000)\n"
              "      --takeover cluster  never decide alone: on primary "
              "loss wait\n"
              "                          for 'colo failover' (a cluster "
              "manager's\n"
              "                          promote; docs/cluster.md)\n"
              "      --disk ID=PATH    this host's raw image for the VM's\n"
              "                        replicated disk ID (default: the\n"
              "                        primary's path, on this host)\n"
            : "Usage: colo receive [--listen HOST:PORT] [OPTIONS]\n"
              "Receive a VM migrated with 'colo migrate' and run it here.\n"
              "The configuration comes with the VM.\n"
              "      --listen HOST:PORT  where to listen (default "
              "0.0.0.0:8790)\n");

    if (rc)
        return rc == 1 ? ORCH_EXIT_OK : rc;
    if (optind != argc)
        return orch_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!standby &&
        (o.witness || o.fence_cmd || o.fence_timeout_ms || o.takeover_cluster))
        return orch_usage_error(cmd, "--witness/--fence-cmd/--fence-timeout/"
                                     "--takeover are for 'colo standby'");
    if (o.takeover_cluster && (o.witness || o.fence_cmd))
        return orch_usage_error(cmd, "--takeover cluster leaves the decision "
                                     "to the cluster: no --witness or "
                                     "--fence-cmd");
    if (o.fence_timeout_ms && !o.fence_cmd)
        return orch_usage_error(cmd, "--fence-timeout needs --fence-cmd");
    return orch_host_run_secondary(&o);
}

int orch_cmd_receive(int argc, char **argv)
{
    return run_secondary("receive", argc, argv, false);
}

int orch_cmd_standby(int argc, char **argv)
{
    return run_secondary("standby", argc, argv, true);
}

/* ---- control clients ---- */

struct client_ctx {
    bool json;
    bool quiet;
    struct orch_progress *bar; /* stderr is a terminal: a progress bar */
};

static void print_progress(json_t *line, void *arg)
{
    struct client_ctx *cc = arg;
    const char *ev = json_string_value(json_object_get(line, "event"));

    if (cc->bar) {
        if (orch_progress_event(cc->bar, line, colo_now_ns()))
            return;
        /* Anything else printed goes below the bar. */
        orch_progress_end(cc->bar);
    }
    if (cc->json) {
        char *s = json_dumps(line, JSON_COMPACT);

        if (s)
            printf("%s\n", s);
        free(s);
    } else if (ev && strcmp(ev, "checkpoint") == 0) {
        printf(
            "checkpoint %lld  pause %.2f ms (p50 %.2f, p99 %.2f)  "
            "dirty %lld pages  sent %.1f MiB\n",
            (long long)json_integer_value(json_object_get(line, "ckpt")),
            json_integer_value(json_object_get(line, "pause_last_us")) / 1000.0,
            json_integer_value(json_object_get(line, "pause_p50_us")) / 1000.0,
            json_integer_value(json_object_get(line, "pause_p99_us")) / 1000.0,
            (long long)json_integer_value(
                json_object_get(line, "dirty_pages_last")),
            json_integer_value(json_object_get(line, "bytes_sent")) /
                1048576.0);
    } else if (ev && strcmp(ev, "round") == 0) {
        printf("precopy round %lld  dirty %lld pages  sent %.1f MiB\n",
               (long long)json_integer_value(json_object_get(line, "rounds")),
               (long long)json_integer_value(
                   json_object_get(line, "dirty_pages_last")),
               json_integer_value(json_object_get(line, "bytes_sent")) /
                   1048576.0);
    } else if (ev && strcmp(ev, "progress") != 0) {
        printf("%s%s%s\n", ev, json_object_get(line, "error") ? ": " : "",
               json_object_get(line, "error")
                   ? json_string_value(json_object_get(line, "error"))
                   : "");
    }
    fflush(stdout);
}

static int ctl_exit_code(json_t *fin)
{
    const char *code = json_string_value(json_object_get(fin, "code"));

    if (json_is_true(json_object_get(fin, "ok")))
        return ORCH_EXIT_OK;
    if (!code)
        return ORCH_EXIT_FAIL;
    if (!strncmp(code, "EPEER", 5) || !strcmp(code, "EAUTH") ||
        !strcmp(code, "ECONNREFUSED") || !strcmp(code, "EHOSTUNREACH") ||
        !strcmp(code, "ETIMEDOUT"))
        return ORCH_EXIT_PEER;
    if (!strncmp(code, "EQMP", 4) || !strcmp(code, "EQEMU_DIED"))
        return ORCH_EXIT_QEMU;
    if (!strncmp(code, "ESTREAM", 7))
        return ORCH_EXIT_STREAM;
    if (!strcmp(code, "ECONFIG"))
        return ORCH_EXIT_CONFIG;
    return ORCH_EXIT_FAIL;
}

/* Send req to VM's control socket; print the answer. Consumes req. */
static int ctl_request(const char *cmd, const char *state_dir, const char *vm,
                       json_t *req, struct client_ctx *cc, int timeout_ms,
                       json_t **ret_final)
{
    char *dir = NULL, *path = NULL, *err = NULL;
    json_t *fin = NULL;
    int rc;

    rc = orch_state_dir(state_dir, &dir);
    if (rc == 0)
        rc = orch_ctl_path(dir, vm, &path);
    if (rc < 0) {
        fprintf(stderr, "colo: %s: %s\n", cmd, colo_strerror(rc));
        goto out;
    }
    fin = orch_ctl_call(path, req, timeout_ms, print_progress, cc, &err);
    if (cc->bar)
        orch_progress_end(cc->bar); /* errors go below the bar */
    if (!fin) {
        fprintf(stderr, "colo: %s: %s\n", cmd, err);
        rc = ORCH_EXIT_FAIL;
        goto out;
    }
    rc = ctl_exit_code(fin);
    if (rc != ORCH_EXIT_OK)
        fprintf(stderr, "colo: %s %s: %s\n", cmd, vm,
                json_string_value(json_object_get(fin, "error")));
out:
    json_decref(req);
    free(dir);
    free(path);
    free(err);
    if (ret_final && rc == ORCH_EXIT_OK)
        *ret_final = fin;
    else
        json_decref(fin);
    return rc;
}

static int run_job(const char *cmd, int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"mode", required_argument, NULL, OPT_MODE},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"downtime", required_argument, NULL, OPT_DOWNTIME},
        {"max-rounds", required_argument, NULL, OPT_ROUNDS},
        {"count", required_argument, NULL, OPT_COUNT},
        {"follow", no_argument, NULL, OPT_FOLLOW},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    bool protect = strcmp(cmd, "protect") == 0;
    struct client_ctx cc = {.json = colo_log_get_json()};
    struct orch_progress bar;
    const char *state_dir = NULL, *mode = protect ? "remus" : "migrate";
    unsigned long interval = 0, downtime = 0, rounds = 0, count = 0;
    bool follow = false;
    json_t *req, *fin = NULL;
    int c, rc;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            if (protect)
                printf("Usage: colo protect VM HOST[:PORT] [--mode "
                       "remus|colo] [--interval MS] [--follow]\n"
                       "Checkpoint VM to the secondary at HOST (running "
                       "'colo standby') every\ninterval; returns once the "
                       "first checkpoint is acked (--follow: keeps\n"
                       "printing checkpoints).\n"
                       "      --mode remus|colo  Remus (default) or COLO "
                       "checkpointing\n"
                       "      --interval MS     time between checkpoints\n"
                       "      --follow          print every checkpoint until "
                       "protection ends\n"
                       "      --count N         stop after N checkpoints\n");
            else
                printf("Usage: colo migrate VM HOST[:PORT] [--downtime MS] "
                       "[--max-rounds N]\n"
                       "Move VM, running, to HOST (running 'colo receive'): "
                       "precopy rounds,\nthen a short stop-and-copy. On a "
                       "terminal a progress bar shows bytes,\nrate, ETA, "
                       "dirty rate and round.\n"
                       "      --downtime MS     stop-and-copy once the rest "
                       "fits in MS\n"
                       "      --max-rounds N    at most N precopy rounds\n");
            printf("      --state-dir DIR   where the VM's control socket "
                   "is\n      --json            JSON event lines\n");
            return ORCH_EXIT_OK;
        case OPT_STATE_DIR:
            state_dir = optarg;
            break;
        case OPT_MODE:
            if (!protect || (strcmp(optarg, "remus") && strcmp(optarg, "colo")))
                return orch_usage_error(cmd, "--mode takes remus or colo");
            mode = optarg;
            break;
        case OPT_INTERVAL:
        case OPT_DOWNTIME:
        case OPT_ROUNDS:
        case OPT_COUNT:
            if (parse_uint(cmd, "number", optarg, 100000000,
                           c == OPT_INTERVAL   ? &interval
                           : c == OPT_DOWNTIME ? &downtime
                           : c == OPT_ROUNDS   ? &rounds
                                               : &count))
                return ORCH_EXIT_USAGE;
            break;
        case OPT_FOLLOW:
            follow = true;
            break;
        case OPT_JSON:
            cc.json = true;
            break;
        default:
            return orch_usage_error(cmd, "unknown option '%s'",
                                    argv[optind - 1]);
        }
    }
    if (optind != argc - 2)
        return orch_usage_error(cmd, "expected VM and HOST[:PORT]");
    req = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:b}", "cmd", cmd,
                    "target", argv[optind + 1], "mode", mode, "interval_ms",
                    (json_int_t)interval, "downtime_ms", (json_int_t)downtime,
                    "max_rounds", (json_int_t)rounds, "max_checkpoints",
                    (json_int_t)count, "follow", follow);
    if (!cc.json && isatty(STDERR_FILENO)) {
        /* A progress bar on the terminal; the server sends "progress"
         * events for it. Not with --json, not into a pipe or file. */
        orch_progress_init(&bar, stderr, protect);
        cc.bar = &bar;
        json_object_set_new(req, "progress_ms", json_integer(250));
    }
    rc = ctl_request(cmd, state_dir, argv[optind], req, &cc, 0, &fin);
    if (cc.bar)
        orch_progress_end(cc.bar);
    if (rc == ORCH_EXIT_OK && !cc.json) {
        if (protect)
            printf("VM %s protected by %s (%s mode)\n", argv[optind],
                   argv[optind + 1], mode);
        else
            printf(
                "VM %s migrated to %s: total %.1f ms, downtime %.1f ms, "
                "%lld rounds, %.1f MiB\n",
                argv[optind], argv[optind + 1],
                json_integer_value(json_object_get(fin, "total_us")) / 1000.0,
                json_integer_value(json_object_get(fin, "downtime_us")) /
                    1000.0,
                (long long)json_integer_value(json_object_get(fin, "rounds")),
                json_integer_value(json_object_get(fin, "bytes_sent")) /
                    1048576.0);
    } else if (rc == ORCH_EXIT_OK) {
        print_progress(fin, &cc);
        if (!json_object_get(fin, "event")) {
            char *s = json_dumps(fin, JSON_COMPACT);

            printf("%s\n", s ? s : "{}");
            free(s);
        }
    }
    json_decref(fin);
    return rc;
}

static bool is_domid(const char *s);

/* The command's first word selects a Xen domain (a domid, or the name of a
 * domain on this Xen host) rather than a QEMU VM under colo. */
static bool names_xen_domain(const char *arg)
{
    return arg[0] != '-' && (is_domid(arg) || orch_xen_domain_exists(arg));
}

int orch_cmd_migrate(int argc, char **argv)
{
    if (argc >= 2 && names_xen_domain(argv[1]))
        return orch_cmd_xen_migrate(argc, argv);
    return run_job("migrate", argc, argv);
}

int orch_cmd_protect(int argc, char **argv)
{
    if (argc >= 2 && names_xen_domain(argv[1]))
        return orch_cmd_xen_protect(argc, argv);
    return run_job("protect", argc, argv);
}

static int simple_request(const char *cmd, const char *ctl_cmd,
                          const char *help, int argc, char **argv,
                          json_t **ret_final, struct client_ctx *cc)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    const char *state_dir = NULL;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("%s      --state-dir DIR   where the VM's control socket "
                   "is\n      --json            JSON output\n",
                   help);
            return -1;
        case OPT_STATE_DIR:
            state_dir = optarg;
            break;
        case OPT_JSON:
            cc->json = true;
            break;
        default:
            return orch_usage_error(cmd, "unknown option '%s'",
                                    argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return orch_usage_error(cmd, "expected one VM name");
    return ctl_request(cmd, state_dir, argv[optind],
                       json_pack("{s:s}", "cmd", ctl_cmd), cc, 10000,
                       ret_final);
}

int orch_cmd_status(int argc, char **argv)
{
    struct client_ctx cc = {.json = colo_log_get_json()};
    json_t *fin = NULL;
    int rc = simple_request(
        "status", "status",
        "Usage: colo status VM\nRole, mode, last committed checkpoint, "
        "pause times, dirty pages, bytes and\nlink health of VM.\n",
        argc, argv, &fin, &cc);

    if (rc < 0)
        return ORCH_EXIT_OK;
    if (rc != ORCH_EXIT_OK)
        return rc;
    json_object_del(fin, "ok");
    if (cc.json) {
        char *s = json_dumps(fin, JSON_COMPACT | JSON_SORT_KEYS);

        printf("%s\n", s ? s : "{}");
        free(s);
    } else {
        const char *k;
        json_t *v;

        json_object_foreach(fin, k, v)
        {
            char *s = json_dumps(v, JSON_ENCODE_ANY);

            printf("%-20s %s\n", k, s ? s : "?");
            free(s);
        }
    }
    json_decref(fin);
    return ORCH_EXIT_OK;
}

static int plain_cmd(const char *cmd, const char *help, int argc, char **argv,
                     const char *done_msg)
{
    struct client_ctx cc = {.json = colo_log_get_json()};
    json_t *fin = NULL;
    int rc = simple_request(cmd, cmd, help, argc, argv, &fin, &cc);

    if (rc < 0)
        return ORCH_EXIT_OK;
    if (rc == ORCH_EXIT_OK && done_msg)
        printf("VM %s %s\n", argv[argc - 1], done_msg);
    json_decref(fin);
    return rc;
}

int orch_cmd_stop(int argc, char **argv)
{
    return plain_cmd("stop",
                     "Usage: colo stop VM\nStop VM (its QEMU is killed) and "
                     "the colo process running it.\n",
                     argc, argv, "stopped");
}

int orch_cmd_failover(int argc, char **argv)
{
    if (argc == 2 && names_xen_domain(argv[1]))
        return orch_cmd_xen_failover(argc, argv);
    return plain_cmd("failover",
                     "Usage: colo failover VM\nOn the secondary: resume VM "
                     "here from the last committed checkpoint.\nOnly when "
                     "the primary is known to be dead.\n",
                     argc, argv, "failover started");
}

int orch_cmd_handover(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {NULL, 0, NULL, 0},
    };
    struct client_ctx cc = {.json = colo_log_get_json()};
    const char *state_dir = NULL, *to = NULL;
    json_t *fin = NULL;
    int c, rc;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("Usage: colo handover VM [HOST[:PORT]]\n"
                   "On the primary of a protected VM: a planned switchover "
                   "without data\nloss. Protection ends, the VM moves to "
                   "the peer (by default the one\nprotecting it) like "
                   "'colo migrate', and this colo process exits\nonce it "
                   "runs there. Then run 'colo standby' here and 'colo "
                   "protect'\nthere to protect it again (the OCF agent "
                   "does both).\n"
                   "      --state-dir DIR   where the VM's control socket "
                   "is\n");
            return ORCH_EXIT_OK;
        case OPT_STATE_DIR:
            state_dir = optarg;
            break;
        default:
            return orch_usage_error("handover", "unknown option '%s'",
                                    argv[optind - 1]);
        }
    }
    if (optind == argc - 2)
        to = argv[optind + 1];
    else if (optind != argc - 1)
        return orch_usage_error("handover", "expected VM [HOST[:PORT]]");
    rc = ctl_request(
        "handover", state_dir, argv[optind],
        to ? json_pack("{s:s, s:s}", "cmd", "handover", "target", to)
           : json_pack("{s:s}", "cmd", "handover"),
        &cc, 0, &fin);
    if (rc == ORCH_EXIT_OK)
        printf("VM %s handed over to %s: downtime %.1f ms\n", argv[optind],
               json_string_value(json_object_get(fin, "peer"))
                   ? json_string_value(json_object_get(fin, "peer"))
                   : "the peer",
               json_integer_value(json_object_get(fin, "downtime_us")) /
                   1000.0);
    json_decref(fin);
    return rc;
}

int orch_cmd_unprotect(int argc, char **argv)
{
    return plain_cmd("unprotect",
                     "Usage: colo unprotect VM\nEnd protection of VM; the "
                     "guest runs on here alone.\n",
                     argc, argv, "protection ended");
}

int orch_cmd_config(int argc, char **argv)
{
    struct client_ctx cc = {.json = true};
    json_t *fin = NULL;
    int rc = simple_request(
        "config", "config",
        "Usage: colo config VM\nPrint VM's current configuration (JSON).\n",
        argc, argv, &fin, &cc);
    char *s;

    if (rc < 0)
        return ORCH_EXIT_OK;
    if (rc != ORCH_EXIT_OK)
        return rc;
    s = json_dumps(json_object_get(fin, "config"),
                   JSON_INDENT(2) | JSON_SORT_KEYS);
    printf("%s\n", s ? s : "{}");
    free(s);
    json_decref(fin);
    return ORCH_EXIT_OK;
}

/* mem-set, device-add, device-remove: VM plus one argument. */
static int reconf_cmd(const char *cmd, const char *help, int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {NULL, 0, NULL, 0},
    };
    struct client_ctx cc = {.json = colo_log_get_json()};
    const char *state_dir = NULL;
    json_t *req, *fin = NULL;
    int c, rc;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("%s      --state-dir DIR   where the VM's control socket "
                   "is\n",
                   help);
            return ORCH_EXIT_OK;
        case OPT_STATE_DIR:
            state_dir = optarg;
            break;
        default:
            return orch_usage_error(cmd, "unknown option '%s'",
                                    argv[optind - 1]);
        }
    }
    if (optind != argc - 2)
        return orch_usage_error(cmd, "expected VM and one argument");
    if (strcmp(cmd, "mem-set") == 0) {
        unsigned long mb = 0;

        if (parse_uint(cmd, "size in MiB", argv[optind + 1], 1UL << 24, &mb))
            return ORCH_EXIT_USAGE;
        req = json_pack("{s:s, s:I}", "cmd", cmd, "mb", (json_int_t)mb);
    } else if (strcmp(cmd, "device-add") == 0) {
        json_error_t jerr;
        json_t *dev = json_loads(argv[optind + 1], 0, &jerr);

        if (!json_is_object(dev)) {
            json_decref(dev);
            fprintf(stderr,
                    "colo: device-add: the device must be a JSON "
                    "object (QMP device_add arguments): %s\n",
                    jerr.text);
            return ORCH_EXIT_CONFIG;
        }
        req = json_pack("{s:s, s:o}", "cmd", cmd, "device", dev);
    } else {
        req = json_pack("{s:s, s:s}", "cmd", cmd, "id", argv[optind + 1]);
    }
    rc = ctl_request(cmd, state_dir, argv[optind], req, &cc, 60000, &fin);
    if (rc == ORCH_EXIT_OK)
        printf("VM %s: %s done%s\n", argv[optind], cmd,
               json_is_true(json_object_get(fin, "reprotect"))
                   ? "; protection re-paired"
                   : "");
    json_decref(fin);
    return rc;
}

int orch_cmd_mem_set(int argc, char **argv)
{
    return reconf_cmd("mem-set",
                      "Usage: colo mem-set VM MIB\nSet the VM's memory "
                      "target (balloon) and record it in its\n"
                      "configuration.\n",
                      argc, argv);
}

int orch_cmd_device_add(int argc, char **argv)
{
    return reconf_cmd("device-add",
                      "Usage: colo device-add VM JSON\nHot-plug a device "
                      "(JSON: QMP device_add arguments with an \"id\")\n"
                      "and record it in the VM's configuration.\n",
                      argc, argv);
}

int orch_cmd_device_remove(int argc, char **argv)
{
    return reconf_cmd("device-remove",
                      "Usage: colo device-remove VM ID\nUnplug device ID "
                      "and remove it from the VM's configuration.\n",
                      argc, argv);
}

static bool is_domid(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

int orch_cmd_save(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"continue", no_argument, NULL, 'c'},
        {NULL, 0, NULL, 0},
    };
    struct client_ctx cc = {.json = colo_log_get_json()};
    const char *state_dir = NULL;
    char abs[PATH_MAX];
    bool cont = false;
    json_t *fin = NULL;
    int c, rc;

    if (argc >= 2 && names_xen_domain(argv[1]))
        return orch_cmd_xen_save(argc, argv);
    opterr = 0;
    while ((c = getopt_long(argc, argv, "hc", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("Usage: colo save VM FILE [--continue]\n"
                   "Pause VM, write its RAM, device state and "
                   "configuration to FILE (a colo\nstream, checked by "
                   "'colo verify-stream'), then stop it (--continue: let "
                   "it\nrun on). 'colo restore FILE' brings it back.\n"
                   "colo save DOMID FILE: the same for a Xen domain (an xl "
                   "save file).\n"
                   "      --state-dir DIR   where the VM's control socket "
                   "is\n");
            return ORCH_EXIT_OK;
        case OPT_STATE_DIR:
            state_dir = optarg;
            break;
        case 'c':
            cont = true;
            break;
        default:
            return orch_usage_error("save", "unknown option '%s'",
                                    argv[optind - 1]);
        }
    }
    if (optind != argc - 2)
        return orch_usage_error("save", "expected VM and FILE");
    /* The file is written by the VM's colo process: give it a full path
     * (the directory must exist). */
    if (argv[optind + 1][0] == '/') {
        snprintf(abs, sizeof(abs), "%s", argv[optind + 1]);
    } else {
        char cwd[PATH_MAX];

        if (!getcwd(cwd, sizeof(cwd)) ||
            (size_t)snprintf(abs, sizeof(abs), "%s/%s", cwd,
                             argv[optind + 1]) >= sizeof(abs))
            return orch_usage_error("save", "file path too long");
    }
    rc = ctl_request("save", state_dir, argv[optind],
                     json_pack("{s:s, s:s, s:b}", "cmd", "save", "file", abs,
                               "continue", cont),
                     &cc, 0, &fin);
    if (rc == ORCH_EXIT_OK)
        printf("VM %s saved to %s%s\n", argv[optind], abs,
               cont ? "; it runs on" : "; it is stopped");
    json_decref(fin);
    return rc;
}

int orch_cmd_restore(int argc, char **argv)
{
    struct orch_host_opts o = {0};
    int rc;

    if (argc >= 2 && argv[1][0] != '-') {
        if (access(argv[1], R_OK) != 0) {
            fprintf(stderr, "colo: restore: %s: %s\n", argv[1],
                    strerror(errno));
            return ORCH_EXIT_FAIL;
        }
        if (!orch_qsave_is_colo(argv[1]))
            return orch_cmd_xen_restore(argc, argv);
    }
    rc = host_opts_parse(
        "restore", argc, argv, &o, false,
        "Usage: colo restore FILE [OPTIONS]\n"
        "Bring back a VM saved with 'colo save' and run it here under "
        "colo\n(foreground). The configuration comes from the file. A file "
        "written by\n'xl save' restores a Xen domain.\n");
    if (rc)
        return rc == 1 ? ORCH_EXIT_OK : rc;
    if (optind != argc - 1)
        return orch_usage_error("restore", "expected one FILE");
    return orch_host_run_restore(argv[optind], &o);
}
