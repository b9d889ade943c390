import Foundation

/// What a device reports on `{id}/certs/inventory` (retained): the credentials in its modem store.
public struct Inventory: Sendable, Equatable, Codable {
    public struct Credential: Sendable, Equatable, Codable {
        public var tag: Int64
        public var type: Int
        /// SHA-256 of the stored PEM bytes, 64 lowercase hex digits: `AT%CMNG=1` prints it in uppercase, quoted
        /// (`%CMNG: 16842753,0,"2C43…5BD1"`), and the device lowercases it (docs/protocol.md §2).
        public var sha256: String
        /// Expiry in Unix seconds as `AT%CERTEXPIRY` reports it, when the device knows it.
        public var notAfter: Int64?
        public var serial: String?

        public init(tag: Int64, type: Int, sha256: String, notAfter: Int64? = nil, serial: String? = nil) {
            self.tag = tag
            self.type = type
            self.sha256 = sha256
            self.notAfter = notAfter
            self.serial = serial
        }
    }

    public var v: Int
    /// Highest bundle `seq` the device has applied.
    public var seq: Int64
    /// Largest MQTT PUBLISH packet the device can take; the device's profile gives it when absent.
    public var maxMessage: Int?
    public var creds: [Credential]
    /// kids of the bundle-verification keys the device trusts, when it supports `trust_key`.
    public var keys: [String]?
    /// The sec tag the device's MQTT connection uses now, when it supports client-certificate renewal
    /// (`keygen`, `activate`).
    public var active: Int64?
    /// Bundle formats the device takes besides JWS (`["cose"]`: compact bundles, docs/protocol.md §12).
    public var formats: [String]?

    public init(
        v: Int = 1, seq: Int64, maxMessage: Int? = nil, creds: [Credential], keys: [String]? = nil,
        active: Int64? = nil, formats: [String]? = nil
    ) {
        self.v = v
        self.seq = seq
        self.maxMessage = maxMessage
        self.creds = creds
        self.keys = keys
        self.active = active
        self.formats = formats
    }

    public static let maxKeys = 8

    public static let maxPayloadBytes = 64 * 1024
    public static let maxCredentials = 256
    public static let maxTag: Int64 = 2_147_483_647

    public func credential(tag: Int64, type: Int) -> Credential? {
        creds.first { $0.tag == tag && $0.type == type }
    }

    /// Parses and validates an inventory. Anything outside docs/protocol.md is an error; the caller drops the
    /// message and counts it.
    public static func parse(_ payload: [UInt8]) throws(CertrotError) -> Inventory {
        let inventory = try decodeMessage(
            Inventory.self, from: payload, what: "inventory", limit: maxPayloadBytes, schemaError: .invalidInventory)
        try inventory.validate()
        return inventory
    }

    public func validate() throws(CertrotError) {
        guard v == 1 else { throw CertrotError(.invalidInventory, "unsupported inventory version \(v); expected 1") }
        guard (0...Bounds.maxSeq).contains(seq) else {
            throw CertrotError(.invalidInventory, "seq \(seq) is outside 0…\(Bounds.maxSeq)")
        }
        if let maxMessage, maxMessage < DeviceProfile.minimumMaxMessage || maxMessage > 268_435_455 {
            throw CertrotError(
                .invalidInventory,
                "maxMessage \(maxMessage) is outside \(DeviceProfile.minimumMaxMessage)…268435455")
        }
        guard creds.count <= Self.maxCredentials else {
            throw CertrotError(
                .invalidInventory, "inventory lists \(creds.count) credentials; at most \(Self.maxCredentials)")
        }
        if let keys {
            guard keys.count <= Self.maxKeys else {
                throw CertrotError(.invalidInventory, "keys lists \(keys.count) kids; at most \(Self.maxKeys)")
            }
            guard keys.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 64 && $0.utf8.allSatisfy(Base64URL.isAlphabet) })
            else {
                throw CertrotError(.invalidInventory, "keys must be base64url kids of at most 64 characters")
            }
        }
        if let active, !(0...Self.maxTag).contains(active) {
            throw CertrotError(.invalidInventory, "active \(active) is outside 0…\(Self.maxTag)")
        }
        if let formats {
            guard formats.count <= 8,
                formats.allSatisfy({
                    (1...16).contains($0.utf8.count)
                        && $0.utf8.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2D }
                })
            else {
                throw CertrotError(
                    .invalidInventory, "formats lists at most 8 names of 1…16 lowercase letters, digits or '-'")
            }
        }
        var seen = Set<[Int64]>()
        for (index, cred) in creds.enumerated() {
            guard (0...Self.maxTag).contains(cred.tag) else {
                throw CertrotError(.invalidInventory, "creds[\(index)].tag \(cred.tag) is outside 0…\(Self.maxTag)")
            }
            guard CredentialType(rawValue: cred.type) != nil else {
                throw CertrotError(.invalidInventory, "creds[\(index)].type \(cred.type) is not an AT%CMNG type (0…6)")
            }
            guard Hex.isSHA256(cred.sha256) else {
                throw CertrotError(.invalidInventory, "creds[\(index)].sha256 is not 64 lowercase hex digits")
            }
            if let notAfter = cred.notAfter, !Bounds.times.contains(notAfter) {
                throw CertrotError(
                    .invalidInventory,
                    "creds[\(index)].notAfter \(notAfter) is outside \(Bounds.times.lowerBound)…\(Bounds.times.upperBound)"
                )
            }
            if let serial = cred.serial, serial.utf8.count > 64 {
                throw CertrotError(.invalidInventory, "creds[\(index)].serial is longer than 64 bytes")
            }
            guard seen.insert([cred.tag, Int64(cred.type)]).inserted else {
                throw CertrotError(.invalidInventory, "creds[\(index)] repeats tag \(cred.tag) type \(cred.type)")
            }
        }
    }

    /// The canonical JSON of this inventory (what the store keeps and devices publish).
    public func encoded() -> [UInt8] {
        Array(try! JSONCoding.encoder.encode(self))  // encoding plain value types cannot fail
    }
}

