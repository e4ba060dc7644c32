#include "orch.h"

#include <stddef.h>

int orch_cmd_verify_stream(int argc, char **argv);

/* The subcommands, in the order `colo --help` lists them. Add one line per
 * command; its implementation goes in cmd_<name>.c. */
const struct orch_command orch_commands[] = {
    {"verify-stream", "FILE|-", "check a stream or save file; where is it bad",
     orch_cmd_verify_stream, 0},
    {NULL, NULL, NULL, NULL, 0},
};
