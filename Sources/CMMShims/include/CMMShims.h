// SPDX-License-Identifier: Apache-2.0
// CMMShims: the few things Glibc hides from Swift (it is imported without
// _GNU_SOURCE, and variadic functions do not import). Wrappers only; every decision is made in Swift.
#ifndef CMMSHIMS_H
#define CMMSHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/// prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, ...): names an anonymous mapping
/// in /proc/self/maps ("[anon:NAME]"; Linux 5.17+ with CONFIG_ANON_VMA_NAME,
/// otherwise -1 and errno). prctl is variadic, which Swift cannot call.
int cmm_name_mapping(void *address, size_t length, const char *name);

/// One pointer-sized thread-local slot per purpose. The Swift side owns what
/// the pointers point to; these are plain storage with initial-exec TLS so an
/// access is one %fs-relative load.
typedef struct cmm_thread_slots {
    void *pageLists;      // per-thread page lists (PageFastPath)
    void *objectCaches;   // per-thread object caches (Slab)
    void *scopeState;     // per-thread allocation-scope state
    void *lockState;      // per-thread ReclaimCheckedMutex bookkeeping
    uint64_t heldCheckedLocks;  // ReclaimCheckedMutex locks held: allocations check them
    uint64_t forkGateDepth;     // allocator locks this thread holds (see cmm_fork_gate_*)
    // What the fast paths read: pageLists and objectCaches while the thread
    // holds no ReclaimCheckedMutex, NULL while it holds one (its allocations
    // must reach the slow path, which checks them). One load instead of two.
    void *pageListsForFastPath;
    void *objectCachesForFastPath;
    // What the process allocator's malloc and free read (libmmmalloc): the
    // magazines while the thread is outside the allocator (mallocDepth 0),
    // holds no allocator lock (forkGateDepth 0) and no ReclaimCheckedMutex,
    // and malloc magazines are on; the empty record otherwise. One load
    // replaces those tests on every call.
    void *objectCachesForMalloc;
    // Nonzero while this thread runs inside the process allocator (libmmmalloc):
    // allocations made meanwhile (by the allocator's own Swift code, the runtime)
    // are served by glibc instead of re-entering swift-mm.
    uint64_t mallocDepth;
    // Thread-only charging scopes (tokens and withThreadAllocationScope) this
    // thread is in: while nonzero its fast paths are closed, so its allocations
    // reach the slow path, which charges them; other threads keep theirs.
    uint64_t threadChargingScopes;
    // Nonzero once one of this thread's exit destructors has run (it stays set
    // until the thread is gone): its per-thread caches are being or have been
    // taken back, and no slow path may make new ones, which no destructor
    // would take back (their memory would leak with every thread that exits).
    uint64_t exiting;
} cmm_thread_slots;

extern _Thread_local cmm_thread_slots cmm_slots
    __attribute__((tls_model("initial-exec")));

/// Bytes of the empty magazine record: a header line and 1024 magazines of
/// 64 bytes, rounded up to whole pages.
#define CMM_EMPTY_OBJECT_CACHES_BYTES 69632

/// A zero-filled, read-only magazine record (mapped read-only by a
/// constructor): what a thread's magazine slots point to while it has no
/// record of its own, or while its fast path must miss. Its fast-path key is
/// 0, which no system has, so the fast paths take it without a null test
/// and miss; a write to it is a crash, never silent corruption.
extern unsigned char cmm_empty_object_caches[CMM_EMPTY_OBJECT_CACHES_BYTES];

/// Whether malloc may use the threads' magazines, as the key of the system
/// whose magazines it uses (its identifier; 0 while off): set once by the
/// process allocator after its fast path is in place (a release store, read
/// with acquire); off in MM_HARDENING=full, whose malloc guards every block.
/// malloc compares a thread's malloc slot's fast-path key with it directly,
/// so its hit reads nothing of the process system itself.
extern unsigned long long cmm_malloc_magazines __attribute__((visibility("hidden")));  // one PC-relative load, no GOT
static inline __attribute__((always_inline)) unsigned long long cmm_malloc_magazines_key(void) {
    return __atomic_load_n(&cmm_malloc_magazines, __ATOMIC_ACQUIRE);
}
void cmm_set_malloc_magazines(unsigned long long key);

