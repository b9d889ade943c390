extension CBOR {
    /// Decodes exactly one item that fills `bytes` and is in the core deterministic encoding (RFC 8949 §4.2.1):
    /// what a device requires of a compact bundle, so that one bundle has one encoding. Refused, each with its
    /// reason: trailing bytes, indefinite lengths (as ``decode(_:)``), duplicate map keys, and any other
    /// departure from the deterministic form (a longer head than needed, map keys out of order).
    public static func decodeDeterministic(_ bytes: [UInt8]) throws(CertrotError) -> CBOR {
        let item = try decode(bytes)
        if let duplicate = item.firstDuplicateKey {
            throw CertrotError(.invalidCBOR, "CBOR map has the key \(duplicate) twice")
        }
        guard item.encoded == bytes else {
            throw CertrotError(
                .invalidCBOR, "CBOR is not in the core deterministic encoding (shortest heads, map keys sorted)")
        }
        return item
    }

    /// The first map key that appears twice in one map, anywhere in the item (nil: none).
    var firstDuplicateKey: String? {
        switch self {
        case .array(let items):
            return items.lazy.compactMap(\.firstDuplicateKey).first
        case .map(let pairs):
            var seen: Set<[UInt8]> = []
            for pair in pairs where !seen.insert(pair.key.encoded).inserted {
                return pair.key.text.map { "\"\($0)\"" } ?? "\(pair.key.int.map(String.init) ?? "(bytes)")"
            }
            return pairs.lazy.compactMap { $0.key.firstDuplicateKey ?? $0.value.firstDuplicateKey }.first
        case .tagged(_, let inner):
            return inner.firstDuplicateKey
        default:
            return nil
        }
    }
}
