import Crypto

/// A COSE_Sign1 message (RFC 9052 §4.2), ES256 only: what a modem signs its KEYGEN attestation with.
public struct COSESign1: Sendable, Equatable {
    /// The protected header as sent (a bstr holding a CBOR map); the signature covers these bytes.
    public var protected: [UInt8]
    public var unprotected: CBOR
    public var payload: [UInt8]
    /// r ‖ s, 64 bytes.
    public var signature: [UInt8]

    /// COSE tag of a COSE_Sign1 (RFC 9052 §2).
    public static let tag: UInt64 = 18
    /// `alg` ES256 (RFC 9053 §2.1).
    public static let es256: Int64 = -7

    public init(protected: [UInt8], unprotected: CBOR = .map([]), payload: [UInt8], signature: [UInt8]) {
        self.protected = protected
        self.unprotected = unprotected
        self.payload = payload
        self.signature = signature
    }

    /// Parses a tagged or untagged COSE_Sign1 with an attached payload.
    public static func parse(_ bytes: [UInt8]) throws(CertrotError) -> COSESign1 {
        var item = try CBOR.decode(bytes)
        if case .tagged(let tag, let inner) = item {
            guard tag == Self.tag else { throw CertrotError(.invalidCBOR, "CBOR tag \(tag) is not COSE_Sign1 (18)") }
            item = inner
        }
        guard let parts = item.array, parts.count == 4, let protected = parts[0].bytes,
            case .map = parts[1], let payload = parts[2].bytes, let signature = parts[3].bytes
        else {
            throw CertrotError(
                .invalidCBOR, "a COSE_Sign1 is [protected bstr, unprotected map, payload bstr, signature bstr]")
        }
        return COSESign1(protected: protected, unprotected: parts[1], payload: payload, signature: signature)
    }

    /// The `alg` of the protected header.
    public var algorithm: Int64? {
        guard !protected.isEmpty, let header = try? CBOR.decode(protected) else { return nil }
        return header[.unsigned(1)]?.int
    }

    /// What the signature covers: `["Signature1", protected, external_aad, payload]`.
    public func toBeSigned(externalAAD: [UInt8] = []) -> [UInt8] {
        CBOR.array([.text("Signature1"), .bytes(protected), .bytes(externalAAD), .bytes(payload)]).encoded
    }

    /// True when `alg` is ES256 and the signature verifies under `key`.
    public func isValid(for key: P256.Signing.PublicKey, externalAAD: [UInt8] = []) -> Bool {
        guard algorithm == Self.es256, signature.count == 64,
            let ecdsa = try? P256.Signing.ECDSASignature(rawRepresentation: signature)
        else { return false }
        return key.isValidSignature(ecdsa, for: toBeSigned(externalAAD: externalAAD))
    }

    /// Signs `payload` with ES256 (the simulator's modem and tests).
    public static func sign(
        payload: [UInt8], with key: P256.Signing.PrivateKey, unprotected: CBOR = .map([])
    ) throws -> COSESign1 {
        var message = COSESign1(
            protected: CBOR.map([(.unsigned(1), .int(es256))]).encoded, unprotected: unprotected, payload: payload,
            signature: [])
        message.signature = Array(try key.signature(for: message.toBeSigned()).rawRepresentation)
        return message
    }

    /// The tagged COSE_Sign1.
    public var encoded: [UInt8] {
        CBOR.tagged(Self.tag, .array([.bytes(protected), unprotected, .bytes(payload), .bytes(signature)])).encoded
    }
}
