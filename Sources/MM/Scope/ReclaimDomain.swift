// SPDX-License-Identifier: Apache-2.0

/// A tag for what reclaim may call into, in an open hierarchy: excluding a
/// domain also excludes every domain within it.
///
/// Built in: `.io` ⊃ `.filesystem` (excluding `.io` excludes `.filesystem`,
/// as the kernel's NOIO implies NOFS). Add your own:
/// ```swift
/// let blockCache = ReclaimDomain("block-cache", within: .filesystem)
/// ```
/// Kernel analogue: the `__GFP_IO`/`__GFP_FS` bits, generalised.
///
/// A process may define up to 64 distinct domains (each is one bit in a
/// scope); the same name within the same parent is the same domain.
public struct ReclaimDomain: Sendable, Hashable, CustomStringConvertible {
    /// The domain's index (0..<64), its bit in a scope's exclusion mask.
    /// (The type holds no references, so scopes copy it for free.)
    @usableFromInline let index: Int
    /// Bits of this domain and all its ancestors.
    @usableFromInline let ancestry: UInt64

    /// The domain's name.
    public var name: String { DomainRegistry.shared.name(of: index) }

    /// The domain `name` within `parent` (created on first use).
    public init(_ name: String, within parent: ReclaimDomain? = nil) {
        self = DomainRegistry.shared.domain(name: name, parent: parent)
    }

    init(index: Int, ancestry: UInt64) {
        self.index = index
        self.ancestry = ancestry
    }

    /// Anything that may start I/O. Kernel: `__GFP_IO`.
    public static let io = ReclaimDomain("io")
    /// Anything that may call into a filesystem; within `.io`. Kernel: `__GFP_FS`.
    public static let filesystem = ReclaimDomain("filesystem", within: .io)

    /// Whether `self` is `other` or lies within it.
    /// - Parameter other: a domain.
    /// - Returns: whether this domain is `other` or lies inside it.
    public func isWithin(_ other: ReclaimDomain) -> Bool {
        ancestry & (1 << UInt64(other.index)) != 0
    }

    /// Whether the two are the same (see the type's notion of identity).
    public static func == (a: ReclaimDomain, b: ReclaimDomain) -> Bool { a.index == b.index }
    /// Hashes the same parts that `==` compares.
    public func hash(into hasher: inout Hasher) { hasher.combine(index) }
    /// A one-line description, as events and reports print it.
    public var description: String { name }
}

/// Gives each (name, parent) pair a stable bit.
final class DomainRegistry: Sendable {
    static let shared = DomainRegistry()

    private struct Key: Hashable { let name: String; let parent: Int }
    private let domains = Locked<(byKey: [Key: ReclaimDomain], names: [String], ancestries: [UInt64])>(([:], [], []))

    func domain(name: String, parent: ReclaimDomain?) -> ReclaimDomain {
        domains.withLock { state in
            let key = Key(name: name, parent: parent?.index ?? -1)
            if let existing = state.byKey[key] { return existing }
            precondition(state.names.count < 64,
                         "swift-mm: cannot define ReclaimDomain \"\(name)\": a process may define at most 64 reclaim domains")
            let index = state.names.count
            let domain = ReclaimDomain(index: index, ancestry: (parent?.ancestry ?? 0) | (1 << UInt64(index)))
            state.byKey[key] = domain
            state.names.append(name)
            state.ancestries.append(domain.ancestry)
            return domain
        }
    }

    /// Of the domains whose bits are set in `mask`, those that `excluded`
    /// does not exclude: a domain is excluded when it or an ancestor is
    /// (excluding `.filesystem` excludes a domain defined within it).
    func notExcluded(_ mask: UInt64, by excluded: UInt64) -> UInt64 {
        guard mask & ~excluded != 0 else { return 0 }
        return domains.withLock { state in
            var result: UInt64 = 0
            var bits = mask
            while bits != 0 {
                let i = bits.trailingZeroBitCount
                bits &= bits - 1
                if i < state.ancestries.count && state.ancestries[i] & excluded == 0 { result |= 1 << UInt64(i) }
            }
            return result
        }
    }

    /// The domains whose bits are set in `mask`, for descriptions.
    func names(in mask: UInt64) -> [String] {
        domains.withLock { state in
            state.names.indices.filter { mask & (1 << UInt64($0)) != 0 }.map { state.names[$0] }
        }
    }

    func name(of index: Int) -> String {
        domains.withLock { $0.names[index] }
    }
}
