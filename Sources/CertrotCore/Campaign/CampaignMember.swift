import Foundation

/// Per-device state of a campaign member: `waiting` until admitted, then its rotations' state (the least
/// advanced, or the failure), `cancelled` when the campaign was aborted before it was sent anything.
public enum MemberState: String, Sendable, Codable, CaseIterable {
    case waiting, pending, sent, applied, verified, rejected, failed
    case timedOut = "timed_out"
    case cancelled

    /// Aggregates a device's rotations for the campaign's targets.
    public static func aggregate(_ rotations: [Rotation]) -> (state: MemberState, settled: Bool) {
        guard !rotations.isEmpty else { return (.pending, false) }
        if rotations.contains(where: { $0.state == .cancelled }) { return (.cancelled, true) }
        for failure in [RotationState.rejected, .failed, .timedOut] {
            if let rotation = rotations.first(where: { $0.state == failure }) {
                return (MemberState(rawValue: failure.rawValue)!, rotation.isSettled)
            }
        }
        for step in [RotationState.pending, .sent, .applied] where rotations.contains(where: { $0.state == step }) {
            return (MemberState(rawValue: step.rawValue)!, false)
        }
        return (.verified, true)
    }

    /// Counted as executed for the error threshold: a bundle went out.
    public var executed: Bool {
        switch self {
        case .sent, .applied, .verified, .rejected, .failed, .timedOut: true
        default: false
        }
    }

    public var isError: Bool { self == .rejected || self == .failed || self == .timedOut }
}

/// A member row.
public struct CampaignMember: Sendable, Equatable {
    public var campaign: String
    public var device: String
    public var wave: Int
    public var state: MemberState
    public var settled: Bool
    public var reason: String?
    public var updatedAt: Int64

    public init(
        campaign: String, device: String, wave: Int, state: MemberState, settled: Bool, reason: String?,
        updatedAt: Int64
    ) {
        self.campaign = campaign
        self.device = device
        self.wave = wave
        self.state = state
        self.settled = settled
        self.reason = reason
        self.updatedAt = updatedAt
    }

    /// The device's error code, when the reason carries one ("… (code -22): …").
    public var code: Int? {
        guard let reason, let range = reason.range(of: "(code ") else { return nil }
        let rest = reason[range.upperBound...]
        return Int(rest.prefix { $0 == "-" || $0.isNumber })
    }
}

/// Counts of a campaign's members: wave → state → (count, settled count).
public struct WaveCounts: Sendable, Equatable {
    public var states: [MemberState: Int] = [:]
    public var settled = 0

    public init() {}

    public var size: Int { states.values.reduce(0, +) }
    public var verified: Int { states[.verified] ?? 0 }
    public var errors: Int { states.filter { $0.key.isError }.map(\.value).reduce(0, +) }
    public var executed: Int { states.filter { $0.key.executed }.map(\.value).reduce(0, +) }
    public var cancelled: Int { states[.cancelled] ?? 0 }
    public var waiting: Int { states[.waiting] ?? 0 }

    /// Counts `member` in (`sign` 1) or out (`sign` -1): counts kept up to date without counting again.
    public mutating func add(_ member: CampaignMember, sign: Int = 1) {
        let n = (states[member.state] ?? 0) + sign
        states[member.state] = n == 0 ? nil : n
        if member.settled { settled += sign }
    }
}

/// A token bucket: `rate` tokens a second, at most `capacity` saved up; starts with one token so that the first
/// bundle goes out at once without a burst.
public struct TokenBucket: Sendable {
    public var rate: Double
    public var capacity: Double
    public private(set) var tokens: Double
    private var last: Double

    /// - Parameter full: start with `capacity` tokens rather than one.
    public init(rate: Double, now: Double, capacity: Double? = nil, full: Bool = false) {
        self.rate = rate
        self.capacity = capacity ?? max(1, rate / 2)
        self.tokens = full ? self.capacity : 1
        self.last = now
    }

    public mutating func refill(now: Double) {
        tokens = min(capacity, tokens + max(0, now - last) * rate)
        last = now
    }

    /// Whole tokens available now.
    public var available: Int { Int(tokens.rounded(.down)) }

    public mutating func take(_ n: Int) { tokens -= Double(n) }
}
