// SPDX-License-Identifier: Apache-2.0
#include "CMMShims.h"
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/syscall.h>

_Thread_local cmm_thread_slots cmm_slots __attribute__((tls_model("initial-exec")));

int cmm_memfd_create(const char *name) {
    return memfd_create(name, MFD_CLOEXEC);
}

int cmm_punch_hole(int fd, off_t offset, off_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

pid_t cmm_gettid(void) {
    return (pid_t)syscall(SYS_gettid);
}

void __tsan_acquire(void *addr) __attribute__((weak));
void __tsan_release(void *addr) __attribute__((weak));

void cmm_tsan_acquire(void *address) {
    if (__tsan_acquire) __tsan_acquire(address);
}

void cmm_tsan_release(void *address) {
    if (__tsan_release) __tsan_release(address);
}
