import Foundation

public enum Base64URL {
    public static func encode<Bytes: DataProtocol>(_ bytes: Bytes) -> String {
        var text = Data(bytes).base64EncodedString()
        text = text.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        while text.hasSuffix("=") { text.removeLast() }
        return text
    }

    /// Decodes unpadded, canonical base64url; `nil` for anything else (padding, `+`, `/`, whitespace, or non-zero
    /// unused bits in the last character — which would let two texts decode to the same bytes).
    public static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        guard text.utf8.allSatisfy({ isAlphabet($0) }) else { return nil }
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        switch standard.utf8.count % 4 {
        case 0: break
        case 2: standard += "=="
        case 3: standard += "="
        default: return nil
        }
        guard let bytes = Data(base64Encoded: standard).map(Array.init) else { return nil }
        guard encode(bytes) == text else { return nil }
        return bytes
    }

    static func isAlphabet(_ byte: UInt8) -> Bool {
        (65...90).contains(byte) || (97...122).contains(byte) || (48...57).contains(byte) || byte == 45 || byte == 95
    }
}
