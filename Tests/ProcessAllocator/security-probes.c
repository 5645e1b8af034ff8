// SPDX-License-Identifier: Apache-2.0
// Security probes for scripts/security-probes.sh: one memory error per run,
// chosen by the argument. A probe that the allocator does not stop prints
// "survived" and exits 0. The two read probes print "leaked" when they read
// the data they should not see, "hidden" when the allocator kept it from
// them (the read returned poison or zeroes), and exit 0 either way.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Keep the compiler from proving the errors away: a store just before free()
// is dead to it, and so is a memcpy into memory about to be freed.
static void *volatile sink;
static char *opaque(char *p) { sink = p; return (char *)sink; }
static void poke(char *p, long i, char c) { ((volatile char *)p)[i] = c; }
static char peek(char *p, long i) { return ((volatile char *)p)[i]; }
static void *(*volatile copy)(void *, const void *, size_t) = memcpy;

static int survived(void) { printf("survived\n"); return 0; }

int main(int argc, char **argv) {
    if (argc != 2) return 64;
    const char *probe = argv[1];
    char *p = opaque(malloc(64));
    memset(p, 'A', 64);
    char src[(1 << 20) + 64];
    memset(src, 'X', sizeof src);

    // Frees of memory that is not a live allocation.
    if (!strcmp(probe, "double-free")) { free(p); free(p); return survived(); }
    if (!strcmp(probe, "double-free-delayed")) {
        free(p);
        for (int i = 0; i < 10000; i++) free(malloc(200 + i % 3000));  // other sizes in between
        free(p);
        return survived();
    }
    if (!strcmp(probe, "double-free-interleaved")) {
        char *q = opaque(malloc(64));
        free(p); free(q); free(p);
        return survived();
    }
    if (!strcmp(probe, "invalid-free-stack")) { char local[64]; free(opaque(local + 16)); return survived(); }
    if (!strcmp(probe, "invalid-free-unaligned")) { free(p + 1); return survived(); }
    if (!strcmp(probe, "invalid-free-far")) { free(p + (1L << 30)); return survived(); }

    // Writes outside an allocation: past its end (overflows) and before its start (underflows),
    // one byte, 32 bytes, and one byte of a 1 MiB block; each directly and through memcpy.
    char *small = opaque(malloc(24));
    char *big = opaque(malloc(1 << 20));
    if (!strcmp(probe, "overflow-1")) { poke(small, 24, 'O'); free(small); return survived(); }
    if (!strcmp(probe, "overflow-32")) { for (int i = 0; i < 32; i++) poke(small, 24 + i, 'O'); free(small); return survived(); }
    if (!strcmp(probe, "overflow-1m")) { poke(big, 1 << 20, 'O'); free(big); return survived(); }
    if (!strcmp(probe, "memcpy-overflow-1")) { copy(small, src, 25); free(small); return survived(); }
    if (!strcmp(probe, "memcpy-overflow-32")) { copy(small, src, 56); free(small); return survived(); }
    if (!strcmp(probe, "memcpy-overflow-1m")) { copy(big, src, (1 << 20) + 1); free(big); return survived(); }
    if (!strcmp(probe, "underflow-1")) { poke(small, -1, 'U'); free(small); return survived(); }
    if (!strcmp(probe, "underflow-32")) { for (int i = 1; i <= 32; i++) poke(small, -i, 'U'); free(small); return survived(); }
    if (!strcmp(probe, "underflow-1m")) { poke(big, -1, 'U'); free(big); return survived(); }
    if (!strcmp(probe, "memcpy-underflow-1")) { copy(small - 1, src, 1); free(small); return survived(); }
    if (!strcmp(probe, "memcpy-underflow-32")) { copy(small - 32, src, 32); free(small); return survived(); }
    if (!strcmp(probe, "memcpy-underflow-1m")) { copy(big - 1, src, 1); free(big); return survived(); }

    // A write after free, then allocations of the same size that may reuse it.
    if (!strcmp(probe, "write-after-free")) {
        free(p);
        poke(p, 32, 'W');
        for (int i = 0; i < 100; i++) sink = malloc(64);
        return survived();
    }
    // malloc(0): a write to it, and a read of it.
    if (!strcmp(probe, "zero-size-write")) { char *z = opaque(malloc(0)); poke(z, 0, 'Z'); free(z); return survived(); }
    if (!strcmp(probe, "zero-size-read")) {
        char *z = opaque(malloc(0));
        sink = (void *)(long)peek(z, 0);
        free(z);
        return survived();
    }
    // A read after free: the freed bytes must not be readable.
    if (!strcmp(probe, "read-after-free")) {
        for (int i = 0; i < 64; i++) poke(p, i, 'S');  // not a memset: that would be dead before free()
        free(p);
        int leaked = 0;
        for (int i = 16; i < 64; i++) leaked |= peek(p, i) == 'S';
        printf(leaked ? "leaked\n" : "hidden\n");
        return 0;
    }
    return 64;
}
