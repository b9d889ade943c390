extension BundleClaims {
    /// The claims as JSON, byte for byte what `JSONCoding.encoder` writes (sorted keys, `/` unescaped, `nil`
    /// members omitted), without JSONEncoder's cost: this is the JWS payload ``JWS/sign(_:with:)`` signs.
    public func encoded() -> [UInt8] {
        var json = JSONWriter(capacity: 192 + ops.reduce(0) { $0 + 160 + ($1.pem?.utf8.count ?? 0) * 33 / 32 })
        json.beginObject()
        json.key(#""exp":"#)
        json.integer(exp)
        json.key(#""iat":"#)
        json.integer(iat)
        json.key(#""iss":"#)
        json.string(iss)
        json.key(#""jti":"#)
        json.string(jti)
        json.key(#""ops":"#)
        json.raw("[")
        for (index, op) in ops.enumerated() {
            if index > 0 { json.raw(",") }
            op.writeJSON(to: &json)
        }
        json.raw("]")
        json.key(#""seq":"#)
        json.integer(seq)
        json.key(#""sub":"#)
        json.string(sub)
        json.endObject()
        return json.bytes
    }
}

extension BundleOp {
    func writeJSON(to json: inout JSONWriter) {
        json.beginObject()
        if let jwk {
            json.key(#""jwk":"#)
            jwk.writeJSON(to: &json)
        }
        if let kid {
            json.key(#""kid":"#)
            json.string(kid)
        }
        json.key(#""op":"#)
        json.string(op.rawValue)
        if let pem {
            json.key(#""pem":"#)
            json.string(pem)
        }
        if let sha256 {
            json.key(#""sha256":"#)
            json.string(sha256)
        }
        if let subject {
            json.key(#""subject":"#)
            json.string(subject)
        }
        if let tag {
            json.key(#""tag":"#)
            json.integer(tag)
        }
        if let type {
            json.key(#""type":"#)
            json.integer(Int64(type))
        }
        json.endObject()
    }
}

extension JWK {
    func writeJSON(to json: inout JSONWriter) {
        json.beginObject()
        json.key(#""crv":"#)
        json.string(crv)
        json.key(#""kty":"#)
        json.string(kty)
        json.key(#""x":"#)
        json.string(x)
        json.key(#""y":"#)
        json.string(y)
        json.endObject()
    }
}

/// Compact JSON into a byte buffer, strings escaped as Foundation's JSONEncoder escapes them with
/// `.withoutEscapingSlashes`: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other C0 controls as `\u00xx` (lowercase
/// hex), everything else (DEL and non-ASCII included) as raw UTF-8. Members are written in the order given.
struct JSONWriter {
    private(set) var bytes: [UInt8] = []
    /// True right after `{`: the next member needs no comma.
    private var atObjectStart = false

    init(capacity: Int) {
        bytes.reserveCapacity(capacity)
    }

    mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func beginObject() {
        bytes.append(UInt8(ascii: "{"))
        atObjectStart = true
    }

    mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        atObjectStart = false
    }

    /// A member's name, given quoted and with its colon (`"name":`); the value follows.
    mutating func key(_ quotedName: StaticString) {
        if !atObjectStart { bytes.append(UInt8(ascii: ",")) }
        atObjectStart = false
        raw(quotedName)
    }

    mutating func integer(_ value: Int64) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        let start = bytes.count
        repeat {
            bytes.append(UInt8(ascii: "0") + UInt8(magnitude % 10))
            magnitude /= 10
        } while magnitude > 0
        bytes[start...].reverse()
    }

    mutating func string(_ value: String) {
        var value = value
        bytes.append(UInt8(ascii: "\""))
        value.withUTF8 { utf8 in
            var run = 0  // start of the bytes not yet copied
            for index in utf8.indices {
                let byte = utf8[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run..<index]))
                escape(byte)
                run = index + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run...]))
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func escape(_ byte: UInt8) {
        let short: UInt8? =
            switch byte {
            case UInt8(ascii: "\""): UInt8(ascii: "\"")
            case UInt8(ascii: "\\"): UInt8(ascii: "\\")
            case 0x08: UInt8(ascii: "b")
            case 0x0C: UInt8(ascii: "f")
            case 0x0A: UInt8(ascii: "n")
            case 0x0D: UInt8(ascii: "r")
            case 0x09: UInt8(ascii: "t")
            default: nil
            }
        bytes.append(UInt8(ascii: "\\"))
        if let short {
            bytes.append(short)
        } else {
            let hex: StaticString = "0123456789abcdef"
            raw("u00")
            bytes.append(hex.utf8Start[Int(byte >> 4)])
            bytes.append(hex.utf8Start[Int(byte & 0x0F)])
        }
    }
}

// MARK: Reading

extension BundleClaims {
    /// Parses JSON in exactly the form ``encoded()`` writes, `nil` for anything else; callers then fall back to
    /// JSONDecoder, which decides. A result is kept only if it re-encodes to `bytes`, so it is what JSONDecoder
    /// would have returned.
    init?(canonical bytes: [UInt8]) {
        var json = JSONReader(bytes)
        guard json.take(#"{"exp":"#), let exp = json.integer(), json.take(#","iat":"#), let iat = json.integer(),
            json.take(#","iss":"#), let iss = json.string(), json.take(#","jti":"#), let jti = json.string(),
            json.take(#","ops":["#)
        else { return nil }
        var ops: [BundleOp] = []
        if !json.take("]") {
            repeat {
                guard let op = BundleOp(reading: &json) else { return nil }
                ops.append(op)
            } while json.take(",")
            guard json.take("]") else { return nil }
        }
        guard json.take(#","seq":"#), let seq = json.integer(), json.take(#","sub":"#), let sub = json.string(),
            json.take("}"), json.atEnd
        else { return nil }
        self.init(iss: iss, sub: sub, jti: jti, iat: iat, exp: exp, seq: seq, ops: ops)
        guard encoded() == bytes else { return nil }
    }
}

extension BundleOp {
    init?(reading json: inout JSONReader) {
        guard json.take("{") else { return nil }
        var jwk: JWK?
        var kid: String?
        var pem: String?
        var sha256: String?
        var subject: String?
        var tag: Int64?
        var type: Int?
        if json.take(#""jwk":"#) {
            guard let value = JWK(reading: &json), json.take(",") else { return nil }
            jwk = value
        }
        if json.take(#""kid":"#) {
            guard let value = json.string(), json.take(",") else { return nil }
            kid = value
        }
        guard json.take(#""op":"#), let name = json.string(), let op = Kind(rawValue: name) else { return nil }
        if json.take(#","pem":"#) {
            guard let value = json.string() else { return nil }
            pem = value
        }
        if json.take(#","sha256":"#) {
            guard let value = json.string() else { return nil }
            sha256 = value
        }
        if json.take(#","subject":"#) {
            guard let value = json.string() else { return nil }
            subject = value
        }
        if json.take(#","tag":"#) {
            guard let value = json.integer() else { return nil }
            tag = value
        }
        if json.take(#","type":"#) {
            guard let value = json.integer().flatMap(Int.init(exactly:)) else { return nil }
            type = value
        }
        guard json.take("}") else { return nil }
        self.init(op: op, tag: tag, type: type, sha256: sha256, pem: pem, jwk: jwk, kid: kid, subject: subject)
    }
}

extension JWK {
    init?(reading json: inout JSONReader) {
        guard json.take(#"{"crv":"#), let crv = json.string(), json.take(#","kty":"#), let kty = json.string(),
            json.take(#","x":"#), let x = json.string(), json.take(#","y":"#), let y = json.string(), json.take("}")
        else { return nil }
        self.init(kty: kty, crv: crv, x: x, y: y)
    }

    init(kty: String, crv: String, x: String, y: String) {
        self.kty = kty
        self.crv = crv
        self.x = x
        self.y = y
    }
}

extension JWSHeader {
    /// As ``BundleClaims/init(canonical:)``, for the header ``JWS`` writes: `{"alg":…,"kid":…,"typ":…}`.
    init?(canonical bytes: [UInt8]) {
        var json = JSONReader(bytes)
        guard json.take(#"{"alg":"#), let alg = json.string(), json.take(#","kid":"#), let kid = json.string(),
            json.take(#","typ":"#), let typ = json.string(), json.take("}"), json.atEnd
        else { return nil }
        var writer = JSONWriter(capacity: bytes.count)
        writer.beginObject()
        writer.key(#""alg":"#)
        writer.string(alg)
        writer.key(#""kid":"#)
        writer.string(kid)
        writer.key(#""typ":"#)
        writer.string(typ)
        writer.endObject()
        guard writer.bytes == bytes else { return nil }
        self.init(alg: alg, kid: kid, typ: typ)
    }
}

/// Reads JSON laid out as ``JSONWriter`` writes it: no whitespace, members in the caller's order, the writer's
/// escapes. Anything else fails (`false` or `nil`), including JSON that JSONDecoder would accept.
struct JSONReader {
    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    var atEnd: Bool { index == bytes.count }

    /// Consumes `literal` if the input continues with it.
    mutating func take(_ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard bytes.count - index >= count else { return false }
        let start = literal.utf8Start
        for offset in 0..<count where bytes[index + offset] != start[offset] { return false }
        index += count
        return true
    }

    /// An integer in the range of Int64 (leading zeros and `-0` pass here; re-encoding catches them).
    mutating func integer() -> Int64? {
        let negative = take("-")
        var magnitude: UInt64 = 0
        let start = index
        while index < bytes.count, case let digit = bytes[index] &- UInt8(ascii: "0"), digit < 10 {
            let (times10, overflow) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, carry) = times10.addingReportingOverflow(UInt64(digit))
            guard !overflow, !carry else { return nil }
            magnitude = sum
            index += 1
        }
        guard index > start else { return nil }
        if negative {
            guard magnitude <= Int64.min.magnitude else { return nil }
            return Int64(truncatingIfNeeded: 0 &- magnitude)
        }
        return Int64(exactly: magnitude)
    }

    /// A string with the writer's escapes: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, `\u00xx`.
    mutating func string() -> String? {
        guard take("\"") else { return nil }
        var unescaped: [UInt8] = []
        var run = index  // start of the bytes not yet copied to `unescaped`
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                let end = index
                index += 1
                if unescaped.isEmpty { return String(decoding: bytes[run..<end], as: UTF8.self) }
                unescaped.append(contentsOf: bytes[run..<end])
                return String(decoding: unescaped, as: UTF8.self)
            case UInt8(ascii: "\\"):
                unescaped.append(contentsOf: bytes[run..<index])
                guard index + 1 < bytes.count else { return nil }
                let escaped: UInt8
                switch bytes[index + 1] {
                case UInt8(ascii: "\""): escaped = UInt8(ascii: "\"")
                case UInt8(ascii: "\\"): escaped = UInt8(ascii: "\\")
                case UInt8(ascii: "b"): escaped = 0x08
                case UInt8(ascii: "f"): escaped = 0x0C
                case UInt8(ascii: "n"): escaped = 0x0A
                case UInt8(ascii: "r"): escaped = 0x0D
                case UInt8(ascii: "t"): escaped = 0x09
                case UInt8(ascii: "u"):
                    guard index + 5 < bytes.count, bytes[index + 2] == UInt8(ascii: "0"),
                        bytes[index + 3] == UInt8(ascii: "0"), let high = Self.hex(bytes[index + 4]),
                        let low = Self.hex(bytes[index + 5])
                    else { return nil }
                    escaped = high << 4 | low
                    index += 4
                default:
                    return nil
                }
                unescaped.append(escaped)
                index += 2
                run = index
            case ..<0x20:
                return nil
            default:
                index += 1
            }
        }
        return nil
    }

    private static func hex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        default: nil
        }
    }
}
