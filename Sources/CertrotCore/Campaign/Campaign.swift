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

/// Which devices a campaign is for.
public enum CampaignSelection: Sendable, Equatable, Codable {
    case all
    case devices([String])
    case prefix(String)
    /// `*` any run of characters, `?` one character.
    case pattern(String)
    /// Devices whose inventory lists a credential with this digest.
    case holding(String)
    /// Devices whose credential in `tag` expires before `before` (Unix seconds).
    case expiringBefore(tag: Int64, before: Int64)
    /// Devices whose credential in `tag` expires within `seconds` of now (standing auto-renewal campaigns).
    case expiringWithin(tag: Int64, seconds: Int64)

    /// - Parameter expiry: when the device's credential in a tag expires, if known.
    public func matches(device: String, inventory: Inventory?, now: Int64, expiry: (Int64) -> Int64?) -> Bool {
        switch self {
        case .all: return true
        case .devices(let list): return list.contains { DeviceID.same($0, device) }
        case .prefix(let prefix): return device.utf8.starts(with: prefix.utf8)
        case .pattern(let pattern): return Self.glob(Array(pattern.utf8), Array(device.utf8))
        case .holding(let digest): return inventory?.creds.contains { $0.sha256 == digest } ?? false
        case .expiringBefore(let tag, let before): return expiry(tag).map { $0 < before } ?? false
        case .expiringWithin(let tag, let seconds): return expiry(tag).map { $0 < now + seconds } ?? false
        }
    }

    /// The tag an expiry selection looks at.
    public var expiryTag: Int64? {
        switch self {
        case .expiringBefore(let tag, _), .expiringWithin(let tag, _): tag
        default: nil
        }
    }

    /// `*` and `?` over bytes.
    public static func glob(_ pattern: [UInt8], _ text: [UInt8]) -> Bool {
        var p = 0
        var t = 0
        var star = -1
        var mark = 0
        while t < text.count {
            if p < pattern.count, pattern[p] == UInt8(ascii: "?") || pattern[p] == text[t] {
                p += 1
                t += 1
            } else if p < pattern.count, pattern[p] == UInt8(ascii: "*") {
                star = p
                mark = t
                p += 1
            } else if star >= 0 {
                p = star + 1
                mark += 1
                t = mark
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }

    /// JSON form, as `campaign.create` takes it.
    public var json: [String: Any] {
        switch self {
        case .all: ["all": true]
        case .devices(let list): ["devices": list]
        case .prefix(let prefix): ["prefix": prefix]
        case .pattern(let pattern): ["pattern": pattern]
        case .holding(let digest): ["holding": digest]
        case .expiringBefore(let tag, let before): ["tag": tag, "expiringBefore": before]
        case .expiringWithin(let tag, let seconds): ["tag": tag, "expiringWithin": seconds]
        }
    }

    public static func parse(_ value: Any?) throws(Refusal) -> CampaignSelection {
        let forms: Set<String> = ["all", "devices", "prefix", "pattern", "holding", "tag"]
        if let object = value as? [String: Any] {
            let named = object.keys.filter(forms.contains)
            if named.count > 1 {
                throw Refusal(
                    "invalid_params", "select names \(named.sorted().joined(separator: " and ")); give exactly one form"
                )
            }
            let allowed = forms.union(["expiringBefore", "expiringWithin"])
            if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
                throw Refusal("invalid_params", "select.\(unknown.prefix(64)) is not a selection")
            }
        }
        guard let object = value as? [String: Any], !object.isEmpty else {
            throw Refusal(
                "invalid_params",
                "select must be an object: {\"all\":true}, {\"devices\":[…]}, {\"prefix\":…}, "
                    + "{\"pattern\":…}, {\"holding\":sha256} or {\"tag\":N,\"expiringBefore\":unix}")
        }
        if object["all"] != nil {
            guard Params.bool(object["all"]) == true, object.count == 1 else {
                throw Refusal("invalid_params", "select.all must be true and alone")
            }
            return .all
        }
        if let list = object["devices"] {
            guard let devices = list as? [String], !devices.isEmpty, devices.count <= 100_000 else {
                throw Refusal(
                    "invalid_params", "select.devices must be a non-empty list of device IDs (at most 100,000)")
            }
            if let bad = devices.first(where: { !DeviceID.isValid($0) }) {
                throw Refusal("invalid_params", "select.devices: '\(bad.prefix(80))' is not a valid device ID")
            }
            return .devices(devices)
        }
        if let prefix = object["prefix"] {
            guard let text = prefix as? String, !text.isEmpty, text.utf8.count <= 128 else {
                throw Refusal("invalid_params", "select.prefix must be a non-empty string")
            }
            return .prefix(text)
        }
        if let pattern = object["pattern"] {
            guard let text = pattern as? String, !text.isEmpty, text.utf8.count <= 128 else {
                throw Refusal("invalid_params", "select.pattern must be a non-empty string (* and ? are wildcards)")
            }
            return .pattern(text)
        }
        if let holding = object["holding"] {
            guard let digest = holding as? String, Hex.isSHA256(digest) else {
                throw Refusal("invalid_params", "select.holding must be a sha256 (64 lowercase hex digits)")
            }
            return .holding(digest)
        }
        if object["tag"] != nil {
            guard let tag = Params.int(object["tag"]), (0...Inventory.maxTag).contains(tag) else {
                throw Refusal("invalid_params", "select.tag must be a sec tag (0…\(Inventory.maxTag))")
            }
            if let before = Params.int(object["expiringBefore"]), Bounds.times.contains(before) {
                return .expiringBefore(tag: tag, before: before)
            }
            if let within = Params.int(object["expiringWithin"]), within > 0, within <= Bounds.times.upperBound {
                return .expiringWithin(tag: tag, seconds: within)
            }
            throw Refusal("invalid_params", "select with tag needs expiringBefore (Unix seconds)")
        }
        throw Refusal("invalid_params", "select has none of all, devices, prefix, pattern, holding, tag")
    }
}

/// One entry of `waves`: a share of the selection or a number of devices. Waves are cumulative: `["1%", "10%",
/// "100%"]` is 1% of the devices, then up to 10%, then the rest.
public enum WaveSpec: Sendable, Equatable, Codable {
    case percent(Double)
    case count(Int)

