// SPDX-License-Identifier: Apache-2.0
import Glibc

/// How much of an address range the kernel backs with memory, by
/// `mincore(2)` (one byte of answer per page, asked in chunks).
/// Kernel analogue: the `Rss` that `/proc/PID/smaps` reports for a mapping.
enum ResidentMemory {
    /// Pages asked about per `mincore` call (a 64 KiB answer vector).
    private static let chunkPages = 1 << 16

    /// Resident bytes in `[address, address + length)` (page-aligned); -1 if
    /// the kernel refuses (for example, part of the range is unmapped).
    static func bytes(at address: UnsafeMutableRawPointer, length: Int) -> Int {
        let pages = length >> pageShift
        guard pages > 0 else { return 0 }
        var vector = [UInt8](repeating: 0, count: min(pages, chunkPages))
        var resident = 0
        var page = 0
        while page < pages {
            let n = min(chunkPages, pages - page)
            let rc = vector.withUnsafeMutableBufferPointer {
                mincore(address + (page << pageShift), n << pageShift, $0.baseAddress)
            }
            guard rc == 0 else { return -1 }
            for i in 0..<n where vector[i] & 1 != 0 { resident += 1 }
            page += n
        }
        return resident << pageShift
    }
}
