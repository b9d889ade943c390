/// A CBOR data item (RFC 8949): what certrot reads from modems (AT%KEYGEN's COSE_Sign1) and, encoded in the core
/// deterministic form of §4.2, writes. Only what those need: integers, byte and text strings, arrays, maps, tags,
/// booleans, null and floats; definite lengths only.
public indirect enum CBOR: Sendable, Equatable {
    case unsigned(UInt64)
    /// The integer −1 − n.
    case negative(UInt64)
    case bytes([UInt8])
    case text(String)
    case array([CBOR])
    /// In the order read (or to be written: ``encoded`` sorts the keys).
    case map([(key: CBOR, value: CBOR)])
    case tagged(UInt64, CBOR)
    case bool(Bool)
    case null
    case undefined
    case double(Double)

    public static func == (a: CBOR, b: CBOR) -> Bool {
        switch (a, b) {
        case (.unsigned(let x), .unsigned(let y)), (.negative(let x), .negative(let y)): x == y
        case (.bytes(let x), .bytes(let y)): x == y
        case (.text(let x), .text(let y)): x == y
        case (.array(let x), .array(let y)): x == y
        case (.map(let x), .map(let y)):
            x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.tagged(let t, let x), .tagged(let u, let y)): t == u && x == y
        case (.bool(let x), .bool(let y)): x == y
        case (.null, .null), (.undefined, .undefined): true
        case (.double(let x), .double(let y)): x == y || (x.isNaN && y.isNaN)
        default: false
        }
    }

    /// An integer item.
    public static func int(_ value: Int64) -> CBOR {
        value >= 0 ? .unsigned(UInt64(value)) : .negative(UInt64(-(value + 1)))
    }

    /// The value of an integer item that fits an Int64.
    public var int: Int64? {
        switch self {
        case .unsigned(let n): n <= UInt64(Int64.max) ? Int64(n) : nil
        case .negative(let n): n <= UInt64(Int64.max) ? -1 - Int64(n) : nil
        default: nil
        }
    }

    public var bytes: [UInt8]? { if case .bytes(let b) = self { b } else { nil } }
    public var text: String? { if case .text(let t) = self { t } else { nil } }
    public var array: [CBOR]? { if case .array(let a) = self { a } else { nil } }

    /// The value under `key` of a map item.
    public subscript(key: CBOR) -> CBOR? {
        guard case .map(let pairs) = self else { return nil }
        return pairs.first { $0.key == key }?.value
    }
}

// MARK: Decoding

extension CBOR {
    /// Nesting deeper than this is refused (a hostile input cannot exhaust the stack).
    public static let maxDepth = 16

    /// Decodes exactly one item that fills `bytes`.
    public static func decode(_ bytes: [UInt8]) throws(CertrotError) -> CBOR {
        var reader = Reader(bytes: bytes)
        let item = try reader.item(depth: 0)
        guard reader.offset == bytes.count else {
            throw CertrotError(.invalidCBOR, "\(bytes.count - reader.offset) bytes after the CBOR item")
        }
        return item
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func byte() throws(CertrotError) -> UInt8 {
            guard offset < bytes.count else { throw CertrotError(.invalidCBOR, "CBOR ends inside an item") }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func take(_ count: UInt64) throws(CertrotError) -> [UInt8] {
            guard count <= UInt64(bytes.count - offset) else {
                throw CertrotError(.invalidCBOR, "CBOR string of \(count) bytes runs past the end")
            }
            defer { offset += Int(count) }
            return Array(bytes[offset..<offset + Int(count)])
        }

        /// The argument of a head whose additional information is `info`.
        mutating func argument(_ info: UInt8) throws(CertrotError) -> UInt64 {
            switch info {
            case 0..<24: return UInt64(info)
            case 24, 25, 26, 27:
                var value: UInt64 = 0
                for _ in 0..<(1 << (info - 24)) { value = value << 8 | UInt64(try byte()) }
                return value
            case 31: throw CertrotError(.invalidCBOR, "indefinite-length CBOR items are not accepted")
            default: throw CertrotError(.invalidCBOR, "reserved CBOR additional information \(info)")
            }
        }

        mutating func item(depth: Int) throws(CertrotError) -> CBOR {
            guard depth <= CBOR.maxDepth else { throw CertrotError(.invalidCBOR, "CBOR nested too deep") }
            let head = try byte()
            let major = head >> 5
            let info = head & 0x1F
            if major == 7 { return try simple(info) }
            let argument = try argument(info)
            switch major {
            case 0: return .unsigned(argument)
            case 1: return .negative(argument)
            case 2: return .bytes(try take(argument))
            case 3:
                let raw = try take(argument)
                guard let text = String(validating: raw, as: UTF8.self) else {
                    throw CertrotError(.invalidCBOR, "CBOR text string is not UTF-8")
                }
                return .text(text)
            case 4:
                // Each element takes at least a byte: a count beyond what is left is a lie, refused before allocating.
                guard argument <= UInt64(bytes.count - offset) else {
                    throw CertrotError(.invalidCBOR, "CBOR array of \(argument) items runs past the end")
                }
                var items: [CBOR] = []
                items.reserveCapacity(Int(argument))
                for _ in 0..<argument { items.append(try item(depth: depth + 1)) }
                return .array(items)
            case 5:
                guard argument <= UInt64(bytes.count - offset) / 2 else {
                    throw CertrotError(.invalidCBOR, "CBOR map of \(argument) pairs runs past the end")
                }
                var pairs: [(key: CBOR, value: CBOR)] = []
                for _ in 0..<argument {
                    let key = try item(depth: depth + 1)
                    pairs.append((key, try item(depth: depth + 1)))
                }
                return .map(pairs)
            default:  // 6
                return .tagged(argument, try item(depth: depth + 1))
            }
        }

        mutating func simple(_ info: UInt8) throws(CertrotError) -> CBOR {
            switch info {
            case 20: return .bool(false)
            case 21: return .bool(true)
            case 22: return .null
            case 23: return .undefined
            case 25: return .double(Double(Float16(bitPattern: UInt16(try argument(25)))))
            case 26: return .double(Double(Float(bitPattern: UInt32(try argument(26)))))
            case 27: return .double(Double(bitPattern: try argument(27)))
            default: throw CertrotError(.invalidCBOR, "unsupported CBOR simple value \(info)")
            }
        }
    }
}

// MARK: Encoding

extension CBOR {
    /// The core deterministic encoding (RFC 8949 §4.2.1): shortest heads, definite lengths, map keys sorted by
    /// their encoded bytes, floats in the shortest form that keeps their value.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        write(into: &out)
        return out
    }

