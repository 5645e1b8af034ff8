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

// glibc's allocator under its exported internal names (GLIBC_2.2.5).
void *__libc_malloc(size_t size);
void __libc_free(void *pointer);
void *__libc_calloc(size_t count, size_t size);
void *__libc_realloc(void *pointer, size_t size);
void *__libc_memalign(size_t alignment, size_t size);

/// glibc's malloc_usable_size, for pointers glibc allocated (looked up once with RTLD_NEXT).
size_t cmm_libc_usable_size(void *pointer);

/// Whether the program's main() has started (every library constructor has
/// run): swift-mm serves allocations from then on.
int cmm_malloc_is_constructed(void);

/// Sets errno (a macro Swift cannot assign through).
void cmm_set_errno(int value);

#ifdef __cplusplus
}
#endif
#endif