/// The object magazines as malloc sees them (see `objectCachesForMalloc`).
static inline __attribute__((always_inline)) void **cmm_object_caches_malloc_slot(void) {
    return &cmm_slots.objectCachesForMalloc;
}

/// The empty magazine record.
static inline __attribute__((always_inline)) void *cmm_empty_object_caches_record(void) {
    return cmm_empty_object_caches;
}

static inline __attribute__((always_inline)) cmm_thread_slots *cmm_thread_slots_get(void) {
    return &cmm_slots;
}

/// The slot of the calling thread's page lists (a typed `PerThreadCache` on the Swift side).
static inline __attribute__((always_inline)) void **cmm_page_lists_slot(void) {
    return &cmm_slots.pageLists;
}

/// The slot of the calling thread's object magazines.
static inline __attribute__((always_inline)) void **cmm_object_caches_slot(void) {
    return &cmm_slots.objectCaches;
}

/// The page lists as the fast path sees them (NULL while a checked lock is held).
static inline __attribute__((always_inline)) void **cmm_page_lists_fast_slot(void) {
    return &cmm_slots.pageListsForFastPath;
}

/// The object magazines as the fast path sees them (NULL while a checked lock is held).
static inline __attribute__((always_inline)) void **cmm_object_caches_fast_slot(void) {
    return &cmm_slots.objectCachesForFastPath;
}

/// The fork gate: a process-wide reader-writer lock (writer-preferring,
/// which needs glibc's non-portable attribute that Glibc hides from Swift).
/// Every allocator lock is taken inside a read hold of the gate; the
/// pthread_atfork prepare handler takes it for writing, so that no other
/// thread holds an allocator lock at the moment of fork.
void cmm_fork_gate_read_lock(void);
void cmm_fork_gate_read_unlock(void);
void cmm_fork_gate_write_lock(void);
void cmm_fork_gate_write_unlock(void);
/// Re-initialises the gate, unlocked (in a forked child, whose only thread
/// holds it for writing under the parent's thread id).
void cmm_fork_gate_reinit(void);

/// The kmalloc class index (0 = kmalloc-8 ... 9 = kmalloc-1k) of a request
/// of 1...1024 bytes, by eight-byte steps: entry `(size - 1) >> 3`. Data, not
/// logic: `SizeClass.index(forBytes:)` decides, and a test checks this table
/// against the class list. It lives in the header, as a constant, because
/// Swift has no constant array that another module's optimiser can see: here
/// every module that inlines the allocation fast path gets its contents, so a
/// request of constant size folds to its class, and a variable size is one
/// load instead of a chain of comparisons that mispredicts on mixed sizes.
static const unsigned char cmm_kmalloc_class_by_8_bytes[128] = {
    [0] = 0,           //    1 ...    8: kmalloc-8
    [1] = 1,           //    9 ...   16: kmalloc-16
    [2 ... 3] = 2,     //   17 ...   32: kmalloc-32
    [4 ... 7] = 3,     //   33 ...   64: kmalloc-64
    [8 ... 11] = 4,    //   65 ...   96: kmalloc-96
    [12 ... 15] = 5,   //   97 ...  128: kmalloc-128
    [16 ... 23] = 6,   //  129 ...  192: kmalloc-192
    [24 ... 31] = 7,   //  193 ...  256: kmalloc-256
    [32 ... 63] = 8,   //  257 ...  512: kmalloc-512
    [64 ... 127] = 9,  //  513 ... 1024: kmalloc-1k
};

/// `cmm_kmalloc_class_by_8_bytes[sizeMinusOne >> 3]`; `sizeMinusOne` must be below 1024.
static inline __attribute__((always_inline)) unsigned char cmm_kmalloc_class_small(size_t sizeMinusOne) {
    return cmm_kmalloc_class_by_8_bytes[sizeMinusOne >> 3];
}

#ifdef __cplusplus
}
#endif
#endif
