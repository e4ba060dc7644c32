/*
 * Xen commands.
 *
 *   colo __xen-helper save|restore ...   (hidden) the libxenguest helper
 *       process; argv as in checkpoint/xen_helper.h. Started by colo
 *       itself, never by hand.
 */
#include "orch.h"

#include <stdio.h>

#include "checkpoint/xen_helper.h"

int orch_cmd_xen_helper(int argc, char **argv);

int orch_cmd_xen_helper(int argc, char **argv)
{
    int st = ckpt_xen_helper_main(argc - 1, argv + 1, ckpt_xen_real_ops());

    if (st == 2)
        return orch_usage_error("__xen-helper",
                                "internal command, started by colo itself");
    return st;
}
