// SPDX-License-Identifier: Apache-2.0
import Glibc
import MM
@_spi(CustomByteBufferAllocator) import NIOCore

/// The system NIO's buffers come from: `MemorySystem.shared`, taken once
/// (NIO's hooks are C function pointers and cannot carry a system).
private let bufferSystem = MemorySystem.shared

extension ByteBufferAllocator {
    /// A `ByteBufferAllocator` whose buffers are allocated from
    /// `MemorySystem.shared` (configure it first with
    /// `MemorySystem.configureShared(_:)` to choose its budget; with
    /// libmmmalloc loaded it is the process allocator's system).
    ///
    /// NIO force-unwraps what its allocation hooks return, so every buffer is
    /// a guaranteed allocation (`.retryForever`): under pressure an event
    /// loop waits for reclaim instead of crashing. Growth is `reallocate`,
    /// in place when the allocation's size class allows.
    ///
    /// ```swift
    /// try MemorySystem.configureShared(.sized(for: .current()))
    /// let allocator = ByteBufferAllocator.memorySystem
    /// var buffer = allocator.buffer(capacity: 4096)
    /// ```
    /// Kernel analogue: none; the network stack's `alloc_skb` on top of kmalloc.
    public static var memorySystem: ByteBufferAllocator {
        ByteBufferAllocator(allocate: mmNIOAllocate, reallocate: mmNIOReallocate,
                            deallocate: mmNIODeallocate, copy: mmNIOCopy)
    }
}

private func mmNIOAllocate(_ size: Int) -> UnsafeMutableRawPointer? {
    bufferSystem.allocateGuaranteed(byteCount: Swift.max(1, size))
}

private func mmNIOReallocate(_ pointer: UnsafeMutableRawPointer?, _ oldSize: Int, _ newSize: Int) -> UnsafeMutableRawPointer? {
    let size = Swift.max(1, newSize)
    guard let pointer else { return bufferSystem.allocateGuaranteed(byteCount: size) }
    // krealloc semantics: in place while it fits; on failure the old allocation is untouched.
    if let moved = bufferSystem.reallocate(pointer, byteCount: size) { return moved }
    let fresh = bufferSystem.allocateGuaranteed(byteCount: size)
    fresh.copyMemory(from: pointer, byteCount: Swift.min(oldSize, size))
    bufferSystem.deallocate(pointer)
    return fresh
}

private func mmNIODeallocate(_ pointer: UnsafeMutableRawPointer) {
    bufferSystem.deallocate(pointer)
}

private func mmNIOCopy(_ destination: UnsafeMutableRawPointer, _ source: UnsafeRawPointer, _ count: Int) {
    destination.copyMemory(from: source, byteCount: count)
}
