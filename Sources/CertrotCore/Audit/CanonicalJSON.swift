import Foundation
import Synchronization

/// The audit log's canonical JSON: exactly the bytes of `JSONSerialization.data(withJSONObject:options:
/// [.sortedKeys, .withoutEscapingSlashes])` — what every record's hash has been computed over since the log began —
/// written without JSONSerialization's costs, which were 14 % of the daemon's CPU during a 100,000-device campaign
/// (#35 §3: every bundle signed appends a record, whose body and canonical form were each serialised): keys are
/// put in Foundation's order once per set of keys (the order JSONSerialization sorts them in, a locale-aware
/// numeric, case-insensitive comparison, is the costly part), and values are written directly. Anything other
/// than strings, booleans, integers, arrays, dictionaries and null goes through JSONSerialization as before.
/// `CanonicalJSONTests` compares the two on every kind of key and value.
public enum CanonicalJSON {
    /// The bytes of `object` (a dictionary or an array); nil where JSONSerialization would fail.
    public static func data(_ object: Any) -> [UInt8]? {
        if let written = direct(object) { return written }
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            .map(Array.init)
    }

    /// The bytes of `object` as this writer alone writes them: nil for an object it leaves to JSONSerialization.
    public static func direct(_ object: Any) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        return write(object, to: &out) ? out : nil
    }

    /// Writes `value` as JSONSerialization would; false for a value this writer leaves to JSONSerialization.
    private static func write(_ value: Any, to out: inout [UInt8]) -> Bool {
        // Numbers Foundation made (JSONSerialization's own parse) are its to write.
        if type(of: value) is NSNumber.Type { return false }
        switch value {
        case let string as String: writeString(string, to: &out)
        case let bool as Bool: out += bool ? Array("true".utf8) : Array("false".utf8)
        case let int as Int: out += Array(int.description.utf8)
        case let int as Int64: out += Array(int.description.utf8)
        case let int as Int32: out += Array(int.description.utf8)
        case let int as UInt64: out += Array(int.description.utf8)
        case let array as [Any]:
            out.append(UInt8(ascii: "["))
            for (index, element) in array.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                guard write(element, to: &out) else { return false }
            }
            out.append(UInt8(ascii: "]"))
        case let object as [String: Any]:
            out.append(UInt8(ascii: "{"))
            for (index, key) in order(of: object.keys).enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                writeString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                guard let element = object[key], write(element, to: &out) else { return false }
            }
            out.append(UInt8(ascii: "}"))
        case is NSNull: out += Array("null".utf8)
        default: return false
        }
        return true
    }

    /// A string as JSONSerialization writes it (slashes unescaped): `"` and `\` escaped, the control characters
    /// as `\b \f \n \r \t` or `\u00xx` (lower-case hex), everything else as its UTF-8.
    private static func writeString(_ string: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x08: out += [UInt8(ascii: "\\"), UInt8(ascii: "b")]
            case 0x0C: out += [UInt8(ascii: "\\"), UInt8(ascii: "f")]
            case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Sets of keys already put in Foundation's order, by the keys in code-unit order. Records have a handful of
    /// shapes; the cache stops growing at `maxCached` sets (beyond that each order is worked out again).
    private static let orders = Mutex<[[String]: [String]]>([:])
    private static let maxCached = 1024

    /// `keys` in the order JSONSerialization's `sortedKeys` writes them (swift-corelibs-foundation's comparison:
    /// numeric, case-insensitive, forced ordering, in the system locale).
    static func order(of keys: Dictionary<String, Any>.Keys) -> [String] {
        let plain = keys.sorted()
        if let known = orders.withLock({ $0[plain] }) { return known }
        let sorted = plain.sorted { a, b in
            a.compare(
                b, options: [.numeric, .caseInsensitive, .forcedOrdering], range: a.startIndex..<a.endIndex,
                locale: NSLocale.system) == .orderedAscending
        }
        orders.withLock { cache in
            if cache.count < maxCached { cache[plain] = sorted }
        }
        return sorted
    }
}