    public var json: Any {
        switch self {
        case .percent(let p): "\(p.formatted(.number.grouping(.never)))%"
        case .count(let n): n
        }
    }

    public static func parse(_ value: Any?) throws(Refusal) -> [WaveSpec] {
        guard let value else { return [.percent(100)] }
        guard let list = value as? [Any], !list.isEmpty, list.count <= 100 else {
            throw Refusal("invalid_params", "waves must be a non-empty list (at most 100) of \"N%\" strings or counts")
        }
        var waves: [WaveSpec] = []
        for (index, item) in list.enumerated() {
            if let text = item as? String, text.hasSuffix("%"), let p = Double(text.dropLast()), p > 0, p <= 100 {
                waves.append(.percent(p))
            } else if !(item is String), let n = Params.int(item), n > 0 {
                waves.append(.count(Int(n)))
            } else {
                throw Refusal(
                    "invalid_params", "waves[\(index)] must be a share like \"10%\" (0–100%) or a positive count")
            }
        }
        return waves
    }

    /// Cumulative end of each wave over `total` devices; non-decreasing, the last equal to `total` (a final wave
    /// with the rest is added when the list stops short). Empty waves (a share too small to reach the next device)
    /// are kept: they complete at once.
    public static func cumulativeSizes(_ waves: [WaveSpec], total: Int) -> [Int] {
        var ends: [Int] = []
        var previous = 0
        for wave in waves {
            let end: Int
            switch wave {
            case .percent(let p): end = min(total, Int((Double(total) * p / 100).rounded(.up)))
            case .count(let n): end = min(total, n)
            }
            previous = max(previous, end)
            ends.append(previous)
        }
        if ends.last != total { ends.append(total) }
        return ends
    }
}

/// Helpers for reading JSON-RPC params.
public enum Params {
    /// An integer from a JSON number (integral) — not a Bool.
    public static func int(_ value: Any?) -> Int64? {
        guard let number = value as? NSNumber, !isBoolean(number) else { return nil }
        let double = number.doubleValue
        guard double.rounded() == double, abs(double) < 9.007_199_254_740_992e15 else { return nil }
        return number.int64Value
    }

    public static func double(_ value: Any?) -> Double? {
        guard let number = value as? NSNumber, !isBoolean(number) else { return nil }
        return number.doubleValue.isFinite ? number.doubleValue : nil
    }

    /// A JSON `true`/`false` (not the numbers 1 and 0, which also bridge to Bool).
    public static func bool(_ value: Any?) -> Bool? {
        guard let number = value as? NSNumber, isBoolean(number) else { return nil }
        return number.boolValue
    }

