import CertrotCore
import CertrotServer
import CertrotSimulator
import Crypto
import Foundation
import X509

/// What a client-certificate trial needs on disk and in the devices: a device CA (certificate, key mode 0600),
/// each device's modem (identity key, UUID) registered in an identities file, and a factory identity per device:
/// a certificate from the same CA in sec tag A with its key in the modem, valid for `factoryDays`.
package final class ClientIdentityLab: Sendable {
    package static let tags: [Int64] = [16_842_753, 16_842_754]

    package let dir: URL
    package let ca: CA
    package let caPath: String
    package let caKeyPath: String
    package let crlPath: String
    package let identitiesPath: String
    package let modems: [String: SimulatedModem]
    package let factory: [String: Factory]

    /// The device CA: self-signed, of the kind given (P-256 unless a test asks for P-384 or RSA).
    package struct CA: Sendable {
        package var certificate: Certificate
        package var key: IssuerKey
        package var pem: String
    }

    package struct Factory: Sendable {
        package var pem: String
        package var key: P256.Signing.PrivateKey
    }

    /// - Parameter registered: the devices whose identity keys go into the identities file (default: all).
    /// - Parameter issuerKind: the device CA's key type (#35).
    package init(
        dir: URL, devices: [String], registered: [String]? = nil, factoryDays: Int = 10,
        issuerKind: IssuerKey.Kind = .p256
    ) throws {
        self.dir = dir
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let caKey = IssuerKey.generate(issuerKind)
        let caCertificate = try ClientCertificateIssuer.selfSignedCA(
            key: caKey, commonName: "Device CA", days: 3650, now: Date())
        ca = CA(certificate: caCertificate, key: caKey, pem: try caCertificate.serializeAsPEM().pemString + "\n")
        caPath = dir.appendingPathComponent("device-ca.pem").path
        caKeyPath = dir.appendingPathComponent("device-ca-key.pem").path
        crlPath = dir.appendingPathComponent("device-ca.crl").path
        identitiesPath = dir.appendingPathComponent("identities.jsonl").path
        try ca.pem.write(toFile: caPath, atomically: true, encoding: .utf8)
        try? FileManager.default.removeItem(atPath: caKeyPath)
        try KeyFile.write(ca.key, to: caKeyPath)
        let issuer = try ClientCertificateIssuer(
            certificate: ca.certificate, key: ca.key, validity: Int64(factoryDays) * 86400)
        var lines: [String] = []
        var modems: [String: SimulatedModem] = [:]
        var factory: [String: Factory] = [:]
        for id in devices {
            let modem = SimulatedModem()
            let key = P256.Signing.PrivateKey()
            let issued = try issuer.issue(for: key.publicKey, commonName: id, now: Date())
            modems[id] = modem
            factory[id] = Factory(pem: issued.pem, key: key)
            if registered?.contains(id) ?? true {
                let object: [String: Any] = [
                    "device": id, "identityKey": modem.identityKey.publicKey.pemRepresentation,
                    "uuid": Hex.encode(modem.uuid),
                ]
                lines.append(String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self))
            }
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: identitiesPath, atomically: true, encoding: .utf8)
        self.modems = modems
        self.factory = factory
    }

    /// Gives `device` its modem and factory identity in tag A (for ``FleetOptions/prepare``).
    package func provision(_ device: inout SimulatedDevice) {
        guard let modem = modems[device.id], let factory = factory[device.id] else { return }
        device.provisionIdentity(
            modem: modem, tag: Self.tags[0], certificate: Array(factory.pem.utf8), key: factory.key)
    }

    /// A certificate from the device CA for a client that is not a device (e.g. `certrot` watching a listener),
    /// written as NAME.pem and NAME-key.pem in `dir`; returns their paths.
    package func clientCertificate(commonName: String) throws -> (cert: String, key: String) {
        let issuer = try ClientCertificateIssuer(certificate: ca.certificate, key: ca.key, validity: 86400)
        let key = P256.Signing.PrivateKey()
        let issued = try issuer.issue(for: key.publicKey, commonName: commonName, now: Date())
        let cert = dir.appendingPathComponent("\(commonName).pem").path
        let keyPath = dir.appendingPathComponent("\(commonName)-key.pem").path
        try issued.pem.write(toFile: cert, atomically: true, encoding: .utf8)
        try key.pemRepresentation.write(toFile: keyPath, atomically: true, encoding: .utf8)
        return (cert, keyPath)
    }

    /// The config's `issuers`, `identities` and `clientCerts` for one policy `device-identity` whose CA chain is
    /// the target or catalogue chain `caChain`.
    package func yaml(
        caChain: String, renewBefore: String = "60d", validity: String = "365d", attestation: String = "required",
        minRenewalInterval: String = "1d"
    ) -> String {
        """
        issuers:
          - {name: device-ca, cert: \(caPath), key: \(caKeyPath), validity: \(validity), crl: \(crlPath)}
        identities: \(identitiesPath)
        clientCerts:
          - {name: device-identity, issuer: device-ca, tags: [\(Self.tags[0]), \(Self.tags[1])], subject: "CN={device}", caChain: \(caChain), renewBefore: \(renewBefore), minRenewalInterval: \(minRenewalInterval), attestation: \(attestation)}
        """
    }

    /// A simulated device with its modem and its factory identity in tag A, active.
    package func device(
        _ id: String, keys: [VerificationKey], profile: DeviceProfile = .nrf91,
        behaviour: DeviceBehaviour = DeviceBehaviour()
    ) -> SimulatedDevice {
        var device = SimulatedDevice(id: id, behaviour: behaviour, profile: profile, keys: keys)
        provision(&device)
        return device
    }
}
