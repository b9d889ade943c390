import Crypto
import Foundation
import SwiftASN1
import X509

/// What `AT%KEYGEN=<tag>,2,0` returns: `base64url(CSR DER) "." base64url(COSE_Sign1)`. The modem generated the key
/// inside itself; the CSR proves possession of it, and the COSE_Sign1 — signed by the modem's device identity key
/// over `[9, device UUID, bstr(CBOR sec tag), SHA-256 of the CSR DER, nonce]` — says which modem and which sec tag
/// made it (Nordic's `modem_credentials_parser.py` reads it the same way).
///
/// As real nRF9160/nRF9151 modems print it (Tests/CertrotCoreTests/Vectors/real-modem): the COSE_Sign1 is tagged
/// (18) with `{1: -7}` protected and the key ID `{4: h'…'}` unprotected; its payload is the array above inside
/// CBOR's self-described tag 55799 (`d9 d9 f7`); the CSR's ecdsa-with-SHA256 carries NULL parameters. The answer
/// may arrive as the modem's whole response line, `%KEYGEN: "<answer>"` (then `OK`).
public struct KeygenOutput: Sendable {
    /// The CSR's DER as the modem sent it (its digest is what the attestation signs).
    public var csrDER: [UInt8]
    /// The CSR, parsed from `csrDER` or, for older modem firmware that wrote ecdsa-with-SHA256 with NULL
    /// parameters, from its normal form.
    public var csr: CertificateSigningRequest
    public var publicKey: P256.Signing.PublicKey
    /// The COSE part, when the output had one.
    public var cose: COSESign1?
    public var attestation: Attestation?

    /// The attested claims of a KEYGEN output.
    public struct Attestation: Sendable, Equatable {
        /// The modem's device UUID, 16 bytes.
        public var uuid: [UInt8]
        /// The sec tag the key was generated in (the modem writes it as a signed 32-bit integer).
        public var secTag: Int64
        /// SHA-256 of the CSR DER.
        public var digest: [UInt8]
        public var nonce: [UInt8]

        /// Payload type of a CSR message v1.
        public static let csrMessage: Int64 = 9
    }

