/*
 * colo — checkpoint orchestrator: migrate-to-remote and COLO/Remus-style
 * protection of QEMU and Xen guests.
 */
#include "orch.h"

#include "common/log.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_help(FILE *f)
{
    fprintf(
        f,
        "Usage: colo [GLOBAL OPTIONS] COMMAND [ARGS...]\n"
        "\n"
        "colo keeps a virtual machine on two hosts: it moves a running VM to\n"
        "another host (migrate) or checkpoints it continuously to a secondary\n"
        "host that takes over when the primary dies (protect/standby).\n"
        "\n"
        "Commands:\n");
    for (const struct orch_command *c = orch_commands; c->name; c++) {
        if (c->hidden)
            continue;
        fprintf(f, "  %-14s %s\n", c->name, c->summary);
    }
    fprintf(
        f,
        "\n"
        "Global options:\n"
        "  -h, --help           show this help (COMMAND --help for a command)\n"
        "  -V, --version        show the version and the QEMU and Xen APIs\n"
        "  -v, --verbose        more log output (repeat for debug)\n"
        "  -q, --quiet          errors only\n"
        "      --json           log and events as JSON lines\n"
        "\n"
        "Exit codes:\n"
        "  0 success, 1 job failed, 2 usage error, 3 bad config or input,\n"
        "  4 peer failed or refused, 5 QEMU failed, 6 corrupt stream.\n"
        "\n"
        "Environment:\n"
        "  COLO_STATE_DIR       the state directory when a command has no\n"
        "                       --state-dir (default /run/colo as root,\n"
        "                       else $XDG_RUNTIME_DIR/colo, else\n"
        "                       /tmp/colo-UID)\n"
        "\n"
        "Files:\n"
        "  STATE/VM.sock        a VM's control socket (status, stop, ...)\n"
        "  STATE/VM/            its RAM file and serial log\n"
        "  /etc/colo/NAME.conf  settings of the systemd services\n"
        "                       colo-standby@NAME and colo-receive@NAME\n"
        "\n"
        "See also: qemu-system-x86_64(1), xl(1), the documents in\n"
        "/usr/share/doc/colo (README.md, docs/).\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int c, verbose = 0;

    /* A peer that closed its socket is an error to report, not a signal
     * that kills the CLI mid-job (a Xen migrate runs in this process: its
     * last writes can meet the target's close). */
    signal(SIGPIPE, SIG_IGN);

    /* '+': stop at the first non-option, the command. */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+hVvq", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            print_help(stdout);
            return ORCH_EXIT_OK;
        case 'V':
            orch_print_version(stdout);
            return ORCH_EXIT_OK;
        case 'v':
            verbose++;
            break;
        case 'q':
            colo_log_set_level(COLO_LOG_ERROR);
            break;
        case 'j':
            colo_log_set_json(1);
            break;
        default:
            return orch_usage_error(NULL, "unknown option '%s'",
                                    argv[optind - 1]);
        }
    }
    if (verbose)
        colo_log_set_level(verbose > 1 ? COLO_LOG_DEBUG : COLO_LOG_INFO);
    if (optind >= argc) {
        print_help(stderr);
        return ORCH_EXIT_USAGE;
    }
    if (strcmp(argv[optind], "help") == 0) {
        print_help(stdout);
        return ORCH_EXIT_OK;
    }
    for (const struct orch_command *cmd = orch_commands; cmd->name; cmd++) {
        if (strcmp(cmd->name, argv[optind]) == 0) {
            int first = optind;

            optind = 0; /* glibc: re-initialise getopt for the command */
            return cmd->run(argc - first, argv + first);
        }
    }
    return orch_usage_error(NULL, "unknown command '%s'", argv[optind]);
}
