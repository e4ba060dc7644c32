/*
 * `colo --version`: colo's version and the interfaces it was built
 * against: the Xen libraries and hypervisor interface from the headers and
 * pkg-config at build time, the stream formats it reads and writes, and the
 * QEMU it talks QMP to (QEMU is not linked: the QMP commands colo uses are
 * those of the QEMU release it is tested against).
 */
#include "orch.h"

#include "transport/colo_rec.h"
#include "transport/xen_stream.h"

#include <stdio.h>
#include <xenctrl.h> /* defines __XEN_TOOLS__: domctl.h, sysctl.h */

#ifndef COLO_XENCTRL_VERSION
#define COLO_XENCTRL_VERSION "unknown"
#endif
#ifndef COLO_QEMU_TESTED
#define COLO_QEMU_TESTED "7.2"
#endif

void orch_print_version(FILE *f)
{
    fprintf(f, "colo %s\n", COLO_VERSION);
    fprintf(f,
            "QEMU: QMP, tested against QEMU %s (xen-save-devices-state, "
            "memory-backend-file share=on)\n",
            COLO_QEMU_TESTED);
    fprintf(f,
            "Xen: libxenctrl/libxenguest %s, public interface 0x%08x, "
            "domctl 0x%x, sysctl 0x%x\n",
            COLO_XENCTRL_VERSION, (unsigned)__XEN_LATEST_INTERFACE_VERSION__,
            (unsigned)XEN_DOMCTL_INTERFACE_VERSION,
            (unsigned)XEN_SYSCTL_INTERFACE_VERSION);
    fprintf(f, "streams: libxl migration v%u, libxc v%u, colo records v%u\n",
            XPRT_LIBXL_VERSION, XPRT_LIBXC_VERSION, XPRT_COLO_VERSION);
}
