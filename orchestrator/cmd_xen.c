/*
 * Xen commands.
 *
 *   colo __xen-helper save|restore ...   (hidden) the libxenguest helper
 *       process; argv as in checkpoint/xen_helper.h. Started by colo
 *       itself, never by hand.
 *   colo save DOMID FILE                 write an xl-format save file
 *   colo restore FILE                    restore one
 *
 * save/restore need a Xen dom0. Without a hypervisor they fail with "no Xen
 * hypervisor" and exit 1 before touching FILE. The domain operations they
 * need on a real host (suspend through xenstore/event channel, domain
 * creation, xenstore introduction) are not written yet: with a hypervisor
 * they say so and exit 1 rather than pretend (docs/xen.md).
 */
#include "orch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/xen_helper.h"
#include "common/error.h"

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

static int need_xen(const char *cmd)
{
    char why[512] = "";

    if (ckpt_xen_probe(why, sizeof(why)) < 0) {
        fprintf(stderr, "colo: %s: %s\n", cmd, why);
        return ORCH_EXIT_FAIL;
    }
    fprintf(stderr,
            "colo: %s: Xen domain operations (suspend, create, xenstore) "
            "are not implemented yet; nothing was done\n",
            cmd);
    return ORCH_EXIT_FAIL;
}

int orch_cmd_xen_save(int argc, char **argv)
{
    char *end;
    unsigned long domid;

    if (argc != 3)
        return orch_usage_error("save", "usage: colo save DOMID FILE");
    errno = 0;
    domid = strtoul(argv[1], &end, 10);
    if (errno || end == argv[1] || *end || domid >= 0x7ff0)
        return orch_usage_error("save", "'%s' is not a domain id", argv[1]);
    return need_xen("save");
}

int orch_cmd_xen_restore(int argc, char **argv)
{
    if (argc != 2)
        return orch_usage_error("restore", "usage: colo restore FILE");
    if (access(argv[1], R_OK) != 0) {
        fprintf(stderr, "colo: restore: %s: %s\n", argv[1], strerror(errno));
        return ORCH_EXIT_FAIL;
    }
    return need_xen("restore");
}
