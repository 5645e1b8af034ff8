// SPDX-License-Identifier: Apache-2.0
import CMMShims

/// The kmalloc size classes, in bytes: byte requests up to 8 KiB are served
/// from the object cache of the smallest class that holds them.
/// Kernel analogue: the `kmalloc-8` … `kmalloc-8k` caches (`kmalloc_info`).
@usableFromInline let kmallocSizes: [Int] = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192]

/// Number of kmalloc classes; they occupy cache indices `0..<kmallocClassCount`,
/// and their accounted twins (`kmalloc-cg-*`) the next `kmallocClassCount`.
@usableFromInline let kmallocClassCount = 13

/// Largest request served by a kmalloc class. Kernel analogue: `KMALLOC_MAX_CACHE_SIZE` (2 pages).
@usableFromInline let kmallocMaxSize = 8192

/// Size requests → kmalloc class index.
@usableFromInline
enum SizeClass {
    /// The class of a request of `byteCount` bytes, `1...kmallocMaxSize`.
    /// Kernel analogue: `kmalloc_index`.
    @inlinable @inline(__always)
    static func index(forBytes byteCount: Int) -> Int {
        // Up to 1 KiB one load from a constant table (CMMShims.h), which folds for a constant
        // size; above it the classes are powers of two.
        if byteCount <= 1024 { return Int(cmm_kmalloc_class_small(byteCount &- 1)) }
        return (Int.bitWidth &- (byteCount &- 1).leadingZeroBitCount) &- 1
    }
}
