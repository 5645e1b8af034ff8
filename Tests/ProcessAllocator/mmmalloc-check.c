// SPDX-License-Identifier: Apache-2.0
// A C program that exercises the C allocation contract through whatever
// allocator serves it: scripts/process-allocator-check.sh runs it with glibc
// and with LD_PRELOAD=libmmmalloc.so and requires the same output and exit
// status 0. It prints only what any correct allocator must produce.
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(cond, what) do { if (!(cond)) { printf("FAILED: %s (line %d)\n", what, __LINE__); exit(1); } } while (0)

static uint64_t rng = 42;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void fill(unsigned char *p, size_t n, unsigned char seed) { for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i); }
static int verify(const unsigned char *p, size_t n, unsigned char seed) {
    for (size_t i = 0; i < n; i++) if (p[i] != (unsigned char)(seed + i)) return 0;
    return 1;
}

static void edge_cases(void) {
    void *a = malloc(0), *b = malloc(0);
    CHECK(a && b && a != b, "malloc(0) returns unique pointers");
    free(a); free(b);
    free(NULL);
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2, 4) == NULL && errno == ENOMEM, "calloc overflow is NULL + ENOMEM");
    errno = 0;
    CHECK(reallocarray(NULL, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM, "reallocarray overflow is NULL + ENOMEM");
    void *p = NULL;
    CHECK(posix_memalign(&p, 3, 64) == EINVAL, "posix_memalign rejects alignment 3");
    CHECK(posix_memalign(&p, 4, 64) == EINVAL, "posix_memalign rejects alignment below sizeof(void *)");
    for (size_t align = 8; align <= (1 << 20); align <<= 1) {
        for (size_t size = 1; size <= (1 << 21); size = size * 3 + 1) {
            CHECK(posix_memalign(&p, align, size) == 0 && ((uintptr_t)p % align) == 0, "posix_memalign aligns");
            memset(p, 0xab, size);
            CHECK(malloc_usable_size(p) >= size, "usable size covers the request");
            free(p);
        }
    }
    void *q = aligned_alloc(4096, 8192);
    CHECK(q && ((uintptr_t)q % 4096) == 0, "aligned_alloc");
    free(q);
    q = memalign(64, 100);
    CHECK(q && ((uintptr_t)q % 64) == 0, "memalign");
    free(q);
    q = valloc(10);
    CHECK(q && ((uintptr_t)q % 4096) == 0, "valloc");
    free(q);
    for (size_t size = 1; size < 100000; size = size * 2 + 3) {
        unsigned char *c = calloc(size, 1);
        CHECK(c, "calloc");
        for (size_t i = 0; i < size; i++) CHECK(c[i] == 0, "calloc zeroes");
        CHECK(((uintptr_t)c % 16) == 0, "16-byte alignment (max_align_t)");
        free(c);
    }
    // max_align_t for every size, the smallest ones included (many at once, so that
    // no allocator can pass by luck).
    void *small[256];
    for (int i = 0; i < 256; i++) { small[i] = malloc(i % 17); CHECK(((uintptr_t)small[i] % 16) == 0, "malloc aligns to 16"); }
    for (int i = 0; i < 256; i++) free(small[i]);
    void *r = malloc(16);
    CHECK(realloc(r, 0) == NULL, "realloc(p, 0) frees and returns NULL (glibc)");
    printf("edge cases: ok\n");
}

static void realloc_chains(void) {
    unsigned char *p = NULL;
    size_t size = 0;
    for (int i = 0; i < 2000; i++) {
        size_t n = (next() % 5 == 0) ? (size_t)(next() % (3 << 20)) + 1 : (size_t)(next() % 4096) + 1;
        unsigned char *q = realloc(p, n);
        CHECK(q, "realloc");
        CHECK(verify(q, n < size ? n : size, (unsigned char)i), "realloc keeps the contents");
        fill(q, n, (unsigned char)(i + 1));
        p = q; size = n;
    }
    free(p);
    printf("realloc chains: ok\n");
}

#define SLOTS 4096
static void *shared[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void *worker(void *arg) {
    uint64_t state = (uint64_t)(uintptr_t)arg * 2654435761u + 1;
    for (int i = 0; i < 200000; i++) {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        size_t slot = state % SLOTS;
        size_t size = (state >> 20) % 2048 + 1;
        if ((state >> 40) % 97 == 0) size = (state >> 8) % (1 << 20) + 1;
        unsigned char *p = malloc(size);
        CHECK(p, "malloc in a thread");
        p[0] = (unsigned char)size; p[size - 1] = (unsigned char)size;
        pthread_mutex_lock(&lock);
        void *old = shared[slot];
        shared[slot] = p;
        pthread_mutex_unlock(&lock);
        free(old);  // often allocated by another thread
    }
    // Leave some memory in this thread's caches; the thread exits with it.
    for (int i = 0; i < 100; i++) free(malloc(64));
    return NULL;
}

static void threads(void) {
    for (int round = 0; round < 3; round++) {
        pthread_t t[4];
        for (int i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + round * 4 + 1)) == 0, "pthread_create");
        for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    }
    for (int i = 0; i < SLOTS; i++) { free(shared[i]); shared[i] = NULL; }
    printf("threads, cross-thread frees, thread exit: ok\n");
}

static void forking(void) {
    char *parent = malloc(1 << 16);
    strcpy(parent, "from the parent");
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        // The child keeps allocating and freeing, its parent's pointers included.
        CHECK(strcmp(parent, "from the parent") == 0, "the child sees the parent's memory");
        strcpy(parent, "changed in the child");
        free(parent);
        for (int i = 0; i < 100000; i++) { void *p = malloc(next() % 10000 + 1); free(p); }
        pthread_t t;
        CHECK(pthread_create(&t, NULL, worker, (void *)99) == 0, "a thread in the child");
        pthread_join(t, NULL);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child exits cleanly");
    CHECK(strcmp(parent, "from the parent") == 0, "the child's write is not seen by the parent");
    free(parent);
    printf("fork: ok\n");
}

// glibc's internal names, which programs may call: whatever serves malloc must
// accept a pointer from either name freed through the other.
void *__libc_malloc(size_t size);
void __libc_free(void *pointer);
void *__libc_calloc(size_t count, size_t size);
void *__libc_realloc(void *pointer, size_t size);
void *__libc_memalign(size_t alignment, size_t size);
static void libc_names(void) {
    for (int round = 0; round < 1000; round++) {
        size_t n = 1 + next() % 5000;
        unsigned char *a = __libc_malloc(n), *b = malloc(n);
        CHECK(a && b, "__libc_malloc and malloc");
        fill(a, n, 1); fill(b, n, 2);
        a = __libc_realloc(a, n * 2);
        b = realloc(b, n * 2);
        CHECK(a && b && verify(a, n, 1) && verify(b, n, 2), "__libc_realloc and realloc keep the contents");
        free(a); __libc_free(b);
    }
    unsigned char *z = __libc_calloc(100, 10);
    int zeroed = 1;
    for (int i = 0; i < 1000; i++) zeroed &= z[i] == 0;
    CHECK(zeroed, "__libc_calloc zeroes");
    free(z);
    void *m = __libc_memalign(4096, 100);
    CHECK(m && ((uintptr_t)m & 4095) == 0, "__libc_memalign aligns");
    free(m);
    printf("glibc's internal names, mixed with the standard ones: ok\n");
}

int main(void) {
    edge_cases();
    libc_names();
    realloc_chains();
    threads();
    forking();
    printf("all checks passed\n");
    return 0;
}