    /// `bytes` as a byte string (major type 2), appended to `out`.
    static func byteString(_ bytes: [UInt8], into out: inout [UInt8]) {
        head(2, UInt64(bytes.count), into: &out)
        out += bytes
    }

    private static func head(_ major: UInt8, _ value: UInt64, into out: inout [UInt8]) {
        let type = major << 5
        switch value {
        case 0..<24: out.append(type | UInt8(value))
        case 24...0xFF:
            out.append(type | 24)
            out.append(UInt8(value))
        case 0x100...0xFFFF:
            out.append(type | 25)
            out.append(UInt8(value >> 8))
            out.append(UInt8(value & 0xFF))
        case 0x1_0000...0xFFFF_FFFF:
            out.append(type | 26)
            for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(value >> UInt64(shift) & 0xFF)) }
        default:
            out.append(type | 27)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(value >> UInt64(shift) & 0xFF)) }
        }
    }

    private func write(into out: inout [UInt8]) {
        switch self {
        case .unsigned(let n): Self.head(0, n, into: &out)
        case .negative(let n): Self.head(1, n, into: &out)
        case .bytes(let b):
            Self.head(2, UInt64(b.count), into: &out)
            out += b
        case .text(let t):
            Self.head(3, UInt64(t.utf8.count), into: &out)
            out.append(contentsOf: t.utf8)
        case .array(let items):
            Self.head(4, UInt64(items.count), into: &out)
            for item in items { item.write(into: &out) }
        case .map(let pairs):
            Self.head(5, UInt64(pairs.count), into: &out)
            // Sorted by the keys' encodings; each value is written in place, not encoded apart and copied.
            let sorted = pairs.map { (key: $0.key.encoded, value: $0.value) }.sorted {
                $0.key.lexicographicallyPrecedes($1.key)
            }
            for pair in sorted {
                out.append(contentsOf: pair.key)
                pair.value.write(into: &out)
            }
        case .tagged(let tag, let item):
            Self.head(6, tag, into: &out)
            item.write(into: &out)
        case .bool(let value): out.append(value ? 0xF5 : 0xF4)
        case .null: out.append(0xF6)
        case .undefined: out.append(0xF7)
        case .double(let value):
            if let half = Float16(exactly: value) ?? (value.isNaN ? Float16.nan : nil) {
                out.append(0xF9)
                out += [UInt8(half.bitPattern >> 8), UInt8(half.bitPattern & 0xFF)]
            } else if let single = Float(exactly: value) {
                out.append(0xFA)
                for shift in stride(from: 24, through: 0, by: -8) {
                    out.append(UInt8(single.bitPattern >> UInt32(shift) & 0xFF))
                }
            } else {
                out.append(0xFB)
                for shift in stride(from: 56, through: 0, by: -8) {
                    out.append(UInt8(value.bitPattern >> UInt64(shift) & 0xFF))
                }
            }
        }
    }
}
