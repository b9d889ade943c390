/// Device identifiers as docs/protocol.md defines them: 1–128 bytes of UTF-8, no `/`, `+`, `#` or NUL, and not
/// starting with `$` — exactly the strings that are safe as one MQTT topic level.
public enum DeviceID {
    public static let maxBytes = 128

    /// Returns `nil` when `id` is a valid device ID, else the reason it is not.
    public static func problem(_ id: String) -> String? {
        let bytes = id.utf8.count
        if bytes == 0 { return "device ID is empty" }
        if bytes > maxBytes { return "device ID is \(bytes) bytes; at most \(maxBytes) are allowed" }
        if id.hasPrefix("$") { return "device ID must not start with '$'" }
        for scalar in id.unicodeScalars {
            switch scalar {
            case "/", "+", "#", "\u{0}":
                return "device ID must not contain '/', '+', '#' or NUL"
            default:
                continue
            }
        }
        return nil
    }

    public static func isValid(_ id: String) -> Bool { problem(id) == nil }

    /// Validates `id` or throws ``CertrotError/Code/invalidDeviceID``.
    public static func validate(_ id: String) throws(CertrotError) {
        if let problem = problem(id) { throw CertrotError(.invalidDeviceID, problem) }
    }
}

/// The MQTT topics of the device contract (docs/protocol.md).
public enum Topics {
    public static let rpc = "certrot/rpc"
    public static let inventoryFilter = "+/certs/inventory"
    public static let ackFilter = "+/certs/ack"
    public static let csrFilter = "+/certs/csr"

    public static func bundle(_ device: String) -> String { "\(device)/certs" }
    public static func inventory(_ device: String) -> String { "\(device)/certs/inventory" }
    public static func ack(_ device: String) -> String { "\(device)/certs/ack" }
    /// Where a device publishes the output of a `keygen` op.
    public static func csr(_ device: String) -> String { "\(device)/certs/csr" }
    /// Retained progress of a campaign.
    public static func campaignStatus(_ id: String) -> String { "certrot/campaigns/\(id)/status" }

    public enum Kind: Sendable, Equatable {
        case inventory(device: String)
        case ack(device: String)
        case csr(device: String)
        case bundle(device: String)
        case rpc
    }

    /// Classifies an incoming topic. Returns `nil` for topics outside the contract. The device part is returned
    /// unvalidated; callers check it with ``DeviceID``.
    public static func classify(_ topic: String) -> Kind? {
        if topic == rpc { return .rpc }
        let levels = topic.split(separator: "/", omittingEmptySubsequences: false)
        guard levels.count >= 2, levels[1] == "certs" else { return nil }
        let device = String(levels[0])
        switch levels.count {
        case 2: return .bundle(device: device)
        case 3 where levels[2] == "inventory": return .inventory(device: device)
        case 3 where levels[2] == "ack": return .ack(device: device)
        case 3 where levels[2] == "csr": return .csr(device: device)
        default: return nil
        }
    }
}

/// A device ID as its bytes. Swift's `String` compares and hashes by canonical equivalence, so `café` with a
/// precomposed é and `café` with e + U+0301 are equal as Strings — and are two devices, with two topics, to the
/// broker and the store. Every set, dictionary, comparison and sort of device IDs in the daemon goes through this.
public struct DeviceKey: Hashable, Comparable, Sendable {
    public let bytes: [UInt8]

    public init(_ id: String) { bytes = Array(id.utf8) }

    /// The ID, byte for byte (a Swift String keeps the UTF-8 it was made from).
    public var id: String { String(decoding: bytes, as: UTF8.self) }

    public static func < (a: DeviceKey, b: DeviceKey) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
}

extension DeviceID {
    /// True when `a` and `b` are the same device: the same bytes, not merely canonically equivalent text.
    public static func same(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }
}