    /// JSONSerialization gives booleans as NSNumber of objCType "c".
    static func isBoolean(_ number: NSNumber) -> Bool {
        String(cString: number.objCType) == "c"
    }
}

/// A target as a campaign request names it, before its chain is resolved.
public struct CampaignTargetRequest: Sendable, Equatable {
    public var tag: Int64
    public var type: Int
    /// PEM text.
    public var chain: String?
    /// A name from the daemon's catalogue (or a configured target's name).
    public var credential: String?
    public var strategy: CampaignStrategy
}

/// How a campaign rolls out: what `campaign.create` asks for and what the stored campaign keeps.
public struct RolloutPolicy: Sendable, Equatable, Codable {
    public var waves: [WaveSpec] = [.percent(100)]
    public var successThreshold = 0.95
    public var errorThreshold = 0.05
    public var minExecuted = RolloutPolicy.defaultMinExecuted
    /// Accepted `rate`s: a token bucket's arithmetic stays finite and its ETA an integer.
    public static let rates: ClosedRange<Double> = 0.001...100_000
    /// Bundles per second; nil: no limit.
    public var rate: Double?
    public var windows: [MaintenanceWindow] = []
    public var start: Int64?
    public var deadline: Int64?
    public var continuous = false
    public var pauseAfterWave = false
    public var ackTimeout: Int64?
    public var retryAttempts: Int?
    public var retryBase: Int64?

    public static let defaultMinExecuted = 10

    public init() {}

    /// The daemon's rotation policy with this campaign's overrides.
    public func rotationPolicy(base: RotationPolicy) -> RotationPolicy {
        var policy = base
        if let ackTimeout { policy.ackTimeout = ackTimeout }
        if let retryAttempts { policy.retry.attempts = retryAttempts }
        if let retryBase { policy.retry.base = retryBase }
        return policy
    }
}

/// `campaign.create` params, validated for shape (chains are checked by the preflight).
public struct CampaignRequest: Sendable {
    public var name: String
    public var targets: [CampaignTargetRequest]
    public var select: CampaignSelection
    public var policy = RolloutPolicy()
    public var endpointChain: String?
    public var minRemainingValidity = CampaignRequest.defaultMinRemainingValidity

    public static let defaultMinRemainingValidity: Int64 = 30 * 86400

    public init(name: String, targets: [CampaignTargetRequest], select: CampaignSelection) {
        self.name = name
        self.targets = targets
        self.select = select
    }

    public static let knownKeys: Set<String> = [
        "name", "targets", "select", "waves", "successThreshold", "errorThreshold", "minExecuted", "rate", "windows",
        "start", "deadline", "continuous", "pauseAfterWave", "endpointChain", "minRemainingValidity", "ackTimeout",
        "retryAttempts", "retryBase",
    ]

