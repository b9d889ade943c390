/// The part messages of a compact bundle on `{id}/certs` (docs/protocol.md §12): the CBOR array
/// `[jti (16-byte bstr), part, parts, data (bstr)]`, first byte 0x84 (a JSON part starts with `{`). The `data` of
/// parts 1…parts, concatenated, is the COSE_Sign1.
public enum CompactParts {
    /// The most a part's CBOR adds around its data: array head, the jti, part and parts up to 64, the data's head.
    static let overhead = 1 + 17 + 2 + 2 + 3

    /// The part payloads, in order; every PUBLISH packet on `topic` is at most `maxMessage` bytes.
    public static func split(
        cose: [UInt8], jti: [UInt8], topic: String, maxMessage: Int
    ) throws(CertrotError) -> [[UInt8]] {
        guard jti.count == 16 else { throw CertrotError(.invalidBundle, "a compact bundle's jti is 16 bytes") }
        let topicBytes = topic.utf8.count
        // At most 65,535 bytes a part, so that the data's head is never longer than `overhead` allows for.
        let budget = min(65_535, maxMessage - 1 - Parts.varintLength(maxMessage) - 2 - topicBytes - 2 - overhead)
        guard budget >= 64 else {
            throw CertrotError(
                .messageTooSmall, "maxMessage \(maxMessage) leaves \(max(budget, 0)) bytes a part on \(topic)")
        }
        let count = max(1, (cose.count + budget - 1) / budget)
        guard count <= BundlePart.maxParts else {
            throw CertrotError(
                .messageTooSmall,
                "the bundle needs \(count) parts of \(budget) bytes; at most \(BundlePart.maxParts) are allowed")
        }
        var parts: [[UInt8]] = []
        for index in 0..<count {
            let data = Array(cose[(index * budget)..<min(cose.count, (index + 1) * budget)])
            let payload = CBOR.array([.bytes(jti), .int(Int64(index + 1)), .int(Int64(count)), .bytes(data)]).encoded
            guard Parts.publishPacketSize(topicBytes: topicBytes, payloadBytes: payload.count) <= maxMessage else {
                throw CertrotError(.messageTooSmall, "a compact part does not fit maxMessage \(maxMessage)")
            }
            parts.append(payload)
        }
        return parts
    }

    /// One compact part, checked: the shape, the jti's length, 1 ≤ part ≤ parts ≤ 64.
    public static func parse(
        _ payload: [UInt8]
    ) throws(CertrotError) -> (jti: [UInt8], part: Int, parts: Int, data: [UInt8]) {
        guard payload.first == 0x84 else { throw CertrotError(.invalidPart, "a compact part starts with 0x84") }
        let item = try CBOR.decodeDeterministic(payload)
        guard let fields = item.array, fields.count == 4, let jti = fields[0].bytes, jti.count == 16,
            let part = fields[1].int, let parts = fields[2].int, let data = fields[3].bytes
        else { throw CertrotError(.invalidPart, "a compact part is [jti (16-byte bstr), part, parts, data (bstr)]") }
        guard parts >= 1, parts <= Int64(BundlePart.maxParts), part >= 1, part <= parts else {
            throw CertrotError(.invalidPart, "part \(part) of \(parts) is out of range")
        }
        return (jti, Int(part), Int(parts), data)
    }

    /// Bytes on air for these part payloads on `topic`: every PUBLISH packet, headers included.
    public static func bytesOnAir(_ payloads: [[UInt8]], topic: String) -> Int {
        payloads.reduce(0) { $0 + Parts.publishPacketSize(topicBytes: topic.utf8.count, payloadBytes: $1.count) }
    }
}
