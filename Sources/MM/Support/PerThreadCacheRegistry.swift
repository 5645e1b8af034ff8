// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// A layer whose memory threads cache (the page allocator, the slab layer):
/// it takes a cache's contents back when the cache leaves it.
protocol PerThreadCacheOwner: AnyObject, Sendable {
    associatedtype Kind: PerThreadCacheKind
    /// Returns everything `cache` holds to this owner. Called without the
    /// registry's lock, by the cache's owner thread (thread exit, switching
    /// systems) or by the forking thread for a thread the child does not have.
    func takeBack(_ cache: PerThreadCache<Kind>)
    /// Drops what `cache` holds without returning it: the owner is being
    /// dropped and its memory goes with it. Called under the registry's lock.
    func forgetContents(_ cache: PerThreadCache<Kind>)
    /// Whether the owner's fast path may use attached caches now (read
    /// under the registry's lock, when a cache attaches and when the owner
    /// calls `refreshFastPath`).
    var fastPathOpen: Bool { get }
}

/// The live owners of one kind of per-thread cache, by system identifier,
/// and the caches attached to each. It makes hand-overs safe: a thread that
/// exits or moves to another system returns its cache's contents to a live
/// owner, and an owner that is dropped forgets every cache still attached to
/// it, so that nothing is ever written into an unmapped arena.
///
/// One lock guards both the owners and their attached sets; contents are
/// returned outside it (returning objects frees slabs, which may take other
/// layers' locks and reach another registry for the same thread).
final class PerThreadCacheRegistry<Owner: PerThreadCacheOwner>: Sendable {
    typealias Cache = PerThreadCache<Owner.Kind>

    private struct Entry: @unchecked Sendable {  // the caches' raw memory is only touched as documented above
        let owner: Owner
        var attached: Set<Cache> = []
    }
    private let entries = Locked<[UInt64: Entry]>([:])

    init() {}

    /// Makes `owner` the live owner for `systemID`.
    func register(_ owner: Owner, systemID: UInt64) {
        entries.withLock { $0[systemID] = Entry(owner: owner) }
    }

    /// Removes the owner of `systemID` (being dropped) and forgets what every
    /// attached cache holds for it, threads alive or not. No thread may use
    /// the owner any more; a thread that later touches its cache finds it
    /// attached to no system.
    func remove(systemID: UInt64) {
        entries.withLock { entries in
            guard let entry = entries.removeValue(forKey: systemID) else { return }
            for cache in entry.attached where cache.systemID == systemID {
                entry.owner.forgetContents(cache)
                cache.setSystem(0, fastPathOpen: false)
            }
        }
    }

    /// Attaches the calling thread's `cache` to `systemID`, returning what it
    /// held for another system first.
    func attach(_ cache: Cache, to systemID: UInt64) {
        detach(cache)
        entries.withLock { entries in
            entries[systemID]?.attached.insert(cache)
            cache.setSystem(systemID, fastPathOpen: entries[systemID]?.owner.fastPathOpen ?? false)
        }
    }

    /// Returns what `cache` holds to its system (if that is still alive) and
    /// leaves it attached to none.
    func detach(_ cache: Cache) {
        let owner = entries.withLock { entries -> Owner? in
            let id = cache.systemID
            guard id != 0, entries[id]?.attached.remove(cache) != nil else { return nil }
            return entries[id]?.owner
        }
        owner?.takeBack(cache)
        entries.withLock { _ in cache.setSystem(0, fastPathOpen: false) }
    }

    /// Copies the owner's `fastPathOpen` into every cache attached to
    /// `systemID`. The owner calls it after every change of that state; the
    /// state is read under the lock, so concurrent calls and attaches all end
    /// with the latest one.
    func refreshFastPath(systemID: UInt64) {
        entries.withLock { entries in
            guard let entry = entries[systemID] else { return }
            let open = entry.owner.fastPathOpen
            for cache in entry.attached where cache.systemID == systemID { cache.setFastPathOpen(open) }
        }
    }

    /// Runs `body` with the caches attached to `systemID`, under the
    /// registry's lock: none of them can be detached or unmapped meanwhile.
    /// `body` must not take a lock that is held while calling into the registry.
    func withAttached<R: Sendable>(to systemID: UInt64, _ body: ([Cache]) -> R) -> R {
        entries.withLock { entries in body(Array(entries[systemID]?.attached ?? [])) }
    }

    /// How many caches are attached to `systemID`.
    func attachedCount(_ systemID: UInt64) -> Int {
        entries.withLock { $0[systemID]?.attached.count ?? 0 }
    }

    /// Runs at thread exit (the kind's key destructor): returns the cache's
    /// contents and unmaps it.
    func threadExited(_ raw: UnsafeMutableRawPointer) {
        // From here on the thread's slow paths make no new caches: a free or an
        // allocation in a later destructor (another kind's teardown, a program's
        // own key, the process allocator's malloc) would otherwise make one after
        // its destructor ran, in the last round of destructors, and leak it.
        ThreadSlots.markExiting()
        let cache = Cache(header: raw.assumingMemoryBound(to: PerThreadCacheHeader.self))
        detach(cache)
        cache.destroy()
    }

    /// In a forked child: every cache but the calling thread's belongs to a
    /// thread that does not exist here. Their contents go back to their
    /// systems and their memory is unmapped.
    func repairAfterFork() {
        let mine = Owner.Kind.threadSlot.pointee
        let orphans = entries.withLock { entries -> [Cache] in
            entries.values.flatMap { $0.attached }.filter { UnsafeMutableRawPointer($0.header) != mine }
        }
        for cache in orphans {
            detach(cache)
            cache.destroy()
        }
    }
}
