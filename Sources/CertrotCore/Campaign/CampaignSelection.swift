import Foundation

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
