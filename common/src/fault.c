#include "common/fault.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* -1: not read yet, 0: off, 1: on. Read lazily, once. */
int colo_fault_armed = -1;
static unsigned long long fault_mask;
static int fault_exit;
static int64_t fault_ckpt; /* COLO_FAULT_CKPT, 0: any */

void colo_fault_reload(void)
{
    const char *v = getenv("COLO_FAULT");
    const char *act = getenv("COLO_FAULT_ACTION");
    const char *at = getenv("COLO_FAULT_CKPT");

    fault_mask = 0;
    while (v && *v) {
        char *end;
        long n = strtol(v, &end, 10);

        if (end == v)
            break;
        if (n > 0 && n < 64)
            fault_mask |= 1ull << n;
        v = *end ? end + 1 : end;
    }
    fault_exit = act && strcmp(act, "exit") == 0;
    fault_ckpt = at ? strtoll(at, NULL, 10) : 0;
    colo_fault_armed = fault_mask != 0;
}

bool colo_fault_enabled_slow(int point)
{
    if (colo_fault_armed < 0)
        colo_fault_reload();
    if (!colo_fault_armed || point <= 0 || point >= 64 ||
        !(fault_mask & (1ull << point)))
        return false;
    colo_warn("fault point %d fired", point);
    if (fault_exit)
        _exit(99);
    return true;
}

bool colo_fault_ckpt_slow(int point, int64_t ckpt)
{
    if (colo_fault_armed < 0)
        colo_fault_reload();
    if (!colo_fault_armed || ckpt < fault_ckpt)
        return false;
    return colo_fault_enabled_slow(point);
}
