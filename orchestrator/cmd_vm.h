/* The VM subcommands (cmd_vm.c). */
#ifndef COLO_ORCH_CMD_VM_H
#define COLO_ORCH_CMD_VM_H

#include <stdbool.h>

int orch_cmd_start(int argc, char **argv);
int orch_cmd_receive(int argc, char **argv);
int orch_cmd_standby(int argc, char **argv);
int orch_cmd_migrate(int argc, char **argv);
int orch_cmd_protect(int argc, char **argv);
int orch_cmd_unprotect(int argc, char **argv);
int orch_cmd_failover(int argc, char **argv);
int orch_cmd_handover(int argc, char **argv);
int orch_cmd_status(int argc, char **argv);
int orch_cmd_stop(int argc, char **argv);
int orch_cmd_config(int argc, char **argv);
int orch_cmd_mem_set(int argc, char **argv);
int orch_cmd_device_add(int argc, char **argv);
int orch_cmd_device_remove(int argc, char **argv);
int orch_cmd_save(int argc, char **argv);
int orch_cmd_restore(int argc, char **argv);
/* The Xen forms (cmd_xen.c). */
int orch_cmd_xen_save(int argc, char **argv);
int orch_cmd_xen_restore(int argc, char **argv);
/* A Xen domain of that name or id exists (false without Xen). */
bool orch_xen_domain_exists(const char *what);

#endif
