// SPDX-License-Identifier: Apache-2.0
import CMMMalloc
import CMMShims
import Glibc
@_spi(ProcessAllocator) import MM

// mmmalloc.h: scopes, a policy-taking malloc, shrinkers and statistics for C
// callers of the process allocator.

/// The system behind malloc (it exists from just before `main` on).
private func processSystem() -> MemorySystem? {
    ProcessAllocator.existing?.takeUnretainedValue()
}

@_cdecl("mm_process_scope_enter")
func mmScopeEnter(_ flags: UInt32) -> UInt64 {
    guard processSystem() != nil else { return 0 }
    var scope = AllocationScope.none
    if flags & 1 != 0 { scope = scope.union(.excluding(.filesystem)) }
    if flags & 2 != 0 { scope = scope.union(.excluding(.io)) }
    if flags & 4 != 0 { scope = scope.union(.noDirectReclaim) }
    if flags & 8 != 0 { scope = scope.union(.nonBlocking) }
    if flags & 16 != 0 { scope = scope.union(.retryForever) }
    if flags & 32 != 0 { scope = scope.union(.useReserves) }
    if flags & 64 != 0 { scope = scope.union(.quiet) }
    return AllocationScope.enter(scope)._detach()
}

@_cdecl("mm_process_scope_exit")
func mmScopeExit(_ token: UInt64) {
    guard token != 0 else { return }
    AllocationScopeToken._resume(token).exit()
}

@_cdecl("mm_process_malloc_policy")
func mmMallocPolicy(_ size: Int, _ policy: Int32) -> UnsafeMutableRawPointer? {
    guard let mm = processSystem() else { return cmm_glibc_malloc(size) }
    let bytes = max(16, size)  // max_align_t, as malloc
    if GuardedAllocation.isOn {
        guard (0...6).contains(policy) else {
            cmm_set_errno(EINVAL)
            return nil
        }
        return GuardedAllocation.allocate(mm, size: size, alignment: 16, zeroed: false) { mm, _, bytes in
            mallocPolicy(mm, bytes, policy)
        } ?? failedNil()
    }
    return mallocPolicy(mm, bytes, policy)
}

/// An allocation of `bytes` with the C API's policy number (0–6).
private func mallocPolicy(_ mm: MemorySystem, _ bytes: Int, _ policy: Int32) -> UnsafeMutableRawPointer? {
    switch policy {
    case 0: return mm.allocate(byteCount: bytes, policy: .standard) ?? failedNil()
    case 1: return mm.allocate(byteCount: bytes, policy: .failFast) ?? failedNil()
    case 2: return mm.allocate(byteCount: bytes, policy: .retryWhileProgress) ?? failedNil()
    case 3: return mm.allocate(byteCount: bytes, policy: .nonBlocking) ?? failedNil()
    case 4: return mm.allocate(byteCount: bytes, policy: .atomic) ?? failedNil()
    case 5: return mm.allocateGuaranteed(byteCount: bytes, .retryForever)
    case 6: return mm.allocateGuaranteed(byteCount: bytes, .useReserves)
    default:
        cmm_set_errno(EINVAL)
        return nil
    }
}

private func failedNil() -> UnsafeMutableRawPointer? {
    cmm_set_errno(ENOMEM)
    return nil
}

/// `mm_count_fn` and `mm_scan_fn` of mmmalloc.h.
typealias CountFunction = @convention(c) (UnsafeMutableRawPointer?) -> Int
typealias ScanFunction = @convention(c) (UnsafeMutableRawPointer?, Int) -> Int

/// A C cache behind `Shrinker`.
private final class CShrinker: Shrinker, @unchecked Sendable {  // the C context is the caller's to make thread-safe
    let name: String
    let domain: ReclaimDomain? = nil
    let count: CountFunction
    let scan: ScanFunction
    let context: UnsafeMutableRawPointer?

    init(name: String, count: CountFunction, scan: ScanFunction, context: UnsafeMutableRawPointer?) {
        self.name = name; self.count = count; self.scan = scan; self.context = context
    }

    func countObjects(_ control: ShrinkControl) -> Int { max(0, count(context)) }

    func scanObjects(_ control: ShrinkControl) -> ShrinkResult {
        let freed = scan(context, max(0, control.objectsToScan))
        return freed < 0 ? .stop : .freed(freed)
    }
}

private let registrations = SharedRegistrations()

/// Handles of C shrinkers (a glibc mutex: C callers may come from any thread).
private final class SharedRegistrations: @unchecked Sendable {  // `table` is only touched with `mutex` held
    private var mutex = pthread_mutex_t()
    private var table: [Int32: ShrinkerRegistration] = [:]
    private var next: Int32 = 1

    init() { pthread_mutex_init(&mutex, nil) }

    func add(_ registration: ShrinkerRegistration) -> Int32 {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        let handle = next
        next += 1
        table[handle] = registration
        return handle
    }

    func remove(_ handle: Int32) -> ShrinkerRegistration? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return table.removeValue(forKey: handle)
    }
}

@_cdecl("mm_process_register_shrinker")
func mmRegisterShrinker(_ name: UnsafePointer<CChar>?, _ count: CountFunction?, _ scan: ScanFunction?,
                        _ context: UnsafeMutableRawPointer?) -> Int32 {
    guard let mm = processSystem(), let count, let scan else { return -1 }
    let shrinker = CShrinker(name: name.map { String(cString: $0) } ?? "c-shrinker", count: count, scan: scan,
                             context: context)
    return registrations.add(mm.registerShrinker(shrinker))
}

@_cdecl("mm_process_unregister_shrinker")
func mmUnregisterShrinker(_ handle: Int32) {
    registrations.remove(handle)?.unregister()
}

@_cdecl("mm_process_stats_print")
func mmStatsPrint(_ fd: Int32) {
    guard let mm = processSystem() else { return }
    let s = mm.statistics()
    let text = s.meminfo + s.buddyinfo + s.slabinfo + s.vmstat
    text.withCString { _ = write(fd, $0, strlen($0)) }
}
