// SPDX-License-Identifier: Apache-2.0
import Glibc
import MM
import MMNIO
import NIOCacheServer
import NIOCore
import Synchronization
import Testing

/// A keep-alive HTTP/1.1 client over a blocking loopback socket: the load generator.
private struct LoopbackClient: ~Copyable {
    let fd: Int32
    var pending: [UInt8] = []

    init?(port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { close(fd); return nil }
        self.fd = fd
    }

    deinit { close(fd) }

    /// GET `path`; the status and the body, or nil on a broken connection.
    mutating func get(_ path: String) -> (status: Int, body: [UInt8])? {
        let request = Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
        // Headers up to the blank line.
        var headerEnd: Int?
        while headerEnd == nil {
            if let i = find([13, 10, 13, 10]) { headerEnd = i; break }
            guard fill() else { return nil }
        }
        let header = String(decoding: pending[0..<headerEnd!], as: UTF8.self)
        pending.removeFirst(headerEnd! + 4)
        let lines = header.split(separator: "\r\n")
        guard let statusLine = lines.first, let status = Int(statusLine.split(separator: " ")[1]) else { return nil }
        let length = lines.compactMap { line -> Int? in
            let parts = line.split(separator: ":", maxSplits: 1)
            return parts.count == 2 && parts[0].lowercased() == "content-length"
                ? Int(parts[1].trimmingPrefix(" ")) : nil
        }.first ?? 0
        while pending.count < length { guard fill() else { return nil } }
        let body = Array(pending[0..<length])
        pending.removeFirst(length)
        return (status, body)
    }

    private func find(_ needle: [UInt8]) -> Int? {
        guard pending.count >= needle.count else { return nil }
        for i in 0...(pending.count - needle.count) where pending[i] == needle[0] && Array(pending[i..<i + needle.count]) == needle {
            return i
        }
        return nil
    }

    private mutating func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return false }
        pending += chunk[0..<n]
        return true
    }
}

@Suite("SwiftNIO on swift-mm", .serialized, .timeLimit(.minutes(3)))
struct NIOCacheServerTests {
    @Test("ByteBufferAllocator.memorySystem: buffers come from MemorySystem.shared, grow, and are freed")
    func allocator() {
        let mm = MemorySystem.shared
        let before = mm.statistics()[counter: "pgalloc"] + mm.statistics().slabCaches.reduce(0) { $0 + $1.activeObjects }
        let allocator = ByteBufferAllocator.memorySystem
        do {
            var buffer = allocator.buffer(capacity: 100)
            buffer.writeString("hello, swift-mm")
            buffer.writeBytes([UInt8](repeating: 7, count: 200_000))   // grows by reallocate
            #expect(buffer.readableBytes == 200_015)
            #expect(buffer.readString(length: 15) == "hello, swift-mm")
            #expect(buffer.readBytes(length: 200_000)?.allSatisfy { $0 == 7 } == true)
            #expect(buffer.withUnsafeReadableBytes { mm.owns($0.baseAddress!) })
        }
        let after = mm.statistics()[counter: "pgalloc"] + mm.statistics().slabCaches.reduce(0) { $0 + $1.activeObjects }
        #expect(after > before)
    }

    @Test("the example server under load in a 64 MiB budget: the cache sheds, the budget holds, no request fails",
          .timeLimit(.minutes(3)))
    func serverUnderLoad() throws {
        let mm = MemorySystem.shared
        let previousLimit = mm.limit
        mm.setLimit(64 << 20)
        defer { mm.setLimit(previousLimit) }
        let server = try CacheServer(system: mm, responseBytes: 64 << 10, threads: 1)
        defer { try? server.shutdown() }
        let port = server.port
        let stop = Atomic<Bool>(false)
        let peakUsed = Atomic<Int>(0)
        let sampler = BackgroundThread {
            while !stop.load(ordering: .relaxed) {
                let s = mm.statistics()
                let used = s.limit - s.freeBytes
                if used > peakUsed.load(ordering: .relaxed) { peakUsed.store(used, ordering: .relaxed) }
                sleep(milliseconds: 5)
            }
        }
        let ok = Atomic<Int>(0), wrong = Atomic<Int>(0)
        let finished = watchdog("the load generator", seconds: 100) {
            runThreads(2) { t in
                guard var client = LoopbackClient(port: port) else {
                    wrong.wrappingAdd(1, ordering: .relaxed)
                    return
                }
                var rng = SeededGenerator(seed: UInt64(t + 11))
                // At least 2.5 s, and on until the cache has had to shed (a loaded
                // machine serves fewer requests per second), at most 60 s.
                let start = ContinuousClock.now
                func shed() -> Bool {
                    server.cache.evictions.load(ordering: .relaxed) + server.cache.skippedInserts.load(ordering: .relaxed) > 0
                }
                while ContinuousClock.now - start < .milliseconds(2500)
                        || (!shed() && ContinuousClock.now - start < .seconds(60)) {
                    let n = Int(rng.next() % 3000)        // 3000 × 64 KiB = 187 MiB of distinct answers
                    guard let (status, body) = client.get("/item/\(n)"), status == 200, body.count == 64 << 10,
                          body[0] == UInt8(truncatingIfNeeded: n), body[body.count - 1] == UInt8(truncatingIfNeeded: n + body.count - 1)
                    else {
                        wrong.wrappingAdd(1, ordering: .relaxed)
                        return
                    }
                    ok.wrappingAdd(1, ordering: .relaxed)
                }
            }
        }
        stop.store(true, ordering: .relaxed)
        sampler.join()
        #expect(finished)
        #expect(wrong.load(ordering: .relaxed) == 0, "requests failed or came back wrong")
        #expect(server.counters.failed.load(ordering: .relaxed) == 0)
        #expect(ok.load(ordering: .relaxed) >= 100)
        #expect(peakUsed.load(ordering: .relaxed) <= 64 << 20, "usage went above the 64 MiB budget")
        #expect(server.cache.evictions.load(ordering: .relaxed) + server.cache.skippedInserts.load(ordering: .relaxed) > 0,
                "the cache never had to shed: the load did not reach the budget")
        print("NIO cache server: \(ok.load(ordering: .relaxed)) requests, peak \(peakUsed.load(ordering: .relaxed) >> 20) MiB of 64, evicted \(server.cache.evictions.load(ordering: .relaxed)), inserts skipped \(server.cache.skippedInserts.load(ordering: .relaxed))")
    }
}
