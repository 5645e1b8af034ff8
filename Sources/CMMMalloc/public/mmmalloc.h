// SPDX-License-Identifier: Apache-2.0
// mmmalloc.h: what a C program can ask of the swift-mm system behind its
// malloc (libmmmalloc.so, linked or LD_PRELOADed). Link with -lmmmalloc, or
// look the functions up with dlsym when the library may be absent.
#ifndef MMMALLOC_H
#define MMMALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Scope kinds for mm_scope_enter, combinable with |. Kernel analogues in brackets.
enum {
    MM_SCOPE_NOFS = 1 << 0,               // no reclaim that may enter the filesystem [memalloc_nofs_save]
    MM_SCOPE_NOIO = 1 << 1,               // no reclaim that may do I/O (implies NOFS) [memalloc_noio_save]
    MM_SCOPE_NO_DIRECT_RECLAIM = 1 << 2,  // wait for background reclaim instead of reclaiming
    MM_SCOPE_NONBLOCKING = 1 << 3,        // never sleep [GFP_NOWAIT as a scope]
    MM_SCOPE_RETRY_FOREVER = 1 << 4,      // blocking allocations never fail; no OOM kill, no reserves
    MM_SCOPE_USE_RESERVES = 1 << 5,       // blocking allocations never fail; may OOM-kill and use reserves [__GFP_NOFAIL]
    MM_SCOPE_QUIET = 1 << 6,              // failures are not reported [__GFP_NOWARN]
};

/// Enters a scope on the calling thread: every allocation it makes, by
/// anyone, follows it until mm_scope_exit. Returns a token; 0 when the
/// process allocator is not serving this process. Scopes nest (R1: an inner
/// one never lifts an outer restriction).
uint64_t mm_scope_enter(unsigned flags);

/// Leaves the scope of `token` (on the thread that entered it; anything else
/// is reported and changes nothing).
void mm_scope_exit(uint64_t token);

/// Policies of mm_malloc_policy. The guaranteed ones never return NULL.
enum {
    MM_POLICY_STANDARD = 0,               // GFP_KERNEL: reclaim, retry, OOM, then NULL
    MM_POLICY_FAIL_FAST = 1,              // __GFP_NORETRY
    MM_POLICY_RETRY_WHILE_PROGRESS = 2,   // __GFP_RETRY_MAYFAIL
    MM_POLICY_NONBLOCKING = 3,            // GFP_NOWAIT
    MM_POLICY_ATOMIC = 4,                 // GFP_ATOMIC: non-blocking, may use the atomic reserve
    MM_POLICY_RETRY_FOREVER = 5,          // guaranteed: waits as long as it takes
    MM_POLICY_USE_RESERVES = 6,           // guaranteed: __GFP_NOFAIL
};

/// malloc with a policy; free the result with free(). NULL (errno ENOMEM) on
/// failure, or EINVAL for an unknown policy.
void *mm_malloc_policy(size_t size, int policy);

/// A cache that reclaim may shrink. count returns a cheap estimate of the
/// objects it could free; scan frees up to `to_scan` of them and returns how
/// many it freed, or -1 to say "stop: freeing now could deadlock". Both run on
/// reclaim's own threads (the background reclaimer, the shrinker helpers),
/// concurrently with the program: guard the cache with a lock, and never
/// allocate or free while holding it.
typedef size_t (*mm_count_fn)(void *context);
typedef long (*mm_scan_fn)(void *context, size_t to_scan);

/// Registers a shrinker; returns a positive handle, or -1 when the process
/// allocator is not serving this process.
int mm_register_shrinker(const char *name, mm_count_fn count, mm_scan_fn scan, void *context);

/// Unregisters the shrinker of `handle` (returns after any call in progress).
void mm_unregister_shrinker(int handle);

/// Writes meminfo, buddyinfo, slabinfo and vmstat of the system to `fd`.
void mm_stats_print(int fd);

#ifdef __cplusplus
}
#endif
#endif
