// SPDX-License-Identifier: Apache-2.0
// Allocator benchmarks of the classic shapes, for whatever allocator serves
// the process (glibc, or one put in front with LD_PRELOAD). Prints
// "<shape> <seconds> <peak RSS KiB>". Fixed seeds: every allocator does the
// same work. scripts/process-allocator-bench.sh runs each under each allocator.
//   larson        server simulation: 4 threads replace random slots of their
//                 own arrays (16–1024 B), then hand the arrays to new threads
//   prodcons      producer/consumer: 64 B–4 KiB messages freed by another thread
//   threads       4 threads, each allocating and freeing batches of 8–256 B
//   realloc       a string builder: 20 000 strings grown by realloc to 64 KiB
//   large         large-allocation churn: 64 KiB–4 MiB blocks, touched, freed
//   idle          one malloc and free: the allocator's fixed peak RSS (its code,
//                 the libraries it loads, its initialisation), to subtract
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static uint64_t step(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }
// Tells the compiler that the memory at p is read elsewhere: without it, a store
// to a block that is freed later and never read is dead, and -O2 deletes it
// (the `large` shape then never touched the last page of its blocks).
static void escape(void *p) { __asm__ volatile("" : : "g"(p) : "memory"); }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

// larson
#define LARSON_SLOTS 2000
#define LARSON_THREADS 4
typedef struct { void **slots; uint64_t seed; int rounds; } larson_arg;
static void *larson_worker(void *raw) {
    larson_arg *a = raw;
    for (int i = 0; i < a->rounds; i++) {
        size_t k = step(&a->seed) % LARSON_SLOTS;
        free(a->slots[k]);
        size_t n = 16 + step(&a->seed) % 1009;
        a->slots[k] = malloc(n);
        ((char *)a->slots[k])[0] = (char)n;
        escape(a->slots[k]);
    }
    return NULL;
}
static void larson(void) {
    void **arrays[LARSON_THREADS];
    for (int t = 0; t < LARSON_THREADS; t++) arrays[t] = calloc(LARSON_SLOTS, sizeof(void *));
    for (int generation = 0; generation < 8; generation++) {
        pthread_t threads[LARSON_THREADS];
        larson_arg args[LARSON_THREADS];
        for (int t = 0; t < LARSON_THREADS; t++) {
            // Each generation's thread takes over another thread's array (remote frees).
            args[t] = (larson_arg){ arrays[(t + generation) % LARSON_THREADS], (uint64_t)(t + 1) * 7919 + generation, 250000 };
            pthread_create(&threads[t], NULL, larson_worker, &args[t]);
        }
        for (int t = 0; t < LARSON_THREADS; t++) pthread_join(threads[t], NULL);
    }
    for (int t = 0; t < LARSON_THREADS; t++) { for (int k = 0; k < LARSON_SLOTS; k++) free(arrays[t][k]); free(arrays[t]); }
}

// producer/consumer
#define QUEUE 1024
static void *queue[QUEUE];
static int head = 0, tail = 0, done = 0;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static void *consumer(void *unused) {
    (void)unused;
    for (;;) {
        void *batch[256]; int n = 0;
        pthread_mutex_lock(&qlock);
        while (head == tail && !done) pthread_cond_wait(&qcond, &qlock);
        if (head == tail && done) { pthread_mutex_unlock(&qlock); return NULL; }
        while (head != tail && n < 256) { batch[n++] = queue[head]; head = (head + 1) % QUEUE; }
        pthread_cond_broadcast(&qcond);
        pthread_mutex_unlock(&qlock);
        for (int i = 0; i < n; i++) free(batch[i]);
    }
}
static void prodcons(void) {
    pthread_t c;
    pthread_create(&c, NULL, consumer, NULL);
    uint64_t seed = 12345;
    for (int i = 0; i < 2000000; i++) {
        size_t n = 64 + step(&seed) % 4033;
        void *p = malloc(n);
        ((char *)p)[0] = 1;
        pthread_mutex_lock(&qlock);
        while ((tail + 1) % QUEUE == head) pthread_cond_wait(&qcond, &qlock);
        queue[tail] = p; tail = (tail + 1) % QUEUE;
        pthread_cond_signal(&qcond);
        pthread_mutex_unlock(&qlock);
    }
    pthread_mutex_lock(&qlock); done = 1; pthread_cond_broadcast(&qcond); pthread_mutex_unlock(&qlock);
    pthread_join(c, NULL);
}

// many threads
static void *batch_worker(void *raw) {
    uint64_t seed = (uint64_t)(uintptr_t)raw;
    void *held[500];
    for (int round = 0; round < 4000; round++) {
        for (int i = 0; i < 500; i++) { held[i] = malloc(8 + step(&seed) % 249); ((char *)held[i])[0] = 1; escape(held[i]); }
        for (int i = 0; i < 500; i++) free(held[i]);
    }
    return NULL;
}
static void threads(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, batch_worker, (void *)(uintptr_t)(i * 31 + 7));
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
}

// realloc string builder
static void builder(void) {
    uint64_t seed = 99;
    for (int s = 0; s < 20000; s++) {
        size_t length = 0, capacity = 0; char *text = NULL;
        size_t target = 64 + step(&seed) % (64 << 10);
        while (length < target) {
            size_t piece = 1 + step(&seed) % 64;
            if (length + piece + 1 > capacity) { capacity = capacity ? capacity * 3 / 2 + piece : 32 + piece; text = realloc(text, capacity); }
            memset(text + length, 'a' + (int)(piece % 26), piece);
            length += piece; text[length] = 0;
            escape(text);
        }
        free(text);
    }
}

// large churn
static void large(void) {
    uint64_t seed = 4242;
    void *held[16] = {0};
    for (int i = 0; i < 20000; i++) {
        int k = (int)(step(&seed) % 16);
        free(held[k]);
        size_t n = (64 << 10) + step(&seed) % (4 << 20);
        held[k] = malloc(n);
        memset(held[k], 1, 4096);
        ((char *)held[k])[n - 1] = 1;
        escape(held[k]);
    }
    for (int k = 0; k < 16; k++) free(held[k]);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: alloc-bench larson|prodcons|threads|realloc|large|idle\n"); return 64; }
    double start = now();
    if (!strcmp(argv[1], "larson")) larson();
    else if (!strcmp(argv[1], "prodcons")) prodcons();
    else if (!strcmp(argv[1], "threads")) threads();
    else if (!strcmp(argv[1], "realloc")) builder();
    else if (!strcmp(argv[1], "large")) large();
    else if (!strcmp(argv[1], "idle")) { void *volatile p = malloc(16); free(p); }
    else { fprintf(stderr, "unknown shape %s\n", argv[1]); return 64; }
    double seconds = now() - start;
    struct rusage usage; getrusage(RUSAGE_SELF, &usage);
    printf("%s %.4f %ld\n", argv[1], seconds, usage.ru_maxrss);
    return 0;
}