    /// Parses the output and checks what it carries by itself: the CSR parses, its own signature verifies
    /// (proof of possession), its key is P-256, and the attestation (when present) is well formed and signs this
    /// CSR's digest. Whose identity key signed it is ``verify(identityKey:secTag:uuid:)``'s business.
    public static func parse(_ text: String) throws(CertrotError) -> KeygenOutput {
        let pieces = answer(text).split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(pieces.count), let der = Base64URL.decode(pieces[0]), !der.isEmpty else {
            throw CertrotError(.invalidCSR, "KEYGEN output is base64url(CSR DER), optionally \".\" base64url(COSE)")
        }
        let csr = try parseCSR(der)
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw CertrotError(.invalidCSR, "the CSR's signature does not verify under its own key")
        }
        guard let key = P256.Signing.PublicKey(csr.publicKey) else {
            throw CertrotError(.invalidCSR, "the CSR's key is not P-256")
        }
        var output = KeygenOutput(csrDER: der, csr: csr, publicKey: key)
        if pieces.count == 2 {
            guard let cose = Base64URL.decode(pieces[1]) else {
                throw CertrotError(.badAttestation, "the COSE part is not base64url")
            }
            let message = try COSESign1.parse(cose)
            let attestation = try parseAttestation(message.payload)
            guard attestation.digest == Array(SHA256.hash(data: der)) else {
                throw CertrotError(.badAttestation, "the attestation signs another CSR (its SHA-256 differs)")
            }
            output.cose = message
            output.attestation = attestation
        }
        return output
    }

    /// The answer itself: `text` without surrounding white space, and without the modem's response framing
    /// (`%KEYGEN: "…"`, a final `OK`) when it came with it. Nothing else is taken off.
    static func answer(_ text: String) -> Substring {
        var body = Substring(text.trimmingCharacters(in: .whitespacesAndNewlines))
        if body.hasSuffix("OK") {
            let before = body.dropLast(2)
            if before.last?.isNewline == true {
                body = Substring(before.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        let prefix = "%KEYGEN: \""
        if body.hasPrefix(prefix), body.hasSuffix("\""), body.count >= prefix.count + 1 {
            body = body.dropFirst(prefix.count).dropLast()
        }
        return body
    }

    private init(csrDER: [UInt8], csr: CertificateSigningRequest, publicKey: P256.Signing.PublicKey) {
        self.csrDER = csrDER
        self.csr = csr
        self.publicKey = publicKey
    }

    /// Checks the attestation against what certrot knows of the device: signed by its registered identity key,
    /// for `secTag`, and by the modem with `uuid` when one is registered. `identityKey` nil: no registered key (an
    /// output without attestation is then accepted; one with it is not checked against a key).
    public func verify(identityKey: P256.Signing.PublicKey?, secTag: Int64, uuid: [UInt8]?) throws(CertrotError) {
        guard let identityKey else {
            if let attestation, attestation.secTag != secTag {
                throw CertrotError(
                    .badAttestation, "the key was generated in sec tag \(attestation.secTag), not \(secTag)")
            }
            return
        }
        guard let cose, let attestation else {
            throw CertrotError(.badAttestation, "the KEYGEN output carries no attestation (COSE_Sign1)")
        }
        guard cose.isValid(for: identityKey) else {
            throw CertrotError(.badAttestation, "the attestation does not verify under the device's identity key")
        }
        guard attestation.secTag == secTag else {
            throw CertrotError(.badAttestation, "the key was generated in sec tag \(attestation.secTag), not \(secTag)")
        }
        if let uuid, uuid != attestation.uuid {
            throw CertrotError(.badAttestation, "the attestation names another modem (device UUID differs)")
        }
    }

    /// CBOR's self-described tag (RFC 8949 §3.4.6), which real modems put around the attestation payload.
    public static let selfDescribed: UInt64 = 55799

    static func parseAttestation(_ payload: [UInt8]) throws(CertrotError) -> Attestation {
        // The self-described tag is taken where the modem writes it, around the whole payload, and nowhere else.
        var item = try CBOR.decode(payload)
        if case .tagged(Self.selfDescribed, let inner) = item { item = inner }
        guard let items = item.array, items.count == 5,
            items[0].int == Attestation.csrMessage, let uuid = items[1].bytes, uuid.count == 16,
            let tagBytes = items[2].bytes, let digest = items[3].bytes, digest.count == 32, let nonce = items[4].bytes
        else {
            throw CertrotError(
                .badAttestation,
                "the attestation payload is not [9, uuid (16 bytes), bstr(sec tag), sha256 (32 bytes), nonce]")
        }
        guard let raw = try CBOR.decode(tagBytes).int, (Int64(Int32.min)...Int64(UInt32.max)).contains(raw) else {
            throw CertrotError(.badAttestation, "the attested sec tag is not a 32-bit integer")
        }
        // Written as a signed 32-bit integer: tags above 2^31 − 1 arrive negative.
        let tag = raw < 0 ? Int64(UInt32(bitPattern: Int32(raw))) : raw
        return Attestation(uuid: uuid, secTag: tag, digest: digest, nonce: nonce)
    }

    /// The DER of an ecdsa-with-SHA256 AlgorithmIdentifier with NULL parameters (older modem firmware) and
    /// without (RFC 5758 §3.2: the parameters MUST be absent).
    static let ecdsaSHA256WithNull: [UInt8] = [
        0x30, 0x0C, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02, 0x05, 0x00,
    ]
    static let ecdsaSHA256: [UInt8] = [0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]

    static func parseCSR(_ der: [UInt8]) throws(CertrotError) -> CertificateSigningRequest {
        do {
            return try CertificateSigningRequest(derEncoded: der)
        } catch {
            guard let normal = normalizedSignatureAlgorithm(der) else {
                throw CertrotError(.invalidCSR, "the CSR does not parse: \(error)")
            }
            do {
                return try CertificateSigningRequest(derEncoded: normal)
            } catch {
                throw CertrotError(.invalidCSR, "the CSR does not parse: \(error)")
            }
        }
    }

    /// `der` (a CSR in the normal form) as older modem firmware encodes it: its signatureAlgorithm with NULL
    /// parameters. For simulators and tests.
    public static func legacyEncoding(_ der: [UInt8]) -> [UInt8]? {
        replacingSignatureAlgorithm(der, from: ecdsaSHA256, to: ecdsaSHA256WithNull)
    }

    /// `der` with its outer signatureAlgorithm rewritten from the NULL-parameter form to the normal one; nil when
    /// it does not have exactly that form. The signature covers certificationRequestInfo, which is untouched.
    static func normalizedSignatureAlgorithm(_ der: [UInt8]) -> [UInt8]? {
        replacingSignatureAlgorithm(der, from: ecdsaSHA256WithNull, to: ecdsaSHA256)
    }

    /// `der`, a SEQUENCE of three (a CSR or a certificate), with its second element `from` replaced by `to`.
    static func replacingSignatureAlgorithm(_ der: [UInt8], from: [UInt8], to: [UInt8]) -> [UInt8]? {
        guard let outer = try? DER.parse(der), case .constructed(let children) = outer.content,
            outer.identifier == .sequence
        else { return nil }
        let nodes = Array(children)
        guard nodes.count == 3, nodes[1].encodedBytes.elementsEqual(from) else { return nil }
        var serializer = DER.Serializer()
        serializer.appendConstructedNode(identifier: .sequence) { coder in
            coder.serializeRawBytes(nodes[0].encodedBytes)
            coder.serializeRawBytes(to)
            coder.serializeRawBytes(nodes[2].encodedBytes)
        }
        return serializer.serializedBytes
    }
}
