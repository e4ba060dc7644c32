/*
 * orchestrator/: the colo command line. One binary, subcommands in the
 * manner of xl. Each subcommand lives in its own cmd_<name>.c and is listed
 * once in commands.c.
 *
 * Exit codes (documented in `colo --help` and the README):
 */
#ifndef COLO_ORCH_H
#define COLO_ORCH_H

#include <stdio.h>

enum orch_exit {
    ORCH_EXIT_OK = 0,
    ORCH_EXIT_FAIL = 1,   /* the job failed */
    ORCH_EXIT_USAGE = 2,  /* bad command line */
    ORCH_EXIT_CONFIG = 3, /* bad configuration or input file */
    ORCH_EXIT_PEER = 4,   /* the peer host failed, vanished or said no */
    ORCH_EXIT_QEMU = 5,   /* QEMU failed or died */
    ORCH_EXIT_STREAM = 6, /* a stream or file is corrupt */
};

struct orch_command {
    const char *name;
    const char *args;                  /* one-line synopsis of arguments */
    const char *summary;               /* one line for `colo --help` */
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
    int hidden;                        /* internal commands (helper modes) */
};

extern const struct orch_command orch_commands[];

/* Map a colo error code to the exit code above. */
int orch_exit_code(int rc);
/* Print "colo: <cmd>: <msg>\n" and return ORCH_EXIT_USAGE. */
int orch_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* `colo --version`: colo's version, the QEMU it is tested against, the Xen
 * libraries and interfaces it was built against (version.c). */
void orch_print_version(FILE *f);

#endif
