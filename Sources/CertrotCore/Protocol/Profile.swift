/// What a kind of device can take. The nRF91 family: a stored credential of at most 4 KB (a 5,279-byte chain
/// crashed the modem) and MQTT messages of at most 2,048 bytes (the modem's TLS buffer).
public struct DeviceProfile: Sendable, Equatable, Codable {
    public var name: String
    /// Largest MQTT PUBLISH packet (fixed header + topic + packet id + payload) the device can take.
    public var maxMessage: Int
    /// Largest credential (PEM bytes as stored) the device can hold in one sec tag.
    public var maxCredential: Int

    public init(name: String, maxMessage: Int, maxCredential: Int) {
        self.name = name
        self.maxMessage = maxMessage
        self.maxCredential = maxCredential
    }

    public static let nrf91 = DeviceProfile(name: "nrf91", maxMessage: 2048, maxCredential: 4096)

    /// Smallest `maxMessage` the protocol supports: room for the longest topic and a useful slice of data.
    public static let minimumMaxMessage = 256

    /// Throws when `credential` is larger than this profile's limit, naming both sizes.
    public func checkCredentialSize(_ credential: [UInt8], what: String) throws(CertrotError) {
        if credential.count > maxCredential {
            throw CertrotError(
                .credentialTooLarge,
                "\(what) is \(credential.count) bytes; profile \(name) allows at most \(maxCredential) bytes "
                    + "(\(credential.count - maxCredential) over)")
        }
    }
}

/// AT%CMNG credential types.
public enum CredentialType: Int, Sendable, CaseIterable, Codable {
    case rootCAChain = 0
    case clientCertificate = 1
    case clientPrivateKey = 2
    case psk = 3
    case pskIdentity = 4
    case publicKey = 5
    case deviceIdentityPublicKey = 6

    public var label: String {
        switch self {
        case .rootCAChain: "root CA chain"
        case .clientCertificate: "client certificate"
        case .clientPrivateKey: "client private key"
        case .psk: "PSK"
        case .pskIdentity: "PSK identity"
        case .publicKey: "public key"
        case .deviceIdentityPublicKey: "device identity public key"
        }
    }
}
