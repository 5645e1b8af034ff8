// SPDX-License-Identifier: Apache-2.0
// Usage: HotLoops <loop> <iterations>. Each loop makes one allocation and
// frees it per iteration; `scripts/instructions.sh` runs two iteration
// counts under callgrind and reports the difference per iteration, so set-up
// and warm-up cancel out.
//
// Each loop is a function of its own, as a user's code would be: one large
// function with every loop in it grows past the optimiser's inlining budget
// after the first few `@inlinable` fast paths, and the later loops would
// measure an out-of-line call instead of the inlined fast path.
import Dispatch
import Foundation
import Glibc
import MM

let loops = ["pair16", "pair1k", "page0", "page0_deallocate", "pair64k", "pair64", "pair64_charged", "batch64", "token",
             "pair64_beside_token_charging", "pair64_beside_closure_charging", "malloc16", "malloc1k", "mallocbatch64"]
let arguments = CommandLine.arguments
guard arguments.count == 3, loops.contains(arguments[1]), let n = Int(arguments[2]), n >= 0 else {
    print("usage: HotLoops <\(loops.joined(separator: "|"))> <iterations>")
    exit(64)
}

/// Pairs of a size known at compile time, as most allocation sites are: each
/// caller below is a function of its own, so the size class folds.
@inline(__always)
func pairs(_ mm: MemorySystem, size: Int, _ n: Int) {
    for _ in 0..<n { mm.deallocate(mm.allocate(byteCount: size)!) }
}
@inline(never) func pairs16(_ mm: MemorySystem, _ n: Int) { pairs(mm, size: 16, n) }
@inline(never) func pairs64(_ mm: MemorySystem, _ n: Int) { pairs(mm, size: 64, n) }
@inline(never) func pairs1k(_ mm: MemorySystem, _ n: Int) { pairs(mm, size: 1024, n) }
@inline(never) func pairs64k(_ mm: MemorySystem, _ n: Int) { pairs(mm, size: 64 << 10, n) }

/// A scope token entered and exited (`mmctl bench scopes`' `token_scope_ns`): what a
/// transaction's `memalloc_nofs_save`/`restore` pair costs.
@inline(never)
func tokens(_ n: Int) {
    for _ in 0..<n {
        let token = AllocationScope.enter(.excluding(.filesystem))
        token.exit()
    }
}

@inline(never)
func pagePairs(_ mm: MemorySystem, _ n: Int) {
    for _ in 0..<n { mm.freePages(mm.allocatePages(order: 0)!, order: 0) }
}

@inline(never)
func pagePairsThroughDeallocate(_ mm: MemorySystem, _ n: Int) {
    for _ in 0..<n { mm.deallocate(mm.allocatePages(order: 0)!) }
}

/// The same pair charged to a group with a max (what per-object charging costs).
@inline(never)
func chargedPairs(_ mm: MemorySystem, _ n: Int) {
    let group = mm.makeGroup(name: "charged", limits: .init(max: 64 << 20))
    var policy = AllocationPolicy.standard
    policy.group = group
    for _ in 0..<1000 { mm.deallocate(mm.allocate(byteCount: 64, policy: policy)!) }
    for _ in 0..<n { mm.deallocate(mm.allocate(byteCount: 64, policy: policy)!) }
}

/// Uncharged 64 B pairs on this thread while another thread sits in a charging
/// scope for the whole loop: a token (thread-only: this thread's fast path stays
/// open) or a closure scope (which tasks inherit, so every thread steps aside).
@inline(never)
func pairsBesideCharging(_ mm: MemorySystem, _ n: Int, token: Bool) {
    let group = mm.makeGroup(name: "elsewhere")
    let entered = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0), left = DispatchSemaphore(value: 0)
    let other = Thread {
        if token {
            let scope = AllocationScope.enter(.charging(group))
            entered.signal()
            done.wait()
            scope.exit()
        } else {
            withAllocationScope(.charging(group)) {
                entered.signal()
                done.wait()
            }
        }
        left.signal()
    }
    other.start()
    entered.wait()
    pairs64(mm, n)
    done.signal()
    left.wait()
}

/// 1000 × 64 B allocated, then freed in the same order (FIFO): one iteration is one round,
/// so per object it is the result / 1000 — what the magazines' refills and drains cost.
@inline(never)
func batches(_ mm: MemorySystem, _ n: Int) {
    let slots = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: 1000)
    for _ in 0..<n {
        for i in 0..<1000 { slots[i] = mm.allocate(byteCount: 64)! }
        for i in 0..<1000 { mm.deallocate(slots[i]) }
    }
}

// The same pairs through the C allocator: glibc, or the one LD_PRELOAD puts in
// front of it. Called through dlsym'd pointers (one call each, as through the
// PLT), so that the optimiser cannot pair up and delete malloc and free.
typealias Malloc = @convention(c) (Int) -> UnsafeMutableRawPointer?
typealias Free = @convention(c) (UnsafeMutableRawPointer?) -> Void

@inline(never)
func mallocPairs(size: Int, _ n: Int) {
    let cMalloc = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc"), to: Malloc.self)
    let cFree = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "free"), to: Free.self)
    for _ in 0..<1000 { cFree(cMalloc(size)) }
    for _ in 0..<n { cFree(cMalloc(size)) }
}

@inline(never)
func mallocBatches(_ n: Int) {
    let cMalloc = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc"), to: Malloc.self)
    let cFree = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "free"), to: Free.self)
    let slots = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: 1000)
    for _ in 0..<n {
        for i in 0..<1000 { slots[i] = cMalloc(64)! }
        for i in 0..<1000 { cFree(slots[i]) }
    }
}

let mm = try MemorySystem(.init(capacity: 256 << 20))
// Warm-up: the thread's magazines and page lists exist and hold memory.
pairs16(mm, 1000)
pairs64(mm, 1000)
pairs1k(mm, 1000)
pagePairs(mm, 100)

switch arguments[1] {
case "pair16": pairs16(mm, n)
case "pair1k": pairs1k(mm, n)
case "page0": pagePairs(mm, n)
case "page0_deallocate": pagePairsThroughDeallocate(mm, n)
case "pair64k": pairs64k(mm, n)
case "pair64": pairs64(mm, n)
case "pair64_charged": chargedPairs(mm, n)
case "batch64": batches(mm, n)
case "token": tokens(n)
case "pair64_beside_token_charging": pairsBesideCharging(mm, n, token: true)
case "pair64_beside_closure_charging": pairsBesideCharging(mm, n, token: false)
case "malloc16": mallocPairs(size: 16, n)
case "malloc1k": mallocPairs(size: 1024, n)
case "mallocbatch64": mallocBatches(n)
default: break
}
