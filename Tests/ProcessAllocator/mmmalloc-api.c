// SPDX-License-Identifier: Apache-2.0
// mmmalloc.h from C, in a program linked with -lmmmalloc (so malloc is
// swift-mm's from main on): a NOFS scope, the policies, a shrinker that
// reclaim calls under pressure, and the statistics.
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mmmalloc.h"

#define CHECK(cond, what) do { if (!(cond)) { printf("FAILED: %s (line %d)\n", what, __LINE__); exit(1); } } while (0)

// The cache is shared with reclaim, which runs shrinkers on its own threads (the
// background reclaimer, the shrinker helpers): every access takes the lock, and
// nothing is allocated or freed with it held.
#define CACHE 4096
static void *cache[CACHE];
static size_t cached = 0, scans = 0;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static size_t count(void *context) {
    (void)context;
    pthread_mutex_lock(&lock);
    size_t n = cached;
    pthread_mutex_unlock(&lock);
    return n;
}
static long scan(void *context, size_t to_scan) {
    (void)context;
    long freed = 0;
    pthread_mutex_lock(&lock);
    scans++;
    pthread_mutex_unlock(&lock);
    while (to_scan-- > 0) {
        pthread_mutex_lock(&lock);
        void *victim = cached > 0 ? cache[--cached] : NULL;
        pthread_mutex_unlock(&lock);
        if (!victim) break;
        free(victim);
        freed++;
    }
    return freed;
}

int main(void) {
    free(malloc(1));  // the system exists from the first allocation after main
    uint64_t token = mm_scope_enter(MM_SCOPE_NOFS | MM_SCOPE_QUIET);
    CHECK(token != 0, "mm_scope_enter returns a token");
    void *p = mm_malloc_policy(1000, MM_POLICY_NONBLOCKING);
    CHECK(p, "a non-blocking allocation in a scope");
    free(p);
    mm_scope_exit(token);
    errno = 0;
    CHECK(mm_malloc_policy(10, 99) == NULL && errno == EINVAL, "an unknown policy is EINVAL");
    p = mm_malloc_policy(4096, MM_POLICY_RETRY_FOREVER);
    CHECK(p, "a guaranteed allocation");
    free(p);

    int handle = mm_register_shrinker("c-cache", count, scan, NULL);
    CHECK(handle > 0, "mm_register_shrinker");
    // Fill the cache with 1 MiB blocks until allocations need reclaim; MM_CAPACITY
    // bounds the arena, so the shrinker must give memory back for this to go on.
    for (int round = 0; round < 3 * CACHE; round++) {
        void *block = mm_malloc_policy(1 << 20, MM_POLICY_STANDARD);
        CHECK(block, "an allocation that reclaim makes room for");
        memset(block, 1, 64);
        pthread_mutex_lock(&lock);
        int kept = cached < CACHE;
        if (kept) cache[cached++] = block;
        pthread_mutex_unlock(&lock);
        if (!kept) free(block);
    }
    pthread_mutex_lock(&lock);
    size_t calls = scans;
    pthread_mutex_unlock(&lock);
    CHECK(calls > 0, "reclaim called the C shrinker");
    mm_unregister_shrinker(handle);
    while (cached > 0) free(cache[--cached]);
    // glibc's internal names are swift-mm's too: 100 bytes take kmalloc-128
    // (glibc would give 104), and either name frees the other's pointer.
    void *__libc_malloc(size_t size);
    void __libc_free(void *pointer);
    void *a = __libc_malloc(100), *b = malloc(100);
    CHECK(malloc_usable_size(a) == 128 && malloc_usable_size(b) == 128, "__libc_malloc is swift-mm's");
    free(a);
    __libc_free(b);
    // Every size up to 8 KiB gets the smallest kmalloc class that holds it (at
    // least 16 bytes): the table that serves sizes up to 1 KiB agrees with the arithmetic.
    static const size_t classes[] = {16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192};
    for (size_t size = 0; size <= 8192; size++) {
        void *p = malloc(size);
        size_t expected = 16;
        for (size_t k = 0; k < sizeof classes / sizeof classes[0]; k++) {
            if (classes[k] >= size) { expected = classes[k]; break; }
        }
        if (malloc_usable_size(p) != expected) {
            fprintf(stderr, "malloc(%zu): usable size %zu, expected the %zu-byte class\n", size, malloc_usable_size(p), expected);
            return 1;
        }
        free(p);
    }
    mm_stats_print(STDOUT_FILENO);
    printf("mmmalloc.h: ok (the shrinker was called %s)\n", calls > 0 ? "under pressure" : "never");
    return 0;
}
