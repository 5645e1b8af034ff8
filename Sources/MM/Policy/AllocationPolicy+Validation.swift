// SPDX-License-Identifier: Apache-2.0

/// A policy whose fields contradict each other.
public struct PolicyError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The fields involved.
    public var fields: [String]
    /// Why the combination has no meaning.
    public var reason: String

    /// A one-line description, as events and reports print it.
    public var description: String { "invalid AllocationPolicy (\(fields.joined(separator: ", "))): \(reason)" }
}

extension AllocationPolicy {
    /// Creates a policy, rejecting combinations that have no meaning (the
    /// kernel silently "fixes" or ignores such masks; swift-mm refuses them).
    public init(validating blocking: Bool, persistence: Persistence = .standard, reserve: ReserveRequest = .none,
                zeroed: Bool = false, reportsFailure: Bool = true, placement: Placement = .contiguous,
                group: MemoryGroup? = nil) throws(PolicyError) {
        self.init(blocking: blocking, persistence: persistence, reserve: reserve, zeroed: zeroed,
                  reportsFailure: reportsFailure, placement: placement, group: group)
        try validate()
    }

    /// Throws if the fields contradict each other. `allocate` performs the
    /// same check on a policy whose fields were changed after construction
    /// and answers an invalid one with `nil` and an `invalidRequest` event.
    public func validate() throws(PolicyError) {
        if !blocking && persistence != .standard {
            throw PolicyError(
                fields: ["blocking", "persistence"],
                reason: "persistence .\(persistence) applies to reclaim retries, and a non-blocking request never reclaims or retries; leave persistence at .standard (kernel: __GFP_NORETRY/__GFP_RETRY_MAYFAIL without __GFP_DIRECT_RECLAIM)")
        }
    }

    /// The cheap form of `validate()` for the fast path.
    @inlinable
    var isCoherent: Bool { blocking || persistence == .standard }
}

extension AllocationPolicy: CustomStringConvertible {
    /// The policy in words, like the kernel's `%pGg`: e.g.
    /// `blocking|standard|reserve=high|zeroed|nowarn|virtual|group=cache`
    /// (the default placement, `.automatic`, is not named).
    public var description: String {
        var parts = [blocking ? "blocking" : "nonblocking"]
        if blocking {
            switch persistence {
            case .failFast: parts.append("failFast")
            case .retryWhileProgress: parts.append("retryWhileProgress")
            case .standard: parts.append("standard")
            }
        }
        if reserve == .high { parts.append("reserve=high") }
        if zeroed { parts.append("zeroed") }
        if !reportsFailure { parts.append("nowarn") }
        switch placement {  // the default, .automatic, goes unsaid
        case .contiguous: parts.append("contiguous")
        case .virtual: parts.append("virtual")
        case .automatic: break
        }
        if let group { parts.append("group=\(group.name)") }
        return parts.joined(separator: "|")
    }
}
