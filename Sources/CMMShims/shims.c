// SPDX-License-Identifier: Apache-2.0
#include "CMMShims.h"
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>

__attribute__((aligned(4096))) unsigned char cmm_empty_object_caches[CMM_EMPTY_OBJECT_CACHES_BYTES];

// Every thread starts with its magazine slots on the empty record (a copy of
// this initial image is every new thread's), never NULL.
_Thread_local cmm_thread_slots cmm_slots __attribute__((tls_model("initial-exec"))) = {
    .objectCaches = cmm_empty_object_caches,
    .objectCachesForFastPath = cmm_empty_object_caches,
    .objectCachesForMalloc = cmm_empty_object_caches,
};

unsigned long long cmm_malloc_magazines = 0;
void cmm_set_malloc_magazines(unsigned long long key) { __atomic_store_n(&cmm_malloc_magazines, key, __ATOMIC_RELEASE); }

__attribute__((constructor)) static void cmm_protect_empty_object_caches(void) {
    mprotect(cmm_empty_object_caches, sizeof cmm_empty_object_caches, PROT_READ);
}

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

int cmm_name_mapping(void *address, size_t length, const char *name) {
    return prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)address, length, (unsigned long)name);
}


static pthread_rwlock_t cmm_fork_gate = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

void cmm_fork_gate_read_lock(void) { pthread_rwlock_rdlock(&cmm_fork_gate); }
void cmm_fork_gate_read_unlock(void) { pthread_rwlock_unlock(&cmm_fork_gate); }
void cmm_fork_gate_write_lock(void) { pthread_rwlock_wrlock(&cmm_fork_gate); }
void cmm_fork_gate_write_unlock(void) { pthread_rwlock_unlock(&cmm_fork_gate); }

void cmm_fork_gate_reinit(void) {
    pthread_rwlock_t fresh = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
    cmm_fork_gate = fresh;
}
