// SPDX-License-Identifier: Apache-2.0
import Foundation
@testable import MM
import Synchronization
import Testing

/// A value that counts its live instances (to see deinitialisation).
struct Tracked: ~Copyable {
    static let live = Atomic<Int>(0)
    var number: Int
    init(_ number: Int) {
        self.number = number
        Tracked.live.wrappingAdd(1, ordering: .relaxed)
    }
    deinit { Tracked.live.wrappingSubtract(1, ordering: .relaxed) }
}

/// Whether an optional of a non-copyable type is nil (consumes it).
func isNil<T: ~Copyable>(_ value: consuming T?) -> Bool {
    switch consume value {
    case .none: return true
    case .some: return false
    }
}

/// Active objects of the cache named `name`.
func activeObjects(_ mm: MemorySystem, _ name: String) -> Int {
    mm.statistics().slabCaches.first { $0.name == name }?.activeObjects ?? -1
}

@Suite("Typed allocation: TypedObjectCache, MemoryBuffer, temporary allocations, the shared system", .serialized)
struct TypedAllocationTests {
    @Test("a CachedObject deinitialises its value and frees its slot at the end of its scope; take() moves the value out")
    func cachedObjectLifecycle() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let cache = try TypedObjectCache<Tracked>(name: "tracked", in: mm)
        let before = Tracked.live.load(ordering: .relaxed)
        do {
            guard let object = cache.allocate(initializingWith: Tracked(1)) else {
                Issue.record("allocation failed")
                return
            }
            object.value.number += 41
            #expect(object.value.number == 42)
            #expect(activeObjects(mm, "tracked") == 1)
            #expect(Tracked.live.load(ordering: .relaxed) == before + 1)
        }
        #expect(activeObjects(mm, "tracked") == 0)
        #expect(Tracked.live.load(ordering: .relaxed) == before)
        let kept = cache.allocateGuaranteed(initializingWith: Tracked(7))
        let value = kept.take()
        #expect(value.number == 7 && activeObjects(mm, "tracked") == 0)
        #expect(Tracked.live.load(ordering: .relaxed) == before + 1)
        _ = consume value
        #expect(Tracked.live.load(ordering: .relaxed) == before)
        #expect(mm._invariantViolations() == [])
    }

    @Test("objects outlive the TypedObjectCache value that made them")
    func objectOutlivesTypedCache() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        var cache: TypedObjectCache<Int>? = try TypedObjectCache<Int>(name: "ints", in: mm)
        guard let object = cache!.allocate(initializingWith: 5) else {
            Issue.record("allocation failed")
            return
        }
        cache = nil
        #expect(object.value == 5)
        _ = consume object
    }

    @Test("a failed typed allocation returns nil and destroys the value")
    func failedAllocation() throws {
        let mm = try makeExactSystem()
        let cache = try TypedObjectCache<Tracked>(name: "tracked-fail", in: mm)
        let pages = fillPages(mm, .atomic)
        let before = Tracked.live.load(ordering: .relaxed)
        var policy = AllocationPolicy.nonBlocking
        policy.reportsFailure = false
        var got = 0
        while !isNil(cache.allocate(initializingWith: Tracked(0), policy: policy)) { got += 1; if got > 10_000 { break } }
        #expect(Tracked.live.load(ordering: .relaxed) == before)
        for p in pages { mm.freePages(p, order: 0) }
    }

    @Test("MemoryBuffer: bytes freed at the end of its scope; nil for impossible sizes; guaranteed never nil")
    func memoryBuffer() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        do {
            guard var buffer = MemoryBuffer(byteCount: 100_000, in: mm) else {
                Issue.record("allocation failed")
                return
            }
            buffer.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 3) }
            let sum = buffer.withUnsafeBytes { $0.reduce(0) { $0 + Int($1) } }
            let usable = buffer.usableByteCount
            #expect(sum == 300_000 && usable >= 100_000)
            #expect(mm.statistics().freeBytes < 16 << 20 - 100_000)
        }
        mm.drainPerThreadLists()
        let free = mm.statistics().freeBytes
        let zeroIsNil = isNil(MemoryBuffer(byteCount: 0, in: mm))
        let negativeIsNil = isNil(MemoryBuffer(byteCount: -1, in: mm))
        #expect(zeroIsNil && negativeIsNil)
        do {
            let guaranteed = MemoryBuffer(byteCount: 64, guarantee: .retryForever, in: mm)
            let count = guaranteed.byteCount
            #expect(count == 64)
        }
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBytes == free)
    }

    @Test("withTemporaryAllocation frees on return and on throw; nil without calling the body on failure")
    func temporary() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        struct Boom: Error {}
        let n = mm.withTemporaryAllocation(byteCount: 4096) { buffer in buffer.count }
        #expect(n == 4096)
        #expect(throws: Boom.self) { _ = try mm.withTemporaryAllocation(byteCount: 512) { _ throws(Boom) in throw Boom() } }
        var called = false
        #expect(mm.withTemporaryAllocation(byteCount: -5) { _ in called = true } == nil)
        #expect(!called)
        #expect(mm.withTemporaryAllocation(byteCount: 1 << 20, guarantee: .retryForever) { $0.count } == 1 << 20)
        #expect(mm.statistics().slabCaches.allSatisfy { $0.activeObjects == 0 })
    }

    @Test("consuming a CachedObject twice does not compile ('consumed more than once')")
    func doubleConsumeIsRejected() throws {
        let (made, reason) = try SnippetCompiler.make()
        guard let compiler = made else {
            print("skipped: \(reason ?? "")")
            return
        }
        defer { compiler.remove() }
        func compile(_ body: String) throws -> (status: Int32, output: String) {
            try compiler.compile("""
            import MM
            func use(_ mm: MemorySystem) throws {
                let inodes = try TypedObjectCache<Int>(name: "inodes", in: mm)
                let kept = inodes.allocateGuaranteed(initializingWith: 7)
            \(body)
            }
            """)
        }
        let once = try compile("    _ = kept.take()")
        #expect(once.status == 0, "the single consume must compile: \(once.output)")
        let twice = try compile("    _ = kept.take()\n    _ = kept.take()")
        #expect(twice.status != 0)
        #expect(twice.output.contains("consumed more than once"), "\(twice.output)")
    }

    @Test("MemorySystem.shared: configured once at start, then the same system everywhere; a second configure throws")
    func sharedSystem() async {
        await #expect(processExitsWith: .success) {
            var config = MemoryConfiguration(capacity: 32 << 20)
            config.logsEvents = false
            let made = try! MemorySystem.configureShared(config)
            precondition(MemorySystem.shared === made && MemorySystem.shared.configuration.capacity == 32 << 20)
            do {
                try MemorySystem.configureShared(config)
                preconditionFailure("a second configureShared must throw")
            } catch is SharedSystemError {}
            catch { preconditionFailure("wrong error \(error)") }
            let p = MemorySystem.shared.allocate(byteCount: 100)!
            MemorySystem.shared.deallocate(p)
        }
        await #expect(processExitsWith: .success) {
            // Unconfigured: made on first use, sized for the container.
            let s = MemorySystem.shared
            precondition(s === MemorySystem.shared && s.limit <= s.configuration.capacity)
            do {
                try MemorySystem.configureShared(MemoryConfiguration(capacity: 16 << 20))
                preconditionFailure("configure after first use must throw")
            } catch is SharedSystemError {} catch { preconditionFailure("wrong error \(error)") }
        }
    }
}
