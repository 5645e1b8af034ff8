// SPDX-License-Identifier: Apache-2.0
// The C allocation functions of libmmmalloc.so: thin forwarders to the Swift
// entry points of MMMalloc (ProcessAllocator+Entry.swift), where every
// decision is made.

#include "CMMMalloc.h"
#include "public/mmmalloc.h"
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>

// swift-mm serves allocations once the program's main() starts: by then every
// library constructor (libstdc++'s, the Swift runtime's) has run, in whatever
// order the loader chose. Before that, glibc serves them (and frees them later).
// glibc hides the start of main() from Swift: wrapping __libc_start_main is
// the one way to see it, for LD_PRELOAD and for a program that links the library.
static int cmm_main_started = 0;
typedef int (*cmm_main_fn)(int, char **, char **);
static cmm_main_fn cmm_real_main = 0;

static int cmm_wrapped_main(int argc, char **argv, char **envp) {
    __atomic_store_n(&cmm_main_started, 1, __ATOMIC_RELEASE);
    return cmm_real_main(argc, argv, envp);
}

int __libc_start_main(cmm_main_fn main, int argc, char **argv, void (*init)(void), void (*fini)(void),
                      void (*rtld_fini)(void), void *stack_end) {
    typedef int (*start_fn)(cmm_main_fn, int, char **, void (*)(void), void (*)(void), void (*)(void), void *);
    start_fn real = (start_fn)dlsym(RTLD_NEXT, "__libc_start_main");
    cmm_real_main = main;
    return real(cmm_wrapped_main, argc, argv, init, fini, rtld_fini, stack_end);
}

int cmm_malloc_is_constructed(void) { return __atomic_load_n(&cmm_main_started, __ATOMIC_ACQUIRE); }

void cmm_set_errno(int value) { errno = value; }

const unsigned char cmm_poison_page[4096] = { [0 ... 4095] = 0x6b };
int cmm_guarded_on = 0;
unsigned long cmm_guarded_secret = 0;
void cmm_guarded_turn_on(unsigned long secret) { cmm_guarded_secret = secret; cmm_guarded_on = 1; }

_Thread_local cmm_quarantine cmm_thread_quarantine __attribute__((tls_model("initial-exec")));
void mm_process_quarantine_flush(void);
static pthread_key_t cmm_quarantine_key;
static pthread_once_t cmm_quarantine_key_once = PTHREAD_ONCE_INIT;
static void cmm_quarantine_thread_exit(void *unused) { (void)unused; mm_process_quarantine_flush(); }
static void cmm_quarantine_make_key(void) { pthread_key_create(&cmm_quarantine_key, cmm_quarantine_thread_exit); }
void cmm_quarantine_arm_thread_exit(void) {
    pthread_once(&cmm_quarantine_key_once, cmm_quarantine_make_key);
    pthread_setspecific(cmm_quarantine_key, (void *)1);
    cmm_thread_quarantine.registered = 1;
}
int cmm_process_policy_kind = 0;
void cmm_set_policy_kind(int kind) { cmm_process_policy_kind = kind; }

size_t cmm_libc_usable_size(void *pointer) {
    static size_t (*libc)(void *) = 0;
    if (!libc) libc = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
    return libc ? libc(pointer) : 0;
}

// Swift entry points.
void *mm_process_malloc(size_t size);
void mm_process_free(void *pointer);
void *mm_process_calloc(size_t count, size_t size);
void *mm_process_realloc(void *pointer, size_t size);
void *mm_process_reallocarray(void *pointer, size_t count, size_t size);
int mm_process_posix_memalign(void **result, size_t alignment, size_t size);
void *mm_process_aligned(size_t alignment, size_t size, int pageRounded);
size_t mm_process_usable_size(void *pointer);

void *malloc(size_t size) { return mm_process_malloc(size); }
void free(void *pointer) { mm_process_free(pointer); }
void *calloc(size_t count, size_t size) { return mm_process_calloc(count, size); }
void *realloc(void *pointer, size_t size) { return mm_process_realloc(pointer, size); }
void *reallocarray(void *pointer, size_t count, size_t size) { return mm_process_reallocarray(pointer, count, size); }
int posix_memalign(void **result, size_t alignment, size_t size) { return mm_process_posix_memalign(result, alignment, size); }
void *aligned_alloc(size_t alignment, size_t size) { return mm_process_aligned(alignment, size, 0); }
void *memalign(size_t alignment, size_t size) { return mm_process_aligned(alignment, size, 0); }
void *valloc(size_t size) { return mm_process_aligned(4096, size, 0); }
void *pvalloc(size_t size) { return mm_process_aligned(4096, size, 1); }
size_t malloc_usable_size(void *pointer) { return mm_process_usable_size(pointer); }
void free_sized(void *pointer, size_t size) { (void)size; mm_process_free(pointer); }
void free_aligned_sized(void *pointer, size_t alignment, size_t size) { (void)alignment; (void)size; mm_process_free(pointer); }

// mmmalloc.h
uint64_t mm_process_scope_enter(unsigned flags);
void mm_process_scope_exit(uint64_t token);
void *mm_process_malloc_policy(size_t size, int policy);
int mm_process_register_shrinker(const char *name, mm_count_fn count, mm_scan_fn scan, void *context);
void mm_process_unregister_shrinker(int handle);
void mm_process_stats_print(int fd);

uint64_t mm_scope_enter(unsigned flags) { return mm_process_scope_enter(flags); }
void mm_scope_exit(uint64_t token) { mm_process_scope_exit(token); }
void *mm_malloc_policy(size_t size, int policy) { return mm_process_malloc_policy(size, policy); }
int mm_register_shrinker(const char *name, mm_count_fn count, mm_scan_fn scan, void *context) {
    return mm_process_register_shrinker(name, count, scan, context);
}
void mm_unregister_shrinker(int handle) { mm_process_unregister_shrinker(handle); }
void mm_stats_print(int fd) { mm_process_stats_print(fd); }
