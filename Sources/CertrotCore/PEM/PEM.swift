import Crypto
import Foundation
import X509

/// One `-----BEGIN label-----` … `-----END label-----` block, decoded.
public struct PEMBlock: Sendable, Equatable {
    public var label: String
    public var der: [UInt8]

    public init(label: String, der: [UInt8]) {
        self.label = label
        self.der = der
    }
}

/// PEM parsing and the normal form devices need.
///
/// The nRF91 modem rejects CRLF line endings and leading spaces (AT%CMNG error 527, -22) and wants exact
/// BEGIN/END lines. The normal form is: `\n` line endings only, 64-character base64 lines, no leading or trailing
/// spaces, exact `-----BEGIN CERTIFICATE-----` / `-----END CERTIFICATE-----` lines, a final `\n`, certificates
/// concatenated in the order given. Text between blocks (as `openssl` writes it) is dropped.
public enum PEM {
    /// Parses every PEM block in `text`. Lenient about what a person's file may hold (CRLF, indentation, text
    /// between blocks); strict about the blocks themselves (matching labels, valid base64, no headers).
    public static func parseBlocks(_ text: String) throws(CertrotError) -> [PEMBlock] {
        var blocks: [PEMBlock] = []
        var currentLabel: String?
        var body = ""
        var lineNumber = 0
        // Split on bytes: Swift treats "\r\n" as one Character, so a Character split would miss CRLF lines.
        for rawLine in text.utf8.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = String(decoding: rawLine, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if let label = currentLabel {
                if line.hasPrefix("-----END ") {
                    guard line == "-----END \(label)-----" else {
                        throw CertrotError(.invalidPEM, "line \(lineNumber): '\(line)' does not close '\(label)'")
                    }
                    guard let der = Data(base64Encoded: body), !der.isEmpty else {
                        throw CertrotError(.invalidPEM, "block \(blocks.count + 1) ('\(label)') is not valid base64")
                    }
                    blocks.append(PEMBlock(label: label, der: Array(der)))
                    currentLabel = nil
                    body = ""
                } else if line.hasPrefix("-----BEGIN ") {
                    throw CertrotError(.invalidPEM, "line \(lineNumber): BEGIN inside an unterminated '\(label)' block")
                } else if line.contains(":") {
                    throw CertrotError(.invalidPEM, "line \(lineNumber): PEM headers are not supported")
                } else {
                    body += line
                }
            } else if line.hasPrefix("-----BEGIN ") {
                guard line.hasSuffix("-----"), line.count > 16 else {
                    throw CertrotError(.invalidPEM, "line \(lineNumber): malformed BEGIN line '\(line)'")
                }
                currentLabel = String(line.dropFirst(11).dropLast(5))
            }
        }
        if let label = currentLabel {
            throw CertrotError(.invalidPEM, "block '\(label)' has no END line")
        }
        return blocks
    }

    /// Encodes blocks in the normal form.
    public static func encode(_ blocks: [PEMBlock]) -> String {
        var out = ""
        for block in blocks {
            out += "-----BEGIN \(block.label)-----\n"
            let b64 = Data(block.der).base64EncodedString()
            var index = b64.startIndex
            while index < b64.endIndex {
                let end = b64.index(index, offsetBy: 64, limitedBy: b64.endIndex) ?? b64.endIndex
                out += b64[index..<end]
                out += "\n"
                index = end
            }
            out += "-----END \(block.label)-----\n"
        }
        return out
    }

    /// Normalises a chain of certificates. Every block must be a `CERTIFICATE` that parses as X.509.
    public static func normalizeChain(_ text: String) throws(CertrotError) -> CertificateChain {
        let blocks = try parseBlocks(text)
        guard !blocks.isEmpty else { throw CertrotError(.invalidPEM, "no PEM block found") }
        var certificates: [Certificate] = []
        for (index, block) in blocks.enumerated() {
            guard block.label == "CERTIFICATE" else {
                throw CertrotError(
                    .invalidPEM,
                    "block \(index + 1) is '\(block.label)'; a certificate chain holds only CERTIFICATE blocks")
            }
            do {
                certificates.append(try Certificate(derEncoded: block.der))
            } catch {
                throw CertrotError(.invalidPEM, "block \(index + 1) is not a valid X.509 certificate: \(error)")
            }
        }
        return CertificateChain(pem: encode(blocks), certificates: certificates)
    }

    /// True when `bytes` are exactly in the normal form: what a device checks before writing to the modem.
    public static func isNormalized(_ bytes: [UInt8]) -> Bool {
        guard let text = String(validating: bytes, as: UTF8.self),
            let blocks = try? parseBlocks(text), !blocks.isEmpty
        else { return false }
        return Array(encode(blocks).utf8) == bytes
    }
}

/// A chain in normal form, with its parsed certificates and the digest devices report for it.
public struct CertificateChain: Sendable {
    /// The PEM text in normal form: the exact bytes written to the device.
    public let pem: String
    public let certificates: [Certificate]

    public init(pem: String, certificates: [Certificate]) {
        self.pem = pem
        self.certificates = certificates
    }

    public var bytes: [UInt8] { Array(pem.utf8) }
    /// SHA-256 of the PEM bytes, lowercase hex: the digest `AT%CMNG=1` reports (in uppercase) for the stored
    /// credential.
    public var sha256: String { Hex.sha256(bytes) }
    /// The earliest `notAfter` of the chain, in Unix seconds.
    public var notAfter: Int64 {
        certificates.map { Int64($0.notValidAfter.timeIntervalSince1970) }.min() ?? 0
    }
    /// The latest `notBefore` of the chain, in Unix seconds.
    public var notBefore: Int64 {
        certificates.map { Int64($0.notValidBefore.timeIntervalSince1970) }.max() ?? 0
    }
}

public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func sha256<Bytes: DataProtocol>(_ bytes: Bytes) -> String {
        encode(SHA256.hash(data: bytes))
    }

    /// The bytes of an even number of hex digits (either case); nil for anything else.
    public static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count / 2)
        for index in stride(from: 0, to: utf8.count, by: 2) {
            guard let high = value(utf8[index]), let low = value(utf8[index + 1]) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }

    /// True for exactly 64 lowercase hex digits.
    public static func isSHA256(_ text: String) -> Bool {
        let utf8 = text.utf8
        return utf8.count == 64 && utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }
}
