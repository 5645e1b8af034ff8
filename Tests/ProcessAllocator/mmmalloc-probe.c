// SPDX-License-Identifier: Apache-2.0
// One memory error, chosen by the argument, for scripts/process-allocator-check.sh.
// Bad frees: under libmmmalloc (MM_HARDENING=trap, the default) each must stop
// the process with a report naming the problem; with MM_HARDENING=report it is
// reported and ignored, and the program goes on to print "survived".
// Overflows and writes after free: caught with MM_HARDENING=full.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 2) return 64;
    char *p = malloc(64);
    char *q = malloc(100000);
    memset(p, 1, 64);
    if (strcmp(argv[1], "double-free") == 0) { free(p); free(p); }
    else if (strcmp(argv[1], "interior") == 0) { free(p + 16); }
    else if (strcmp(argv[1], "misaligned") == 0) { free(p + 3); }
    else if (strcmp(argv[1], "double-free-large") == 0) { free(q); free(q); }
    else if (strcmp(argv[1], "delayed-double-free") == 0) {
        free(p);
        for (int i = 0; i < 100000; i++) free(malloc(64 + i % 64));
        free(p);
    }
    else if (strcmp(argv[1], "overflow-1") == 0) { p[64] = 1; free(p); }
    else if (strcmp(argv[1], "overflow-32") == 0) { memset(p + 64, 2, 32); free(p); }
    else if (strcmp(argv[1], "memcpy-overflow") == 0) { char src[80]; memset(src, 3, 80); memcpy(p, src, 80); free(p); }
    else if (strcmp(argv[1], "use-after-free") == 0) {
        free(p);
        p[40] = 4;
        for (int i = 0; i < 1000; i++) { char *r = malloc(64); r[0] = 0; }  // one of them is p again
    }
    else if (strcmp(argv[1], "overflow-large") == 0) {
        char *big = malloc(1 << 20);
        big[1 << 20] = 5;  // the first byte past 1 MiB
        free(big);
    }
    else if (strcmp(argv[1], "large-read-after-free") == 0) {
        // A large allocation's first and last bytes after its free: with MM_HARDENING=full
        // they are poison (the pages of its header and red zone are filled), not the data.
        volatile char *v = q;
        for (int i = 0; i < 64; i++) { v[i] = 'S'; v[100000 - 1 - i] = 'S'; }
        free(q);
        int leaked = 0;
        for (int i = 0; i < 64; i++) leaked |= v[i] == 'S' || v[100000 - 1 - i] == 'S';
        printf(leaked ? "leaked\n" : "hidden\n");
        return 0;
    }
    else return 64;
    printf("survived\n");
    return 0;
}