    /// Parses `campaign.create` params. Unknown keys are refused (a misspelt `errorTreshold` must not silently
    /// fall back to the default).
    public static func parse(_ params: [String: Any], now: Int64) throws(Refusal) -> CampaignRequest {
        if let unknown = params.keys.sorted().first(where: { !knownKeys.contains($0) }) {
            throw Refusal("invalid_params", "unknown parameter '\(unknown.prefix(64))'")
        }
        guard let name = params["name"] as? String, !name.isEmpty, name.utf8.count <= 128 else {
            throw Refusal("invalid_params", "name must be a non-empty string of at most 128 bytes")
        }
        guard let list = params["targets"] as? [Any], !list.isEmpty, list.count <= 8 else {
            throw Refusal(
                "invalid_params", "targets must be a list of 1 to 8 {tag, type, chain | credential, strategy}")
        }
        var targets: [CampaignTargetRequest] = []
        for (index, item) in list.enumerated() {
            guard let object = item as? [String: Any] else {
                throw Refusal("invalid_params", "targets[\(index)] must be an object")
            }
            guard let tag = Params.int(object["tag"]), (0...Inventory.maxTag).contains(tag) else {
                throw Refusal("invalid_params", "targets[\(index)].tag must be a sec tag (0…\(Inventory.maxTag))")
            }
            let type = object["type"] == nil ? 0 : Params.int(object["type"]).map(Int.init)
            guard let type, CredentialType(rawValue: type) != nil else {
                throw Refusal("invalid_params", "targets[\(index)].type must be an AT%CMNG credential type (0…6)")
            }
            let chain = object["chain"] as? String
            let credential = object["credential"] as? String
            if object["chain"] != nil, chain == nil {
                throw Refusal("invalid_params", "targets[\(index)].chain must be PEM text")
            }
            if object["credential"] != nil, credential == nil {
                throw Refusal("invalid_params", "targets[\(index)].credential must be a catalogue name")
            }
            guard (chain == nil) != (credential == nil) else {
                throw Refusal(
                    "invalid_params",
                    "targets[\(index)] needs exactly one of chain (PEM text) and credential (a catalogue name)")
            }
            var strategy = CampaignStrategy.replace
            if let value = object["strategy"] {
                guard let text = value as? String, let parsed = CampaignStrategy(rawValue: text) else {
                    throw Refusal("invalid_params", "targets[\(index)].strategy must be \"replace\" or \"overlap\"")
                }
                strategy = parsed
            }
            if targets.contains(where: { $0.tag == tag && $0.type == type }) {
                throw Refusal("invalid_params", "targets[\(index)]: tag \(tag) type \(type) is named twice")
            }
            targets.append(
                CampaignTargetRequest(tag: tag, type: type, chain: chain, credential: credential, strategy: strategy))
        }
        var request = CampaignRequest(
            name: name, targets: targets, select: try CampaignSelection.parse(params["select"]))
        request.policy.waves = try WaveSpec.parse(params["waves"])
        func fraction(_ key: String, default value: Double) throws(Refusal) -> Double {
            guard let raw = params[key] else { return value }
            guard let number = Params.double(raw), number >= 0, number <= 1 else {
                throw Refusal("invalid_params", "\(key) must be a fraction between 0 and 1")
            }
            return number
        }
        request.policy.successThreshold = try fraction("successThreshold", default: 0.95)
        request.policy.errorThreshold = try fraction("errorThreshold", default: 0.05)
        func positive(_ key: String, max: Int64) throws(Refusal) -> Int64? {
            guard let raw = params[key] else { return nil }
            guard let value = Params.int(raw), value > 0, value <= max else {
                throw Refusal("invalid_params", "\(key) must be a positive integer, at most \(max)")
            }
            return value
        }
        func time(_ key: String) throws(Refusal) -> Int64? {
            guard let raw = params[key] else { return nil }
            guard let value = Params.int(raw), Bounds.times.contains(value) else {
                throw Refusal("invalid_params", "\(key) must be a Unix time in seconds (0…\(Bounds.times.upperBound))")
            }
            return value
        }
        if params["minExecuted"] != nil {
            guard let value = Params.int(params["minExecuted"]), value >= 0, value <= 1_000_000 else {
                throw Refusal("invalid_params", "minExecuted must be a count (0 or more)")
            }
            request.policy.minExecuted = Int(value)
        }
        if let raw = params["rate"] {
            guard let rate = Params.double(raw), rate >= RolloutPolicy.rates.lowerBound,
                rate <= RolloutPolicy.rates.upperBound
            else {
                throw Refusal(
                    "invalid_params",
                    "rate must be \(RolloutPolicy.rates.lowerBound)…\(RolloutPolicy.rates.upperBound) bundles per second"
                )
            }
            request.policy.rate = rate
        }
        if let raw = params["windows"] {
            guard let list = raw as? [Any], list.count <= 32 else {
                throw Refusal("invalid_params", "windows must be a list (at most 32) of {days, start, end, zone}")
            }
            request.policy.windows = try list.enumerated().map { (index, item) throws(Refusal) in
                let window = try MaintenanceWindow.parse(item, index: index)
                try window.validate()
                return window
            }
        }
        request.policy.start = try time("start")
        request.policy.deadline = try time("deadline")
        if let deadline = request.policy.deadline, deadline <= now {
            throw Refusal("invalid_deadline", "deadline \(deadline) is in the past (now \(now))")
        }
        for key in ["continuous", "pauseAfterWave"] where params[key] != nil && Params.bool(params[key]) == nil {
            throw Refusal("invalid_params", "\(key) must be true or false")
        }
        request.policy.continuous = Params.bool(params["continuous"]) ?? false
        request.policy.pauseAfterWave = Params.bool(params["pauseAfterWave"]) ?? false
        if let raw = params["endpointChain"] {
            guard let text = raw as? String, !text.isEmpty else {
                throw Refusal("invalid_params", "endpointChain must be PEM text (the chain the server presents)")
            }
            request.endpointChain = text
        }
        if params["minRemainingValidity"] != nil {
            guard let value = Params.int(params["minRemainingValidity"]), value >= 0, value <= Bounds.times.upperBound
            else {
                throw Refusal("invalid_params", "minRemainingValidity must be seconds (0 or more)")
            }
            request.minRemainingValidity = value
        }
        // A year at most for times, 100 attempts: the backoff is computed attempt by attempt.
        request.policy.ackTimeout = try positive("ackTimeout", max: 366 * 86400)
        request.policy.retryAttempts = try positive("retryAttempts", max: 100).map(Int.init)
        request.policy.retryBase = try positive("retryBase", max: 366 * 86400)
        return request
    }
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
}

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
