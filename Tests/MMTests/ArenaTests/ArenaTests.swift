// SPDX-License-Identifier: Apache-2.0
import Glibc
@testable import MM
import Testing

@Suite("Arena")
struct ArenaTests {
    @Test("pointer to pfn is a subtraction: page n lives at directMap + n × 4096")
    func directMap() throws {
        let mm = try makeSystem(perThreadLists: false)
        let p = try #require(mm.allocatePages(order: 0))
        let pfn = (UInt(bitPattern: p) - UInt(bitPattern: mm.pageFastPath.directMap)) / UInt(pageSize)
        #expect(mm.pages.arena.address(ofPage: Int(pfn)) == p)
        #expect(mm.pages.arena.frames[Int(pfn)].state == PageState.allocated.rawValue)
    }

    @Test("the direct map starts on a 4 MiB boundary, so every block is aligned to its size in absolute addresses")
    func absoluteAlignment() throws {
        for _ in 0..<8 {
            let mm = try makeSystem(capacity: 8 << 20)
            #expect(UInt(bitPattern: mm.pageFastPath.directMap) % UInt(pageSize << maxOrder) == 0)
            for order in 0...maxOrder {
                let p = try #require(mm.allocatePages(order: order))
                #expect(UInt(bitPattern: p) % UInt(pageSize << order) == 0, "order \(order)")
                mm.freePages(p, order: order)
            }
        }
    }

    @Test("metadata is a separate mapping of at most 64 bytes per page")
    func metadataSeparate() throws {
        #expect(MemoryLayout<PageFrame>.stride <= 64)
        let mm = try makeSystem()
        let frames = UInt(bitPattern: mm.pages.arena.frames)
        let map = UInt(bitPattern: mm.pageFastPath.directMap)
        let capacity = UInt(mm.configuration.capacity)
        #expect(frames >= map + capacity || frames + UInt(mm.pages.arena.pageCount * MemoryLayout<PageFrame>.stride) <= map)
    }

    @Test("the direct map is private memory that forked children inherit copy-on-write (no MADV_DONTFORK)")
    func privateDirectMap() throws {
        let mm = try makeSystem()
        let start = String(UInt(bitPattern: mm.pageFastPath.directMap), radix: 16)
        let smaps = readWholeFile("/proc/self/smaps")
        let lines = smaps.split(separator: "\n")
        let header = try #require(lines.firstIndex { $0.hasPrefix(start + "-") }, "direct map not in smaps")
        #expect(lines[header].split(separator: " ")[1] == "rw-p", "\(lines[header])")
        let flags = try #require(lines[header...].first { $0.hasPrefix("VmFlags:") })
        #expect(!flags.split(separator: " ").contains("dc"), "VmFlags: \(flags)")
    }

    @Test("an idle 1 GiB arena keeps its resident memory under 4 MiB, also after use")
    func idleFootprint() throws {
        let mm = try makeSystem(capacity: 1 << 30, releaseDelay: .zero)
        let fresh = mm.statistics()
        #expect(fresh.residentBytes + fresh.metadataResidentBytes < 4 << 20)
        // Touch 64 MiB in order-0 to order-10 blocks, then free it all.
        var held: [(UnsafeMutableRawPointer, Int)] = []
        var bytes = 0
        var order = 0
        while bytes < 64 << 20 {
            let p = try #require(mm.allocatePages(order: order))
            stamp(p, order: order, tag: 7)
            held.append((p, order))
            bytes += pageSize << order
            order = (order + 1) % (maxOrder + 1)
        }
        #expect(mm.statistics().residentBytes >= 64 << 20)
        for (p, order) in held { mm.freePages(p, order: order) }
        mm.drainPerThreadLists()
        let idle = mm.statistics()
        #expect(idle.freeBytes == 1 << 30)
        #expect(idle.residentBytes + idle.metadataResidentBytes < 4 << 20,
                "resident \(idle.residentBytes >> 10) kB + metadata \(idle.metadataResidentBytes >> 10) kB")
        #expect(idle[counter: "pgrelease"] > 0)
        #expect(mm._invariantViolations() == [])
    }

    @Test("with a release delay, free memory stays warm until it has aged; releaseFreeMemory releases at once")
    func delayedRelease() throws {
        let mm = try makeSystem(capacity: 64 << 20, releaseDelay: .seconds(3600))
        let p = try #require(mm.allocatePages(order: maxOrder))
        stamp(p, order: maxOrder, tag: 1)
        mm.freePages(p, order: maxOrder)
        #expect(mm.statistics().residentBytes >= 4 << 20)
        let released = mm.releaseFreeMemory()
        #expect(released >= 4 << 20)
        #expect(mm.statistics().residentBytes < 4 << 20)
        // Released memory reads as zeros when it is handed out again.
        let q = try #require(mm.allocatePages(order: maxOrder))
        #expect(q.load(as: UInt64.self) == 0)
        #expect(mm._invariantViolations() == [])
    }

    @Test("warm blocks are reused before released ones")
    func warmFirst() throws {
        let mm = try makeSystem(capacity: 16 << 20, releaseDelay: .seconds(3600))
        mm.releaseFreeMemory()  // everything released (it starts as holes anyway)
        let p = try #require(mm.allocatePages(order: maxOrder))
        stamp(p, order: maxOrder, tag: 3)
        mm.freePages(p, order: maxOrder)  // warm again
        let q = try #require(mm.allocatePages(order: maxOrder))
        #expect(q == p)
    }
}

/// Reads a file to its end with read(2) (procfs files report size 0).
func readWholeFile(_ path: String) -> String {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
        if n <= 0 { break }
        bytes += buffer[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}
