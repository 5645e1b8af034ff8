// SPDX-License-Identifier: Apache-2.0

/// The fixed sizes of the memory model, for callers that size their own
/// requests (all powers of two but the kmalloc classes 96 and 192).
extension MemorySystem {
    /// Bytes in a page of the arena. Kernel analogue: `PAGE_SIZE` on x86-64.
    public static let pageSize = MM.pageSize
    /// `log2(pageSize)`. Kernel analogue: `PAGE_SHIFT`.
    public static let pageShift = MM.pageShift
    /// Highest buddy order: blocks of 2^10 pages = 4 MiB. Kernel analogue: `MAX_PAGE_ORDER`.
    public static let maxOrder = MM.maxOrder
    /// Orders above this are "costly": guaranteed page requests may not ask
    /// for them (larger guaranteed byte requests are kvmalloc'd).
    /// Kernel analogue: `PAGE_ALLOC_COSTLY_ORDER`.
    public static let costlyOrder = MM.costlyOrder
    /// The largest physically contiguous allocation: one order-10 block (4 MiB).
    public static let maxContiguousBytes = MM.maxContiguousBytes
    /// The kmalloc size classes, 8 B … 8 KiB. Kernel analogue: `kmalloc_caches`.
    public static let kmallocSizes = MM.kmallocSizes
    /// The largest kmalloc class; larger byte requests take pages or vmalloc.
    /// Kernel analogue: `KMALLOC_MAX_CACHE_SIZE`.
    public static let kmallocMaxSize = MM.kmallocMaxSize
}
