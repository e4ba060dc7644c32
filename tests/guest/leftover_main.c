/*
 * tguest-leftover: a helper for guest.boot. Boots a guest (TCG), writes
 * "<qemu pid> <temp dir>\n" to stdout and then leaves WITHOUT tguest_free():
 * "exit" returns from main (atexit handlers run), "hang" waits to be
 * killed. It is a separate program so that its exit does not run the test
 * framework's own exit handlers.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tguest.h"

int main(int argc, char **argv)
{
    struct tguest_opts o = tguest_opts_default();
    struct tguest *g = NULL;

    if (argc != 2 || (strcmp(argv[1], "exit") && strcmp(argv[1], "hang"))) {
        fprintf(stderr, "usage: tguest-leftover exit|hang\n");
        return 2;
    }
    o.force_tcg = true;
    if (tguest_start(&o, &g) < 0)
        return 1;
    printf("%d %s\n", (int)g->pid, g->dir);
    fflush(stdout);
    if (!strcmp(argv[1], "hang")) {
        for (;;)
            pause();
    }
    return 0; /* g deliberately left to the atexit handler */
}
