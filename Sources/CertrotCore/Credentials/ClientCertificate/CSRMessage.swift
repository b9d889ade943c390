/// What a device publishes on `{id}/certs/csr` (QoS 1, not retained) after a `keygen` op: the op's bundle `jti`,
/// the sec tag the key was generated in, and the AT%KEYGEN output verbatim (docs/protocol.md §11).
public struct CSRMessage: Sendable, Equatable, Codable {
    public var v: Int
    public var jti: String
    public var tag: Int64
    /// `base64url(CSR DER) "." base64url(COSE_Sign1)`, as AT%KEYGEN printed it.
    public var keygen: String

    public init(v: Int = 1, jti: String, tag: Int64, keygen: String) {
        self.v = v
        self.jti = jti
        self.tag = tag
        self.keygen = keygen
    }

    /// A P-256 CSR with its attestation is under 1 KB as AT%KEYGEN prints it; 4 KB leaves room for long subjects.
    public static let maxPayloadBytes = 4096

    public static func parse(_ payload: [UInt8]) throws(CertrotError) -> CSRMessage {
        let message = try decodeMessage(
            CSRMessage.self, from: payload, what: "CSR message", limit: maxPayloadBytes,
            schemaError: .invalidCSRMessage)
        guard message.v == 1 else {
            throw CertrotError(.invalidCSRMessage, "unsupported CSR message version \(message.v); expected 1")
        }
        guard !message.jti.isEmpty, message.jti.utf8.count <= 64 else {
            throw CertrotError(.invalidCSRMessage, "CSR message jti must be 1…64 bytes")
        }
        guard (0...Inventory.maxTag).contains(message.tag) else {
            throw CertrotError(.invalidCSRMessage, "CSR message tag \(message.tag) is outside 0…\(Inventory.maxTag)")
        }
        guard !message.keygen.isEmpty else { throw CertrotError(.invalidCSRMessage, "CSR message keygen is empty") }
        return message
    }

    public func encoded() -> [UInt8] {
        Array(try! JSONCoding.encoder.encode(self))  // encoding plain value types cannot fail
    }
}
