// SPDX-License-Identifier: Apache-2.0
// CMMShims: the few things Glibc hides from Swift (it is imported without
// _GNU_SOURCE). Wrappers only; every decision is made in Swift.
#ifndef CMMSHIMS_H
#define CMMSHIMS_H

#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/// memfd_create(2) with MFD_CLOEXEC. Returns -1 and sets errno on failure.
int cmm_memfd_create(const char *name);

/// fallocate(2) with FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE.
int cmm_punch_hole(int fd, off_t offset, off_t length);

/// gettid(2).
pid_t cmm_gettid(void);

/// Tells ThreadSanitizer that the calling thread acquired / released the
/// synchronisation object at `address`. No-ops unless the process runs with
/// TSan (the runtime's symbols are weak references). Needed because TSan does
/// not see inside Synchronization's futex-based Mutex.
void cmm_tsan_acquire(void *address);
void cmm_tsan_release(void *address);

/// One pointer-sized thread-local slot per purpose. The Swift side owns what
/// the pointers point to; these are plain storage with initial-exec TLS so an
/// access is one %fs-relative load.
typedef struct cmm_thread_slots {
    void *pageLists;      // per-thread page lists (PageAllocator)
    void *objectCaches;   // per-thread object caches (Slab)
    void *scopeState;     // per-thread allocation-scope state
    void *lockState;      // per-thread ReclaimCheckedMutex bookkeeping
    uint64_t heldCheckedLocks;  // ReclaimCheckedMutex locks held: allocations check them
} cmm_thread_slots;

extern _Thread_local cmm_thread_slots cmm_slots
    __attribute__((tls_model("initial-exec")));

static inline __attribute__((always_inline)) cmm_thread_slots *cmm_thread_slots_get(void) {
    return &cmm_slots;
}

#ifdef __cplusplus
}
#endif
#endif
