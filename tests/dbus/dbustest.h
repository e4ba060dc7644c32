/* Shared by the dbus tests: skip checks, temp dirs, helper configs. */
#ifndef COLO_TEST_DBUSTEST_H
#define COLO_TEST_DBUSTEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* True when dbus-daemon and dbus-send are in PATH; otherwise skips the
 * calling case (cr_skip_test: it does not return). */
bool dt_have_dbus(void);
/* Path of the built example helper. */
const char *dt_helper_path(void);
/* mkdtemp under /tmp into buf (short: the socket path must fit). */
void dt_tmpdir(char *buf, size_t sz);
/* rm -r of a dir holding only plain files. */
void dt_rmdir(const char *dir);
/* [{"id": id, "command": [helper, "--id", id, extra...]}]; extra may be
 * NULL or NULL-terminated. */
json_t *dt_helpers(const char *id, const char *const *extra);
/* A property of org.colo.ExampleHelper1 of the (only) helper on the bus
 * at addr (Counter, LastSaved, LastLoaded as uint64; Loads as uint32). */
uint64_t dt_helper_prop(const char *addr, const char *name);

#endif
