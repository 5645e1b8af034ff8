// SPDX-License-Identifier: Apache-2.0
// `c-pair N`: N malloc(16) + free pairs through whatever allocator serves the
// process. scripts/instructions.sh counts it under callgrind with N and 2N,
// with LD_PRELOAD=libmmmalloc.so and each other allocator: the cost of a C
// program's pair, entry into the allocator included.
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 2) return 64;
    long n = atol(argv[1]);
    // Other live objects of the size, as in any real program: without them the
    // one object of the pair is alone in its page, and an allocator that retires
    // an empty page at each free (mimalloc) pays for that instead of the pair.
    void *live[64];
    for (int i = 0; i < 64; i++) { live[i] = malloc(16); __asm__ volatile("" : : "g"(live[i]) : "memory"); }
    for (long i = 0; i < n; i++) {
        void *p = malloc(16);
        __asm__ volatile("" : : "g"(p) : "memory");  // the pair is not optimised away
        free(p);
    }
    for (int i = 0; i < 64; i++) free(live[i]);
    return 0;
}
