// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Glibc

/// An `errno` value with its `strerror` text, as thrown by the syscall layer.
public struct SystemError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The failing call, e.g. `"mmap"`.
    public var call: String
    /// The `errno` value the call left behind.
    public var errno: Int32

    /// A one-line description, as events and reports print it.
    public var description: String {
        "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// The system calls the arena makes, as a table of functions so tests can make
/// any of them fail (the approach of swift-system's `Mocking.swift`, without a
/// build flag: the table is a value passed to the arena).
///
/// Every entry returns `Result` instead of the C convention of `-1` + `errno`.
struct Syscalls: Sendable {
    /// Maps `length` bytes of private anonymous memory (`MAP_NORESERVE`) at an
    /// address that is a multiple of `alignment`.
    var mapPrivate: @Sendable (_ length: Int, _ alignment: Int) -> Result<UnsafeMutableRawPointer, SystemError>
    var mapAnonymous: @Sendable (_ length: Int) -> Result<UnsafeMutableRawPointer, SystemError>
    var advise: @Sendable (_ address: UnsafeMutableRawPointer, _ length: Int, _ advice: Int32) -> Result<Void, SystemError>
    /// Reserves `length` bytes of address space (`PROT_NONE`).
    var reserve: @Sendable (_ length: Int) -> Result<UnsafeMutableRawPointer, SystemError>
    /// Maps fresh private anonymous memory over part of a reservation (`MAP_FIXED`).
    var mapFixed: @Sendable (_ address: UnsafeMutableRawPointer, _ length: Int) -> Result<Void, SystemError>
    /// Turns a range back into reserved address space, dropping its memory.
    var unmapToReserved: @Sendable (_ address: UnsafeMutableRawPointer, _ length: Int) -> Result<Void, SystemError>

    /// The real system calls.
    static let live = Syscalls(
        mapPrivate: { length, alignment in
            // Reserve enough to align, map over the aligned part, return the slack.
            let span = length + alignment
            let r = mmap(nil, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            guard let r, r != MAP_FAILED else { return .failure(SystemError(call: "mmap", errno: Glibc.errno)) }
            let base = UInt(bitPattern: r)
            let aligned = (base + UInt(alignment) - 1) & ~(UInt(alignment) - 1)
            let start = UnsafeMutableRawPointer(bitPattern: aligned)!
            let p = mmap(start, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0)
            guard let p, p != MAP_FAILED else {
                let error = SystemError(call: "mmap", errno: Glibc.errno)
                munmap(r, span)
                return .failure(error)
            }
            if aligned > base { munmap(r, Int(aligned - base)) }
            let end = aligned + UInt(length)
            if base + UInt(span) > end { munmap(UnsafeMutableRawPointer(bitPattern: end)!, Int(base + UInt(span) - end)) }
            return .success(p)
        },
        mapAnonymous: { length in
            let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            guard let p, p != MAP_FAILED else { return .failure(SystemError(call: "mmap", errno: Glibc.errno)) }
            return .success(p)
        },
        advise: { address, length, advice in
            madvise(address, length, advice) == 0
                ? .success(()) : .failure(SystemError(call: "madvise", errno: Glibc.errno))
        },
        reserve: { length in
            let p = mmap(nil, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            guard let p, p != MAP_FAILED else { return .failure(SystemError(call: "mmap(PROT_NONE)", errno: Glibc.errno)) }
            return .success(p)
        },
        mapFixed: { address, length in
            let p = mmap(address, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0)
            guard let p, p != MAP_FAILED else { return .failure(SystemError(call: "mmap(MAP_FIXED)", errno: Glibc.errno)) }
            return .success(())
        },
        unmapToReserved: { address, length in
            let p = mmap(address, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0)
            guard let p, p != MAP_FAILED else { return .failure(SystemError(call: "mmap(PROT_NONE, MAP_FIXED)", errno: Glibc.errno)) }
            return .success(())
        }
    )
}
