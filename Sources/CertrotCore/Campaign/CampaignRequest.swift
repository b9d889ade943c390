import Foundation

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
    /// `kind: client-cert`: the `clientCerts` policy to renew (no `targets`).
    public var clientCert: String?

    public static let defaultMinRemainingValidity: Int64 = 30 * 86400

    public init(name: String, targets: [CampaignTargetRequest], select: CampaignSelection) {
        self.name = name
        self.targets = targets
        self.select = select
    }

    public static let knownKeys: Set<String> = [
        "name", "targets", "select", "waves", "successThreshold", "errorThreshold", "minExecuted", "rate", "windows",
        "start", "deadline", "continuous", "pauseAfterWave", "endpointChain", "minRemainingValidity", "ackTimeout",
        "retryAttempts", "retryBase", "kind", "clientCert",
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
        var clientCert: String?
        switch params["kind"] {
        case nil, "ca-chain" as String:
            guard params["clientCert"] == nil else {
                throw Refusal("invalid_params", "clientCert needs kind \"client-cert\"")
            }
        case "client-cert" as String:
            guard let policy = params["clientCert"] as? String, !policy.isEmpty, policy.utf8.count <= 64 else {
                throw Refusal("invalid_params", "kind client-cert needs clientCert, the name of a clientCerts policy")
            }
            for key in ["targets", "endpointChain", "minRemainingValidity"] where params[key] != nil {
                throw Refusal("invalid_params", "a client-cert campaign takes no \(key)")
            }
            clientCert = policy
        default:
            throw Refusal("invalid_params", "kind must be \"ca-chain\" (the default) or \"client-cert\"")
        }
        let list: [Any]
        if clientCert != nil {
            list = []
        } else if let given = params["targets"] as? [Any], !given.isEmpty, given.count <= 8 {
            list = given
        } else {
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
        request.clientCert = clientCert
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
