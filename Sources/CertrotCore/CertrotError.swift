/// An error certrot reports to an operator or drops a message for.
///
/// `code` is stable and machine-readable (it names counters and JSON-RPC error data); `message` tells a person
/// what was wrong and, where it can, what to do about it.
public struct CertrotError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, Equatable, CaseIterable {
        case invalidDeviceID = "invalid_device_id"
        case invalidPEM = "invalid_pem"
        case credentialTooLarge = "credential_too_large"
        case messageTooSmall = "max_message_too_small"
        case invalidJSON = "bad_json"
        case invalidInventory = "invalid_inventory"
        case invalidAck = "invalid_ack"
        case oversize = "oversize"
        case invalidBundle = "invalid_bundle"
        case badSignature = "bad_signature"
        case unknownKey = "unknown_kid"
        case invalidKey = "invalid_key"
        case invalidConfig = "invalid_config"
        case invalidPart = "invalid_part"
        /// CBOR that does not decode, or is not the item expected (COSE_Sign1).
        case invalidCBOR = "invalid_cbor"
        /// A CSR that does not parse, whose signature does not verify under its own key, or whose key is not P-256.
        case invalidCSR = "invalid_csr"
        /// A KEYGEN attestation that is malformed, signed by another key, or for another CSR, sec tag or modem.
        case badAttestation = "bad_attestation"
        /// A message on `{id}/certs/csr` that is not `{"v":1,"jti":…,"tag":…,"keygen":…}`.
        case invalidCSRMessage = "invalid_csr_message"
        /// A key in a PKCS#11 token that cannot sign now: the module failed, the token is gone, the PIN is wrong or
        /// locked. The message names the URI and the return code (`CKR_PIN_INCORRECT`, …).
        case signerUnavailable = "signer_unavailable"
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
