#include "orch.h"

#include "cmd_vm.h"

#include <stddef.h>

int orch_cmd_verify_stream(int argc, char **argv);
int orch_cmd_xen_helper(int argc, char **argv);

/* The subcommands, in the order `colo --help` lists them. Add one line per
 * command; its implementation goes in cmd_<name>.c. */
const struct orch_command orch_commands[] = {
    {"start", "CONFIG", "launch a VM under colo on this host", orch_cmd_start,
     0},
    {"migrate", "VM HOST[:PORT]", "move a running VM to another host",
     orch_cmd_migrate, 0},
    {"receive", "[--listen H:P]", "receive a migrated VM and run it",
     orch_cmd_receive, 0},
    {"protect", "VM HOST[:PORT]", "checkpoint a VM to a secondary (remus|colo)",
     orch_cmd_protect, 0},
    {"standby", "[--listen H:P]", "be the secondary of a protected VM",
     orch_cmd_standby, 0},
    {"unprotect", "VM", "end protection; the VM runs on alone",
     orch_cmd_unprotect, 0},
    {"failover", "VM", "secondary: take over from the last checkpoint",
     orch_cmd_failover, 0},
    {"handover", "VM [HOST[:PORT]]",
     "planned switchover to the peer, no data lost", orch_cmd_handover, 0},
    {"status", "VM", "role, mode, checkpoints, pause times, link health",
     orch_cmd_status, 0},
    {"config", "VM", "print the VM's current configuration", orch_cmd_config,
     0},
    {"mem-set", "VM MIB", "set the VM's memory target (balloon)",
     orch_cmd_mem_set, 0},
    {"device-add", "VM JSON", "hot-plug a device, recorded in the config",
     orch_cmd_device_add, 0},
    {"device-remove", "VM ID", "unplug a device, removed from the config",
     orch_cmd_device_remove, 0},
    {"stop", "VM", "stop the VM and its colo process", orch_cmd_stop, 0},
    {"verify-stream", "FILE|-", "check a stream or save file; where is it bad",
     orch_cmd_verify_stream, 0},
    {"save", "VM|DOMID FILE", "save a VM to a file (Xen: an xl save file)",
     orch_cmd_save, 0},
    {"restore", "FILE", "restore a VM saved with colo save (or xl save)",
     orch_cmd_restore, 0},
    {"__xen-helper", "...", "internal: libxenguest helper", orch_cmd_xen_helper,
     1},
    {NULL, NULL, NULL, NULL, 0},
};
