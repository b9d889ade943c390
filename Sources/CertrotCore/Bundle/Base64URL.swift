import Foundation

/// Unpadded base64url (RFC 4648 §5), as JWS uses it, by table over bytes.
public enum Base64URL {
    private static let alphabet: [UInt8] = Array(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Each byte's 6-bit value; 0xFF for bytes outside the alphabet.
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (value, byte) in alphabet.enumerated() { table[Int(byte)] = UInt8(value) }
        return table
    }()

    public static func encode<Bytes: DataProtocol>(_ bytes: Bytes) -> String {
        withContiguousBytes(bytes) { input in
            String(unsafeUninitializedCapacity: encodedCount(input.count)) { encode(input, into: $0) }
        }
    }

    /// Appends the encoding of `bytes` to `output`.
    static func append<Bytes: DataProtocol>(_ bytes: Bytes, to output: inout [UInt8]) {
        withContiguousBytes(bytes) { input in
            let start = output.count
            let count = encodedCount(input.count)
            output.append(contentsOf: repeatElement(0, count: count))
            output.withUnsafeMutableBufferPointer { buffer in
                _ = encode(input, into: UnsafeMutableBufferPointer(rebasing: buffer[start..<(start + count)]))
            }
        }
    }

    /// Length of the unpadded encoding of `count` bytes.
    static func encodedCount(_ count: Int) -> Int {
        count / 3 * 4 + (count % 3 == 0 ? 0 : count % 3 + 1)
    }

    /// Decodes unpadded, canonical base64url; `nil` for anything else (padding, `+`, `/`, whitespace, or non-zero
    /// unused bits in the last character — which would let two texts decode to the same bytes).
    public static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        if let decoded = text.utf8.withContiguousStorageIfAvailable({ decode(bytes: $0) }) { return decoded }
        return Array(text.utf8).withUnsafeBufferPointer { decode(bytes: $0) }
    }

    static func isAlphabet(_ byte: UInt8) -> Bool {
        values[Int(byte)] != 0xFF
    }

    private static func withContiguousBytes<Bytes: DataProtocol, R>(
        _ bytes: Bytes, _ body: (UnsafeBufferPointer<UInt8>) -> R
    ) -> R {
        if let result = bytes.withContiguousStorageIfAvailable(body) { return result }
        return Array(bytes).withUnsafeBufferPointer(body)
    }

    /// Writes `encodedCount(input.count)` bytes to the start of `output` and returns that count.
    private static func encode(
        _ input: UnsafeBufferPointer<UInt8>, into output: UnsafeMutableBufferPointer<UInt8>
    ) -> Int {
        alphabet.withUnsafeBufferPointer { alphabet in
            var i = 0
            var o = 0
            while input.count - i >= 3 {
                let group = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
                output[o] = alphabet[Int(group >> 18)]
                output[o + 1] = alphabet[Int(group >> 12 & 0x3F)]
                output[o + 2] = alphabet[Int(group >> 6 & 0x3F)]
                output[o + 3] = alphabet[Int(group & 0x3F)]
                i += 3
                o += 4
            }
            switch input.count - i {
            case 1:
                output[o] = alphabet[Int(input[i] >> 2)]
                output[o + 1] = alphabet[Int(input[i] << 4 & 0x3F)]
                o += 2
            case 2:
                let group = UInt32(input[i]) << 8 | UInt32(input[i + 1])
                output[o] = alphabet[Int(group >> 10)]
                output[o + 1] = alphabet[Int(group >> 4 & 0x3F)]
                output[o + 2] = alphabet[Int(group << 2 & 0x3F)]
                o += 3
            default:
                break
            }
            return o
        }
    }

    /// ``decode(_:)`` over the text's UTF-8 bytes.
    static func decode(bytes input: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        let remainder = input.count % 4
        guard remainder != 1 else { return nil }
        let groups = input.count / 4
        var valid = true
        let output = [UInt8](unsafeUninitializedCapacity: groups * 3 + max(remainder - 1, 0)) { output, initialized in
            values.withUnsafeBufferPointer { values in
                var i = 0
                var o = 0
                for _ in 0..<groups {
                    let a = values[Int(input[i])]
                    let b = values[Int(input[i + 1])]
                    let c = values[Int(input[i + 2])]
                    let d = values[Int(input[i + 3])]
                    guard (a | b | c | d) & 0xC0 == 0 else {
                        valid = false
                        return
                    }
                    output[o] = a << 2 | b >> 4
                    output[o + 1] = b << 4 | c >> 2
                    output[o + 2] = c << 6 | d
                    i += 4
                    o += 3
                }
                switch remainder {
                case 2:
                    let a = values[Int(input[i])]
                    let b = values[Int(input[i + 1])]
                    // The last character carries 2 bits; its low 4 must be zero.
                    guard (a | b) & 0xC0 == 0, b & 0x0F == 0 else {
                        valid = false
                        return
                    }
                    output[o] = a << 2 | b >> 4
                    o += 1
                case 3:
                    let a = values[Int(input[i])]
                    let b = values[Int(input[i + 1])]
                    let c = values[Int(input[i + 2])]
                    // The last character carries 4 bits; its low 2 must be zero.
                    guard (a | b | c) & 0xC0 == 0, c & 0x03 == 0 else {
                        valid = false
                        return
                    }
                    output[o] = a << 2 | b >> 4
                    output[o + 1] = b << 4 | c >> 2
                    o += 2
                default:
                    break
                }
                initialized = o
            }
        }
        return valid ? output : nil
    }
}
