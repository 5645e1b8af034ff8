// SPDX-License-Identifier: Apache-2.0
// Usage: HotLoops <loop> <iterations>. Each loop makes one allocation and
// frees it per iteration; `scripts/instructions.sh` runs two iteration
// counts under callgrind and reports the difference per iteration, so set-up
// and warm-up cancel out.
import Glibc
import MM

let loops = ["pair16", "pair1k", "page0", "page0_deallocate", "pair64k", "pair64", "pair64_charged", "batch64",
             "malloc16", "malloc1k", "mallocbatch64"]
let arguments = CommandLine.arguments
guard arguments.count == 3, loops.contains(arguments[1]), let n = Int(arguments[2]), n >= 0 else {
    print("usage: HotLoops <\(loops.joined(separator: "|"))> <iterations>")
    exit(64)
}
let mm = try MemorySystem(.init(capacity: 256 << 20))
// Warm-up: the thread's magazines and page lists exist and hold memory.
for _ in 0..<1000 { mm.deallocate(mm.allocate(byteCount: 16)!) }
for _ in 0..<100 { mm.freePages(mm.allocatePages(order: 0)!, order: 0) }

switch arguments[1] {
case "pair16": for _ in 0..<n { mm.deallocate(mm.allocate(byteCount: 16)!) }
case "pair1k": for _ in 0..<n { mm.deallocate(mm.allocate(byteCount: 1024)!) }
case "page0": for _ in 0..<n { mm.freePages(mm.allocatePages(order: 0)!, order: 0) }
case "page0_deallocate": for _ in 0..<n { mm.deallocate(mm.allocatePages(order: 0)!) }
case "pair64k": for _ in 0..<n { mm.deallocate(mm.allocate(byteCount: 64 << 10)!) }
case "pair64": for _ in 0..<n { mm.deallocate(mm.allocate(byteCount: 64)!) }
// The same pair charged to a group with a max (issue 14: what per-object charging costs).
case "pair64_charged":
    let group = mm.makeGroup(name: "charged", limits: .init(max: 64 << 20))
    var policy = AllocationPolicy.standard
    policy.group = group
    for _ in 0..<1000 { mm.deallocate(mm.allocate(byteCount: 64, policy: policy)!) }
    for _ in 0..<n { mm.deallocate(mm.allocate(byteCount: 64, policy: policy)!) }
// 1000 × 64 B allocated, then freed in the same order (FIFO): one iteration is one round,
// so per object it is the result / 1000 — what the magazines' refills and drains cost.
case "batch64":
    let slots = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: 1000)
    for _ in 0..<n {
        for i in 0..<1000 { slots[i] = mm.allocate(byteCount: 64)! }
        for i in 0..<1000 { mm.deallocate(slots[i]) }
    }
// The same pairs through the C allocator: glibc, or the one LD_PRELOAD puts in
// front of it. Called through dlsym'd pointers (one call each, as through the
// PLT), so that the optimiser cannot pair up and delete malloc and free.
case "malloc16", "malloc1k":
    typealias Malloc = @convention(c) (Int) -> UnsafeMutableRawPointer?
    typealias Free = @convention(c) (UnsafeMutableRawPointer?) -> Void
    let cMalloc = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc"), to: Malloc.self)
    let cFree = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "free"), to: Free.self)
    let size = arguments[1] == "malloc16" ? 16 : 1024
    for _ in 0..<1000 { cFree(cMalloc(size)) }
    for _ in 0..<n { cFree(cMalloc(size)) }
case "mallocbatch64":
    typealias Malloc = @convention(c) (Int) -> UnsafeMutableRawPointer?
    typealias Free = @convention(c) (UnsafeMutableRawPointer?) -> Void
    let cMalloc = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc"), to: Malloc.self)
    let cFree = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "free"), to: Free.self)
    let slots = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: 1000)
    for _ in 0..<n {
        for i in 0..<1000 { slots[i] = cMalloc(64)! }
        for i in 0..<1000 { cFree(slots[i]) }
    }
default: break
}
