// SPDX-License-Identifier: Apache-2.0
// The C allocation functions of libmmmalloc.so: thin forwarders to the Swift
// entry points of MMMalloc (ProcessAllocator+Entry.swift), where every
// decision is made.

#include "CMMMalloc.h"
#include "public/mmmalloc.h"
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// swift-mm serves allocations once the program's main() starts: by then every
// library constructor (libstdc++'s, the Swift runtime's) has run, in whatever
// order the loader chose. Before that, glibc serves them (and frees them later).
// The system is created right before main(), outside any allocation (see
// ProcessAllocator.swift). glibc hides the start of main() from Swift:
// wrapping __libc_start_main is the one way to see it, for LD_PRELOAD and for
// a program that links the library.
typedef int (*cmm_main_fn)(int, char **, char **);
static cmm_main_fn cmm_real_main = 0;
__attribute__((visibility("hidden"))) void mm_process_start(void);

static int cmm_wrapped_main(int argc, char **argv, char **envp) {
    mm_process_start();
    return cmm_real_main(argc, argv, envp);
}

int __libc_start_main(cmm_main_fn main, int argc, char **argv, void (*init)(void), void (*fini)(void),
                      void (*rtld_fini)(void), void *stack_end) {
    typedef int (*start_fn)(cmm_main_fn, int, char **, void (*)(void), void (*)(void), void (*)(void), void *);
    start_fn real = (start_fn)dlsym(RTLD_NEXT, "__libc_start_main");
    cmm_real_main = main;
    return real(cmm_wrapped_main, argc, argv, init, fini, rtld_fini, stack_end);
}


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

// glibc's allocator behind RTLD_NEXT (see CMMMalloc.h). State 0: not looked up,
// 1: a thread is looking it up, 2: ready.
static struct {
    void *(*malloc)(size_t);
    void (*free)(void *);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void *(*memalign)(size_t, size_t);
    size_t (*usable_size)(void *);
} cmm_glibc;
static int cmm_glibc_state = 0;
static _Thread_local int cmm_glibc_resolving __attribute__((tls_model("initial-exec")));

// The bootstrap region: a bump allocator whose blocks carry their size in the
// 16 bytes before them. Blocks are never reused; the region serves only the
// allocations made while glibc's functions are being looked up.
#define CMM_BOOTSTRAP_BYTES (64 << 10)
static unsigned char cmm_bootstrap[CMM_BOOTSTRAP_BYTES] __attribute__((aligned(4096)));
static size_t cmm_bootstrap_used = 0;

static int cmm_in_bootstrap(const void *pointer) {
    return (const unsigned char *)pointer >= cmm_bootstrap && (const unsigned char *)pointer < cmm_bootstrap + CMM_BOOTSTRAP_BYTES;
}

static void *cmm_bootstrap_alloc(size_t alignment, size_t size) {
    if (alignment < 16) alignment = 16;
    if (size > CMM_BOOTSTRAP_BYTES || alignment > 4096) { errno = ENOMEM; return 0; }
    size_t used = __atomic_load_n(&cmm_bootstrap_used, __ATOMIC_RELAXED);
    for (;;) {
        size_t start = (used + 16 + alignment - 1) & ~(alignment - 1);
        size_t end = (start + size + 15) & ~(size_t)15;
        if (end > CMM_BOOTSTRAP_BYTES) { errno = ENOMEM; return 0; }
        if (__atomic_compare_exchange_n(&cmm_bootstrap_used, &used, end, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            *(size_t *)(cmm_bootstrap + start - 16) = size;
            return cmm_bootstrap + start;  // static storage: zero-filled, never handed out twice
        }
    }
}

// Whether glibc's functions are ready; looks them up on the first call. False
// only for a call made on the looking-up thread while it looks them up.
static int cmm_glibc_ready(void) {
    if (__atomic_load_n(&cmm_glibc_state, __ATOMIC_ACQUIRE) == 2) return 1;
    if (cmm_glibc_resolving) return 0;
    int expected = 0;
    if (!__atomic_compare_exchange_n(&cmm_glibc_state, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&cmm_glibc_state, __ATOMIC_ACQUIRE) != 2) sched_yield();
        return 1;
    }
    cmm_glibc_resolving = 1;
    cmm_glibc.malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "__libc_malloc");
    cmm_glibc.free = (void (*)(void *))dlsym(RTLD_NEXT, "__libc_free");
    cmm_glibc.calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "__libc_calloc");
    cmm_glibc.realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "__libc_realloc");
    cmm_glibc.memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "__libc_memalign");
    cmm_glibc.usable_size = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
    cmm_glibc_resolving = 0;
    if (!cmm_glibc.malloc || !cmm_glibc.free || !cmm_glibc.calloc || !cmm_glibc.realloc || !cmm_glibc.memalign || !cmm_glibc.usable_size) {
        static const char message[] = "libmmmalloc: glibc's allocator (__libc_malloc and the rest) was not found after this library\n";
        (void)!write(2, message, sizeof message - 1);
        abort();
    }
    __atomic_store_n(&cmm_glibc_state, 2, __ATOMIC_RELEASE);
    return 1;
}

