#include "orch.h"

#include <stddef.h>

/* The subcommands, in the order `colo --help` lists them. Add one line per
 * command; its implementation goes in cmd_<name>.c. */
const struct orch_command orch_commands[] = {
    {NULL, NULL, NULL, NULL, 0},
};
