import Foundation

/// One message on `{id}/certs`: a slice of the bundle's JWS.
public struct BundlePart: Sendable, Equatable, Codable {
    public var jti: String
    public var part: Int
    public var parts: Int
    public var data: String

    public static let maxParts = 64

    public init(jti: String, part: Int, parts: Int, data: String) {
        self.jti = jti
        self.part = part
        self.parts = parts
        self.data = data
    }

    public static func parse(_ payload: [UInt8]) throws(CertrotError) -> BundlePart {
        let part: BundlePart
        do {
            part = try JSONDecoder().decode(BundlePart.self, from: Data(payload))
        } catch {
            throw CertrotError(.invalidPart, "bundle part does not match the schema: \(describe(error))")
        }
        guard part.parts >= 1, part.parts <= maxParts, (1...part.parts).contains(part.part) else {
            throw CertrotError(.invalidPart, "part \(part.part) of \(part.parts) is out of range")
        }
        return part
    }
}

/// Splits a JWS into part messages so that every MQTT PUBLISH packet fits the device's `maxMessage`.
public enum Parts {
    /// Size of an MQTT 3.1.1 QoS 1 PUBLISH packet: fixed header (1 byte + remaining-length varint), topic
    /// (2-byte length + bytes), packet identifier (2), payload. MQTT 5 adds a properties length; certrot publishes
    /// to devices without properties and a 3.1.1 device receives none.
    public static func publishPacketSize(topicBytes: Int, payloadBytes: Int) -> Int {
        let remaining = 2 + topicBytes + 2 + payloadBytes
        return 1 + varintLength(remaining) + remaining
    }

    static func varintLength(_ value: Int) -> Int {
        switch value {
        case ..<128: 1
        case ..<16_384: 2
        case ..<2_097_152: 3
        default: 4
        }
    }

    static func payload(jti: String, part: Int, parts: Int, data: Substring) -> [UInt8] {
        Array(#"{"jti":"\#(jti)","part":\#(part),"parts":\#(parts),"data":"\#(data)"}"#.utf8)
    }

    /// Returns the part payloads, in order. `jti` must be JSON-safe (certrot's are hex); `jws` is base64url and
    /// dots, so slices need no escaping.
    public static func split(jws: String, jti: String, topic: String, maxMessage: Int) throws(CertrotError) -> [[UInt8]]
    {
        let topicBytes = topic.utf8.count
        let fixedOverhead = payload(jti: jti, part: 0, parts: 0, data: "").count - 2
        let total = jws.utf8.count
        var parts = 1
        var chunk = 0
        while true {
            let digits = String(parts).count
            let payloadBudget = maxMessage - 1 - varintLength(maxMessage) - 2 - topicBytes - 2
            chunk = payloadBudget - fixedOverhead - 2 * digits
            guard chunk > 0 else {
                throw CertrotError(
                    .messageTooSmall,
                    "maxMessage \(maxMessage) leaves no room for data on topic '\(topic)' (\(topicBytes) bytes)")
            }
            let needed = (total + chunk - 1) / chunk
            if needed <= parts {
                parts = max(needed, 1)
                break
            }
            parts = needed
        }
        guard parts <= BundlePart.maxParts else {
            throw CertrotError(
                .messageTooSmall,
                "bundle needs \(parts) parts at maxMessage \(maxMessage); at most \(BundlePart.maxParts)")
        }
        var out: [[UInt8]] = []
        out.reserveCapacity(parts)
        let utf8 = jws.utf8
        var start = utf8.startIndex
        for index in 1...parts {
            let end = utf8.index(start, offsetBy: chunk, limitedBy: utf8.endIndex) ?? utf8.endIndex
            out.append(payload(jti: jti, part: index, parts: parts, data: Substring(utf8[start..<end])))
            start = end
        }
        return out
    }
}

/// Reassembles parts on the device side. Holds at most `capacity` bytes of JWS; out-of-order and duplicate
/// parts are fine; a part of another `jti` starts over.
public struct PartAssembler: Sendable {
    public enum Outcome: Sendable, Equatable {
        case waiting
        case complete(jws: String)
        case tooLarge(bytes: Int)
    }

    public let capacity: Int
    public private(set) var jti: String?
    private var slices: [Int: String] = [:]
    private var parts = 0
    private var bytes = 0

    public init(capacity: Int) {
        self.capacity = capacity
    }

    public mutating func add(_ part: BundlePart) -> Outcome {
        if part.jti != jti || part.parts != parts {
            jti = part.jti
            parts = part.parts
            slices = [:]
            bytes = 0
        }
        if slices[part.part] == nil {
            slices[part.part] = part.data
            bytes += part.data.utf8.count
        }
        if bytes > capacity { return .tooLarge(bytes: bytes) }
        guard slices.count == parts else { return .waiting }
        let jws = (1...parts).map { slices[$0]! }.joined()
        reset()
        return .complete(jws: jws)
    }

    /// Part numbers not yet received for the current bundle.
    public var missing: [Int] {
        guard parts > 0 else { return [] }
        return (1...parts).filter { slices[$0] == nil }
    }

    public mutating func reset() {
        jti = nil
        slices = [:]
        parts = 0
        bytes = 0
    }
}
