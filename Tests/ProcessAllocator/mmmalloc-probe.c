// SPDX-License-Identifier: Apache-2.0
// One bad free, chosen by the argument, for scripts/process-allocator-check.sh:
// under libmmmalloc (MM_HARDENING=trap, the default) each must stop the
// process with a report naming the problem; with MM_HARDENING=report it is
// reported and ignored, and the program goes on to print "survived".
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
    else return 64;
    printf("survived\n");
    return 0;
}