void *cmm_glibc_malloc(size_t size) { return cmm_glibc_ready() ? cmm_glibc.malloc(size) : cmm_bootstrap_alloc(16, size); }
void *cmm_glibc_memalign(size_t alignment, size_t size) {
    return cmm_glibc_ready() ? cmm_glibc.memalign(alignment, size) : cmm_bootstrap_alloc(alignment, size);
}
void *cmm_glibc_calloc(size_t count, size_t size) {
    if (cmm_glibc_ready()) return cmm_glibc.calloc(count, size);
    size_t bytes;
    if (__builtin_mul_overflow(count, size, &bytes)) { errno = ENOMEM; return 0; }
    return cmm_bootstrap_alloc(16, bytes);
}
void cmm_glibc_free(void *pointer) {
    if (!pointer || cmm_in_bootstrap(pointer)) return;
    if (cmm_glibc_ready()) cmm_glibc.free(pointer);
}
size_t cmm_glibc_usable_size(void *pointer) {
    if (!pointer) return 0;
    if (cmm_in_bootstrap(pointer)) return *(size_t *)((unsigned char *)pointer - 16);
    return cmm_glibc_ready() ? cmm_glibc.usable_size(pointer) : 0;
}
void *cmm_glibc_realloc(void *pointer, size_t size) {
    if (!pointer || !cmm_in_bootstrap(pointer)) {
        if (cmm_glibc_ready()) return cmm_glibc.realloc(pointer, size);
        return pointer ? 0 : cmm_bootstrap_alloc(16, size);
    }
    size_t old = *(size_t *)((unsigned char *)pointer - 16);
    void *moved = cmm_glibc_malloc(size);
    if (moved) memcpy(moved, pointer, old < size ? old : size);
    return moved;
}

// Swift entry points (hidden: the forwarders below reach them without the PLT).
#define CMM_HIDDEN __attribute__((visibility("hidden")))
CMM_HIDDEN void *mm_process_malloc(size_t size);
CMM_HIDDEN void mm_process_free(void *pointer);
CMM_HIDDEN void *mm_process_calloc(size_t count, size_t size);
CMM_HIDDEN void *mm_process_realloc(void *pointer, size_t size);
CMM_HIDDEN void *mm_process_reallocarray(void *pointer, size_t count, size_t size);
CMM_HIDDEN int mm_process_posix_memalign(void **result, size_t alignment, size_t size);
CMM_HIDDEN void *mm_process_aligned(size_t alignment, size_t size, int pageRounded);
CMM_HIDDEN size_t mm_process_usable_size(void *pointer);

// The forwarders whose arguments are the entry's, in the same registers, are
// one jump: a C function here would add a frame (push, mov, pop) to every
// call. Elsewhere than x86-64 and AArch64 they are plain calls.
#if defined(__x86_64__) || defined(__aarch64__)
#if defined(__x86_64__)
#define CMM_JUMP(target) __asm__ volatile("jmp " #target)
#else
#define CMM_JUMP(target) __asm__ volatile("b " #target)
#endif
#define CMM_FORWARD(ret, name, params, target, args) __attribute__((naked)) ret name params { CMM_JUMP(target); }
#define CMM_FORWARD_VOID(name, params, target, args) __attribute__((naked)) void name params { CMM_JUMP(target); }
#else
#define CMM_FORWARD(ret, name, params, target, args) ret name params { return target args; }
#define CMM_FORWARD_VOID(name, params, target, args) void name params { target args; }
#endif

CMM_FORWARD(void *, malloc, (size_t size), mm_process_malloc, (size))
CMM_FORWARD_VOID(free, (void *pointer), mm_process_free, (pointer))
CMM_FORWARD(void *, calloc, (size_t count, size_t size), mm_process_calloc, (count, size))
CMM_FORWARD(void *, realloc, (void *pointer, size_t size), mm_process_realloc, (pointer, size))
CMM_FORWARD(void *, reallocarray, (void *pointer, size_t count, size_t size), mm_process_reallocarray, (pointer, count, size))
CMM_FORWARD(int, posix_memalign, (void **result, size_t alignment, size_t size), mm_process_posix_memalign, (result, alignment, size))
void *aligned_alloc(size_t alignment, size_t size) { return mm_process_aligned(alignment, size, 0); }
void *memalign(size_t alignment, size_t size) { return mm_process_aligned(alignment, size, 0); }
void *valloc(size_t size) { return mm_process_aligned(4096, size, 0); }
void *pvalloc(size_t size) { return mm_process_aligned(4096, size, 1); }
CMM_FORWARD(size_t, malloc_usable_size, (void *pointer), mm_process_usable_size, (pointer))
// The size and alignment go unused: the pointer's metadata has them.
CMM_FORWARD_VOID(free_sized, (void *pointer, size_t size), mm_process_free, (pointer))
CMM_FORWARD_VOID(free_aligned_sized, (void *pointer, size_t alignment, size_t size), mm_process_free, (pointer))

// glibc's internal names for the same functions, which a program (or a
// library) may call directly: taken over too, so that a pointer from
// `malloc` given to `__libc_free`, or the other way round, goes to the
// allocator that owns it (glibc's own calls inside libc do not come here).
CMM_FORWARD(void *, __libc_malloc, (size_t size), mm_process_malloc, (size))
CMM_FORWARD_VOID(__libc_free, (void *pointer), mm_process_free, (pointer))
CMM_FORWARD(void *, __libc_calloc, (size_t count, size_t size), mm_process_calloc, (count, size))
CMM_FORWARD(void *, __libc_realloc, (void *pointer, size_t size), mm_process_realloc, (pointer, size))
void *__libc_memalign(size_t alignment, size_t size) { return mm_process_aligned(alignment, size, 0); }
void *__libc_valloc(size_t size) { return mm_process_aligned(4096, size, 0); }
void *__libc_pvalloc(size_t size) { return mm_process_aligned(4096, size, 1); }

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
