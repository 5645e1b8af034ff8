// SPDX-License-Identifier: Apache-2.0
// CMMMalloc: the C allocation symbols of libmmmalloc.so. Each one forwards to
// a Swift entry point (@_cdecl in MMMalloc), which makes every decision; and
// glibc's own allocator, which serves what swift-mm must not (calls made
// while the allocator itself runs, or before it is ready).
#ifndef CMMMALLOC_H
#define CMMMALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// glibc's allocator, for what swift-mm must not serve. libmmmalloc defines
/// malloc and glibc's `__libc_malloc` family itself, so these reach glibc's
/// through `dlsym(RTLD_NEXT, …)`, resolved on first use. Calls made while
/// that lookup runs (a dynamic loader that allocates) are served from a
/// 64 KiB static bootstrap region, which the functions below also free
/// (nothing), reallocate (a copy into glibc's memory) and size.
void *cmm_glibc_malloc(size_t size);
void cmm_glibc_free(void *pointer);
void *cmm_glibc_calloc(size_t count, size_t size);
void *cmm_glibc_realloc(void *pointer, size_t size);
void *cmm_glibc_memalign(size_t alignment, size_t size);
size_t cmm_glibc_usable_size(void *pointer);

/// Sets errno (a macro Swift cannot assign through).
void cmm_set_errno(int value);

/// MM_HARDENING=full (GuardedAllocation): whether every allocation is guarded,
/// and the key of its headers. Plain C globals, written once before the
/// process system is published, so that reading them never runs a Swift
/// lazy initialiser (a swift_once) on the allocation path.
// Hidden: read with one PC-relative load from this library's own code (no GOT).
extern int cmm_guarded_on __attribute__((visibility("hidden")));
extern unsigned long cmm_guarded_secret __attribute__((visibility("hidden")));
static inline __attribute__((always_inline)) int cmm_guarded_is_on(void) { return cmm_guarded_on; }
static inline __attribute__((always_inline)) unsigned long cmm_guarded_key(void) { return cmm_guarded_secret; }
void cmm_guarded_turn_on(unsigned long secret);
/// 4096 bytes of 0x6b, the poison of freed guarded allocations: checked with memcmp.
extern const unsigned char cmm_poison_page[4096];
static inline __attribute__((always_inline)) const void *cmm_poison(void) { return cmm_poison_page; }

/// The calling thread's quarantine of freed guarded allocations (a ring of
/// CMM_QUARANTINE_SLOTS pointers, initial-exec TLS: no allocation to reach it).
#define CMM_QUARANTINE_SLOTS 64
typedef struct cmm_quarantine {
    void *slots[CMM_QUARANTINE_SLOTS];
    unsigned long next;       // the slot the next freed allocation takes
    unsigned long registered; // the thread-exit flush is armed
} cmm_quarantine;
extern _Thread_local cmm_quarantine cmm_thread_quarantine __attribute__((tls_model("initial-exec")));
static inline __attribute__((always_inline)) cmm_quarantine *cmm_quarantine_get(void) { return &cmm_thread_quarantine; }
/// Arms the flush of the calling thread's quarantine at its exit
/// (a pthread key whose destructor calls mm_process_quarantine_flush).
void cmm_quarantine_arm_thread_exit(void);

/// MM_POLICY as a number (0 standard, 1 failFast, 2 retryWhileProgress,
/// 3 nonBlocking), written once before the process system is published.
extern int cmm_process_policy_kind __attribute__((visibility("hidden")));
static inline __attribute__((always_inline)) int cmm_policy_kind(void) { return cmm_process_policy_kind; }
void cmm_set_policy_kind(int kind);

#ifdef __cplusplus
}
#endif
#endif
