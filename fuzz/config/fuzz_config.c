/*
 * libFuzzer target: the configuration parser. Every input that parses must
 * also generate, re-parse to an equal configuration, copy, and build an
 * argv; anything else is a bug (abort).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct orch_qemu_launch_params p = {
        .ram_path = "/dev/shm/r,am",
        .serial_path = "/tmp/serial",
        .paused = 1,
        .incoming_defer = 1,
        .kvm = ORCH_KVM_NO,
    };
    struct orch_vm_config *c = NULL, *c2 = NULL, *d = NULL;
    struct orch_config_error err;
    char *text = NULL, **argv = NULL;
    size_t len = 0;

    if (orch_config_parse_string((const char *)data, size, "fuzz", &c, &err) <
        0) {
        /* The message must be a proper string. */
        if (strlen(err.text) >= sizeof(err.text))
            abort();
        return 0;
    }
    if (orch_config_generate(c, 0, &text, &len) < 0)
        abort();
    if (orch_config_parse_string(text, len, "fuzz-2", &c2, &err) < 0)
        abort(); /* canonical output must parse */
    if (!orch_config_equal(c, c2))
        abort(); /* round trip must be identity */
    if (orch_config_dup(c, &d) < 0 || !orch_config_equal(c, d))
        abort();
    if (orch_config_type(c) == ORCH_VM_QEMU) {
        if (orch_config_qemu_argv(c, &p, &argv) < 0)
            abort();
        orch_config_argv_free(argv);
        orch_config_set_target_mb(d, 1, NULL);
        orch_config_device_remove(d, "x");
    } else {
        char *x = NULL;

        if (orch_config_generate_xen(c, 0, &x, NULL) < 0)
            abort();
        free(x);
    }
    free(text);
    orch_config_free(c);
    orch_config_free(c2);
    orch_config_free(d);
    return 0;
}
