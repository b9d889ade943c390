import Foundation

/// A renewal campaign: targets written into a selection of devices, wave by wave, at a bounded rate, inside
/// maintenance windows. See docs/operations.md.
public enum CampaignState: String, Sendable, Codable, CaseIterable {
    case scheduled, running, paused, completed, aborted

    /// No further change is possible.
    public var isFinal: Bool { self == .completed || self == .aborted }
}

public enum CampaignStrategy: String, Sendable, Codable {
    /// Write the new chain.
    case replace
    /// Write the new roots together with the still-valid roots the device holds now.
    case overlap
}

/// A target once its chain is resolved and checked: the bytes each device will be sent.
public struct CampaignTarget: Sendable, Equatable, Codable {
    public var tag: Int64
    public var type: Int
    public var strategy: CampaignStrategy
    /// The new chain (normal form).
    public var pem: String
    public var sha256: String
    /// The catalogue name, when the request named one.
    public var credential: String?
    /// For `overlap`: digest of the chain a device holds now → the chain it is sent (new roots + still-valid old).
    public var overlaps: [String: String]

    public init(
        tag: Int64, type: Int, strategy: CampaignStrategy, pem: String, credential: String?,
        overlaps: [String: String] = [:]
    ) {
        self.tag = tag
        self.type = type
        self.strategy = strategy
        self.pem = pem
        self.sha256 = Hex.sha256(Array(pem.utf8))
        self.credential = credential
        self.overlaps = overlaps
    }
}

/// What the daemon keeps about a campaign (stored as JSON beside its state columns).
public struct Campaign: Sendable, Equatable, Codable {
    public var id: String
    public var name: String
    public var targets: [CampaignTarget]
    public var select: CampaignSelection
    public var policy: RolloutPolicy
    /// For a standing auto-renewal campaign: the configured target it renews.
    public var autoRenews: String?
    /// A client-certificate campaign (`kind: client-cert`): the `clientCerts` policy whose identities it renews.
    /// It has no `targets`; each member's rotation is the device's `client-cert:<policy>` one.
    public var clientCert: String?
    /// Where the campaign came from: "rpc", "config", "auto".
    public var origin: String

    // Progress.
    public var state: CampaignState
    public var reason: String?
    public var createdAt: Int64
    /// Creation order, for campaigns created within the same second (nil in campaigns stored before it existed).
    public var sequence: Int64?
    public var updatedAt: Int64
    public var finishedAt: Int64?
    /// The wave being rolled out (0-based).
    public var currentWave: Int
    /// Number of waves (the cumulative sizes' count when created).
    public var waveCount: Int
    /// Set when paused at the end of a wave for a person to confirm; resume starts the next wave.
    public var awaitingConfirmation: Bool
    /// Per wave: the operator accepted the wave's results (resumed after a threshold pause).
    public var accepted: [Bool]
    /// Per wave: errors and executed devices already accepted by the operator (the error threshold applies to
    /// what happens after a resume).
    public var errorBaseline: [Int]
    public var executedBaseline: [Int]

    public init(
        id: String, name: String, now: Int64, targets: [CampaignTarget], select: CampaignSelection,
        policy: RolloutPolicy = RolloutPolicy(), origin: String
    ) {
        self.id = id
        self.name = name
        self.targets = targets
        self.select = select
        self.policy = policy
        self.origin = origin
        state = .running
        createdAt = now
        updatedAt = now
        currentWave = 0
        waveCount = 1
        awaitingConfirmation = false
        accepted = [false]
        errorBaseline = [0]
        executedBaseline = [0]
    }

    /// Which of two campaigns is newer (a newer campaign takes a tag over from an older one): by creation time,
    /// then creation order (two campaigns created in one second had been ordered by their random ids), then id.
    public var precedence: Precedence { Precedence(createdAt: createdAt, sequence: sequence ?? 0, id: id) }

    public struct Precedence: Comparable, Sendable {
        public var createdAt: Int64
        public var sequence: Int64
        public var id: String

        public static func < (a: Precedence, b: Precedence) -> Bool {
            (a.createdAt, a.sequence, a.id) < (b.createdAt, b.sequence, b.id)
        }
    }

    public mutating func setWaveCount(_ count: Int) {
        waveCount = max(1, count)
        accepted = Array(repeating: false, count: waveCount)
        errorBaseline = Array(repeating: 0, count: waveCount)
        executedBaseline = Array(repeating: 0, count: waveCount)
    }

    /// The rotation target of the campaign's `index`-th target.
    public func rotationTarget(_ index: Int) -> RotationTarget { .campaign(id: id, index: index) }
    /// What every rotation target of this campaign starts with, stored.
    public var rotationTargetPrefix: String { RotationTarget.campaignPrefix(id) }

    /// Whether `target` is one of this campaign's rotations: its own targets, or for a client-certificate
    /// campaign the policy's rotation (shared with renewal by expiry; the member follows it once admitted).
    public func owns(_ target: RotationTarget) -> Bool {
        if let clientCert { return target == .clientCert(clientCert) }
        return target.campaignID == id
    }
}
