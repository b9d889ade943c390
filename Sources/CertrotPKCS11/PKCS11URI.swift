import CertrotCore

/// An RFC 7512 PKCS#11 URI naming one private key:
/// `pkcs11:token=certrot;object=bundle-signing?module-path=/usr/lib/softhsm/libsofthsm2.so`.
///
/// Path attributes select the token (`token`, `serial`, `manufacturer`, `model`, `slot-id`) and the key (`object`,
/// `id`, `type=private`); query attributes name the module (`module-path`) and, optionally, a PIN file
/// (`pin-source`). `pin-value` is refused: a PIN never sits in the configuration. Unknown attributes are refused
/// too, so that a misspelt one cannot widen the match to another key.
public struct PKCS11URI: Sendable, Equatable, CustomStringConvertible {
    public var token: String?
    public var serial: String?
    public var manufacturer: String?
    public var model: String?
    public var slotID: Int64?
    /// The key's CKA_LABEL.
    public var object: String?
    /// The key's CKA_ID (bytes).
    public var id: [UInt8]?
    public var modulePath: String
    /// A file holding the PIN (`pin-source=file:/path` or a bare path).
    public var pinSource: String?
    /// The text given, which never holds a PIN.
    public let text: String

    public var description: String { text }

    public static func isURI(_ text: String) -> Bool { text.hasPrefix("pkcs11:") }

    public init(_ text: String) throws(CertrotError) {
        func fail(_ why: String) -> CertrotError {
            CertrotError(.invalidConfig, "PKCS#11 URI \(Self.redacted(String(text.prefix(200)))): \(why)")
        }
        guard Self.isURI(text) else { throw fail("must start with pkcs11:") }
        self.text = text
        let rest = text.dropFirst("pkcs11:".count)
        let parts = rest.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var module: String?
        var seen: Set<String> = []
        func attributes(_ text: Substring, separator: Character) throws(CertrotError) -> [(String, [UInt8])] {
            var out: [(String, [UInt8])] = []
            for item in text.split(separator: separator) {
                guard let equals = item.firstIndex(of: "=") else { throw fail("'\(item)' is not name=value") }
                let name = String(item[..<equals])
                guard let value = Self.percentDecode(item[item.index(after: equals)...]) else {
                    throw fail("the value of \(name) has a bad %-escape")
                }
                guard seen.insert(name).inserted else { throw fail("\(name) is given twice") }
                out.append((name, value))
            }
            return out
        }
        for (name, value) in try attributes(parts[0], separator: ";") {
            let string = String(decoding: value, as: UTF8.self)
            switch name {
            case "token": token = string
            case "serial": serial = string
            case "manufacturer": manufacturer = string
            case "model": model = string
            case "object": object = string
            case "id": id = value
            case "slot-id":
                guard let slot = Int64(string), slot >= 0 else { throw fail("slot-id must be a number") }
                slotID = slot
            case "type":
                guard string == "private" else { throw fail("type must be private (certrot signs with the key)") }
            case "library-manufacturer", "library-description", "library-version", "slot-description",
                "slot-manufacturer":
                throw fail(
                    "\(name) is not supported; select the token by token, serial, manufacturer, model or slot-id")
            default: throw fail("unknown attribute \(name)")
            }
        }
        if parts.count == 2 {
            for (name, value) in try attributes(parts[1], separator: "&") {
                let string = String(decoding: value, as: UTF8.self)
                switch name {
                case "module-path": module = string
                case "pin-source": pinSource = string.hasPrefix("file:") ? String(string.dropFirst(5)) : string
                case "pin-value":
                    throw fail("pin-value is refused: give the PIN in pkcs11.pinFile or CERTROT_PKCS11_PIN")
                case "module-name": throw fail("module-name is not supported; give module-path")
                default: throw fail("unknown query attribute \(name)")
                }
            }
        }
        guard let module, module.hasPrefix("/") else {
            throw fail("needs module-path=/absolute/path/to/the/module.so")
        }
        modulePath = module
        guard object != nil || id != nil else { throw fail("needs object= (the key's label) or id=") }
        guard token != nil || serial != nil || slotID != nil else { throw fail("needs token=, serial= or slot-id=") }
    }

    /// `text` with the value of every `pin-value` attribute shown as `***`: what an error message, and so the log or
    /// journald, may carry of a URI (red-team #32, finding 7).
    public static func redacted(_ text: String) -> String {
        var out = ""
        var rest = Substring(text)
        while let range = rest.range(of: "pin-value=") {
            out += rest[..<range.upperBound] + "***"
            rest = rest[range.upperBound...]
            rest = rest.drop { $0 != "&" && $0 != ";" }
        }
        return out + rest
    }

    /// RFC 3986 percent-decoding to bytes; nil on a bad escape.
    static func percentDecode(_ text: Substring) -> [UInt8]? {
        var out: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        while let byte = bytes.popFirst() {
            guard byte == UInt8(ascii: "%") else {
                out.append(byte)
                continue
            }
            guard bytes.count >= 2, let high = hex(bytes.popFirst()!), let low = hex(bytes.popFirst()!) else {
                return nil
            }
            out.append(high << 4 | low)
        }
        return out
    }

    private static func hex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