/// A device's acknowledgement of a bundle, on `{id}/certs/ack`.
public struct Ack: Sendable, Equatable, Codable {
    public enum Status: String, Sendable, Codable, CaseIterable {
        case applied, rejected, failed, incomplete
    }

    public var jti: String
    public var status: Status
    public var code: Int?
    public var reason: String?
    public var missing: [Int]?

    public init(jti: String, status: Status, code: Int? = nil, reason: String? = nil, missing: [Int]? = nil) {
        self.jti = jti
        self.status = status
        self.code = code
        self.reason = reason
        self.missing = missing
    }

    public static let maxPayloadBytes = 4096

    public static func parse(_ payload: [UInt8]) throws(CertrotError) -> Ack {
        let ack = try decodeMessage(
            Ack.self, from: payload, what: "ack", limit: maxPayloadBytes, schemaError: .invalidAck)
        guard !ack.jti.isEmpty, ack.jti.utf8.count <= 64 else {
            throw CertrotError(.invalidAck, "ack jti must be 1…64 bytes")
        }
        if let code = ack.code, !Bounds.ackCodes.contains(code) {
            throw CertrotError(.invalidAck, "ack code \(code) is not a 32-bit integer")
        }
        if let missing = ack.missing {
            guard missing.count <= BundlePart.maxParts, missing.allSatisfy({ (1...BundlePart.maxParts).contains($0) })
            else {
                throw CertrotError(
                    .invalidAck,
                    "missing must list at most \(BundlePart.maxParts) part numbers, each 1…\(BundlePart.maxParts)")
            }
        }
        if ack.status == .incomplete {
            guard let missing = ack.missing, !missing.isEmpty else {
                throw CertrotError(.invalidAck, "an incomplete ack must list the missing part numbers (from 1)")
            }
        }
        return ack
    }

    public func encoded() -> [UInt8] {
        Array(try! JSONCoding.encoder.encode(self))  // encoding plain value types cannot fail
    }
}

public enum JSONCoding {
    /// Sorted keys, `/` unescaped: stable output that devices can parse with a small JSON library.
    public static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}

/// Decodes a device message: `oversize` over `limit`, `bad_json` when it is not JSON, `schemaError` when it does
/// not match the type.
func decodeMessage<T: Decodable>(
    _ type: T.Type, from payload: [UInt8], what: String, limit: Int, schemaError: CertrotError.Code
) throws(CertrotError) -> T {
    if payload.count > limit {
        throw CertrotError(.oversize, "\(what) is \(payload.count) bytes; at most \(limit) are accepted")
    }
    do {
        return try JSONDecoder().decode(T.self, from: Data(payload))
    } catch DecodingError.dataCorrupted(let context)
        where context.codingPath.isEmpty && (try? JSONSerialization.jsonObject(with: Data(payload))) == nil
    {
        // (JSONDecoder also reports a number it cannot represent, such as 1e300, at the root: valid JSON, bad schema.)
        throw CertrotError(.invalidJSON, "\(what) is not valid JSON")
    } catch {
        throw CertrotError(schemaError, "\(what) does not match the schema: \(describe(error))")
    }
}

func describe(_ error: any Error) -> String {
    switch error {
    case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
        DecodingError.dataCorrupted(let context):
        return "\(path(context.codingPath)): \(context.debugDescription)"
    case DecodingError.keyNotFound(let key, let context):
        return "\(path(context.codingPath + [key])): missing"
    default:
        return "\(error)"
    }
}

private func path(_ keys: [any CodingKey]) -> String {
    let text = keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
    return text.isEmpty ? "(root)" : String(text.drop { $0 == "." })
}
