import CertrotCore
import Crypto
import Foundation
import SwiftASN1
import X509

/// The part of a simulated nRF91 modem that holds secrets: its device identity key and UUID, and the keys it
/// generates in sec tags with AT%KEYGEN. As the modem does, it refuses KEYGEN while online (CFUN=1: error 518) and in
/// a tag that already holds a key (error 519), and writes its output as `base64url(CSR DER).base64url(COSE_Sign1)`
/// with the subject it is given (else `CN=<device UUID>`) and the key usage the modem asks for, without clientAuth —
/// in the form real nRF9160/nRF9151 modems print (Tests/CertrotCoreTests/Vectors/real-modem): ecdsa-with-SHA256
/// with NULL parameters, a tagged COSE_Sign1 with the key ID `{4: h'21'}` unprotected, and its payload inside
/// CBOR's self-described tag 55799. `make test` has Nordic's own parser (nrfcloud-utils) read what it prints.
public struct SimulatedModem: Sendable {
    public enum Failure: Error, Equatable {
        /// AT%KEYGEN while the modem is online (it needs CFUN=4).
        case online
        /// The tag already holds a key.
        case tagInUse
    }

    public let uuid: [UInt8]
    public let identityKey: P256.Signing.PrivateKey
    public private(set) var keys: [Int64: P256.Signing.PrivateKey] = [:]
    /// CFUN=1: the credential store is read-only.
    public var online = false
    /// Encodes the CSR's signature algorithm with NULL parameters, as every real answer published so far does;
    /// false: without them (RFC 5758 §3.2).
    public var nullSignatureParameters = true

    public init(
        uuid: [UInt8] = (0..<16).map { _ in UInt8.random(in: 0...255) }, identityKey: P256.Signing.PrivateKey = .init()
    ) {
        self.uuid = uuid
        self.identityKey = identityKey
    }

    /// The UUID as the modem prints it: 8-4-4-4-12 lowercase hex.
    public var uuidString: String { ModemUUID.format(uuid) }

    /// AT%CMNG=3 for the tag's key.
    public mutating func deleteKey(tag: Int64) throws(Failure) {
        guard !online else { throw .online }
        keys[tag] = nil
    }

    /// Puts `key` in `tag` (factory provisioning).
    public mutating func install(key: P256.Signing.PrivateKey, tag: Int64) {
        keys[tag] = key
    }

    /// AT%KEYGEN=<tag>,2,0[,"<subject>"]: a new P-256 key in `tag`, and the attested CSR for it. The CSR's subject
    /// is `subject`'s common name (`CN=<name>`), as a real modem writes the subject it is given (answer F of the
    /// real-modem fixtures: `CN=nrf-355025930000000`), else `CN=<device UUID>`. `attestationKey`: sign the
    /// attestation with this key instead of the identity key (a forgery, for tests).
    public mutating func keygen(
        tag: Int64, subject: String? = nil, attestationKey: P256.Signing.PrivateKey? = nil
    ) throws -> String {
        guard !online else { throw Failure.online }
        guard keys[tag] == nil else { throw Failure.tagInUse }
        let key = P256.Signing.PrivateKey()
        let commonName = subject.flatMap { $0.hasPrefix("CN=") ? String($0.dropFirst(3)) : nil } ?? uuidString
        let csr = try CertificateSigningRequest(
            version: .v1, subject: try DistinguishedName { CommonName(commonName) },
            privateKey: Certificate.PrivateKey(key),
            attributes: try CertificateSigningRequest.Attributes([
                .init(
                    ExtensionRequest(
                        extensions: try Certificate.Extensions {
                            KeyUsage(
                                digitalSignature: true, nonRepudiation: true, keyEncipherment: true,
                                keyAgreement: true)
                        }))
            ]),
            signatureAlgorithm: .ecdsaWithSHA256)
        var serializer = DER.Serializer()
        try serializer.serialize(csr)
        var der = serializer.serializedBytes
        if nullSignatureParameters, let legacy = KeygenOutput.legacyEncoding(der) { der = legacy }
        // The tag as the modem writes it: a signed 32-bit integer.
        let signedTag = Int64(Int32(truncatingIfNeeded: tag))
        let payload = CBOR.tagged(
            KeygenOutput.selfDescribed,
            .array([
                .int(KeygenOutput.Attestation.csrMessage), .bytes(uuid), .bytes(CBOR.int(signedTag).encoded),
                .bytes(Array(SHA256.hash(data: der))), .bytes((0..<16).map { _ in UInt8.random(in: 0...255) }),
            ])
        ).encoded
        let cose = try COSESign1.sign(
            payload: payload, with: attestationKey ?? identityKey,
            unprotected: .map([(.unsigned(4), .bytes(CBOR.int(-2).encoded))]))
        keys[tag] = key
        return Base64URL.encode(der) + "." + Base64URL.encode(cose.encoded)
    }
}
