// SPDX-License-Identifier: Apache-2.0
// Threads that come and go, each allocating and freeing objects of many size
// classes, must leave nothing behind: run under libmmmalloc, neither the peak
// RSS nor glibc's own heap (where the allocator's bookkeeping goes while it
// runs) may grow with the number of threads that have exited. Exits 1 with
// the growth when they do. (scripts/process-allocator-check.sh)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

static void *worker(void *unused) {
    void *p[200];
    for (int i = 0; i < 200; i++) p[i] = malloc(16 + (size_t)(i * 37) % 3000);
    for (int i = 0; i < 200; i++) free(p[i]);
    void *block = malloc(100000);  // pages, through the thread's page lists
    free(block);
    return unused;
}

static void rounds(int n) {
    for (int r = 0; r < n; r++) {
        pthread_t t[8];
        for (int i = 0; i < 8; i++) pthread_create(&t[i], NULL, worker, NULL);
        for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
    }
}

static long peak_kib(void) { struct rusage u; getrusage(RUSAGE_SELF, &u); return u.ru_maxrss; }

int main(void) {
    // glibc's own statistics (RTLD_NEXT skips libmmmalloc's definitions).
    struct mallinfo2 (*glibc_mallinfo2)(void) = (struct mallinfo2 (*)(void))dlsym(RTLD_NEXT, "mallinfo2");
    rounds(100);  // warm: every size class and glibc's thread bookkeeping in use
    long peak = peak_kib();
    size_t heap = glibc_mallinfo2 ? glibc_mallinfo2().uordblks : 0;
    const int more = 600;
    rounds(more);
    long grown = peak_kib() - peak;
    double per_thread = glibc_mallinfo2 ? ((double)glibc_mallinfo2().uordblks - (double)heap) / (more * 8.0) : 0;
    printf("thread churn: %d more threads, peak RSS grew %ld KiB, glibc's heap %.0f bytes a thread\n", more * 8, grown, per_thread);
    if (grown > 2048 || per_thread > 64) {
        fprintf(stderr, "thread churn: exited threads left memory behind (peak RSS +%ld KiB, glibc heap +%.0f bytes a thread)\n",
                grown, per_thread);
        return 1;
    }
    return 0;
}
