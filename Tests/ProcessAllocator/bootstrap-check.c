// SPDX-License-Identifier: Apache-2.0
// The bootstrap region of libmmmalloc's route to glibc (Sources/CMMMalloc/malloc.c),
// tested on its own: malloc.c is compiled into this program with a dlsym that
// allocates while glibc's functions are being looked up, as the dlsym of some C
// libraries does (glibc 2.36's does not, so nothing else reaches this path).
// The Swift entry points are stubs that send everything to glibc's functions.
// scripts/process-allocator-check.sh builds and runs it.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

static void *lookup(void *handle, const char *name);
#define dlsym lookup
#include "../../Sources/CMMMalloc/malloc.c"
#undef dlsym

#include <stdint.h>
#include <stdio.h>

// The allocations made by the lookup, while glibc's functions are not known yet.
static unsigned char *during_lookup[3];
static int lookups = 0;

static void *lookup(void *handle, const char *name) {
    if (strcmp(name, "__libc_malloc") == 0 && lookups++ == 0) {
        during_lookup[0] = cmm_glibc_malloc(100);
        during_lookup[1] = cmm_glibc_calloc(10, 10);
        during_lookup[2] = cmm_glibc_memalign(256, 64);
        for (int i = 0; i < 100; i++) during_lookup[0][i] = (unsigned char)i;
    }
    return dlsym(handle, name);
}

// The Swift entry points of libmmmalloc, here straight to glibc's allocator.
void *mm_process_malloc(size_t size) { return cmm_glibc_malloc(size); }
void mm_process_free(void *pointer) { cmm_glibc_free(pointer); }
void *mm_process_calloc(size_t count, size_t size) { return cmm_glibc_calloc(count, size); }
void *mm_process_realloc(void *pointer, size_t size) { return cmm_glibc_realloc(pointer, size); }
void *mm_process_reallocarray(void *pointer, size_t count, size_t size) { return cmm_glibc_realloc(pointer, count * size); }
int mm_process_posix_memalign(void **result, size_t alignment, size_t size) {
    *result = cmm_glibc_memalign(alignment, size);
    return *result ? 0 : ENOMEM;
}
void *mm_process_aligned(size_t alignment, size_t size, int pageRounded) {
    (void)pageRounded;
    return cmm_glibc_memalign(alignment, size);
}
size_t mm_process_usable_size(void *pointer) { return cmm_glibc_usable_size(pointer); }
void mm_process_quarantine_flush(void) {}
void mm_process_start(void) {}
uint64_t mm_process_scope_enter(unsigned flags) { (void)flags; return 0; }
void mm_process_scope_exit(uint64_t token) { (void)token; }
void *mm_process_malloc_policy(size_t size, int policy) { (void)policy; return cmm_glibc_malloc(size); }
int mm_process_register_shrinker(const char *name, mm_count_fn count, mm_scan_fn scan, void *context) {
    (void)name; (void)count; (void)scan; (void)context;
    return 0;
}
void mm_process_unregister_shrinker(int handle) { (void)handle; }
void mm_process_stats_print(int fd) { (void)fd; }

#define CHECK(cond, what) do { if (!(cond)) { printf("FAILED: %s (line %d)\n", what, __LINE__); return 1; } } while (0)

int main(void) {
    void *first = cmm_glibc_malloc(32);  // looks glibc's functions up, if nothing has yet
    CHECK(first && !cmm_in_bootstrap(first), "after the lookup, glibc serves");
    CHECK(lookups >= 1, "the lookup ran");
    for (int i = 0; i < 3; i++) CHECK(cmm_in_bootstrap(during_lookup[i]), "allocations during the lookup come from the bootstrap region");
    CHECK(((uintptr_t)during_lookup[0] & 15) == 0 && ((uintptr_t)during_lookup[2] & 255) == 0, "bootstrap blocks are aligned");
    int zeroed = 1;
    for (int i = 0; i < 100; i++) zeroed &= during_lookup[1][i] == 0;
    CHECK(zeroed, "a bootstrap calloc is zeroed");
    CHECK(cmm_glibc_usable_size(during_lookup[0]) == 100, "a bootstrap block knows its size");
    unsigned char *moved = cmm_glibc_realloc(during_lookup[0], 1000);
    CHECK(moved && !cmm_in_bootstrap(moved), "realloc of a bootstrap block moves it to glibc's memory");
    int kept = 1;
    for (int i = 0; i < 100; i++) kept &= moved[i] == (unsigned char)i;
    CHECK(kept, "and keeps its contents");
    cmm_glibc_free(during_lookup[1]);  // a bootstrap block: nothing to free, nothing crashes
    cmm_glibc_free(during_lookup[2]);
    cmm_glibc_free(moved);
    cmm_glibc_free(first);
    printf("bootstrap region: ok\n");
    return 0;
}
