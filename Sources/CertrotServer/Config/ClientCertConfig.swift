import CertrotCore
import Crypto
import Foundation
import SwiftASN1
import X509

extension CertrotConfig {
    /// An issuing CA: its certificate (optionally followed by its own intermediates) and key.
    public struct Issuer: Sendable, Decodable {
        public var name: String
        public var cert: String
        /// PKCS#8 or SEC1 PEM, mode 0600.
        public var key: String
        /// How long an issued certificate is valid (default 365d; never past the issuer's own notAfter).
        public var validity: ConfigDuration?
        /// Where the issuer's CRL is written (atomically) when a certificate is revoked, for mosquitto's `crlfile`.
        public var crl: String?
    }

    public struct ClientCert: Sendable, Decodable {
        public var name: String
        /// An `issuers` name.
        public var issuer: String
        /// The two sec tags a device's identity alternates between (A/B).
        public var tags: [Int64]
        /// `CN=<template>`, `{device}` replaced by the device ID (default `CN={device}`).
        public var subject: String?
        /// The server CA chain written beside the certificate: a `targets` or `catalogue` name.
        public var caChain: String
        /// How long before the active certificate expires it is renewed (default 60d).
        public var renewBefore: ConfigDuration?
        /// The least time between two certificates issued to one device on the strength of the device's own claim
        /// of when its certificate expires (default 1d): a device that lies about it cannot make certrot sign in a
        /// loop. A certificate certrot issued is renewed by certrot's own record of its expiry, not by this.
        public var minRenewalInterval: ConfigDuration?
        /// `required` (default): a device without a registered identity key gets no certificate. `optional`: the
        /// attestation is checked when the device has a registered key. `learn`: a device without a registered key
        /// has its identity key learned from its answers (trust on first use; docs/client-certificates.md).
        public var attestation: String?
    }
}

/// An issuer, resolved: what signs certificates and CRLs.
package struct ResolvedIssuer: Sendable {
    package var name: String
    package var issuer: ClientCertificateIssuer
    /// The issuer's certificate and any intermediates above it that are not self-signed (PEM normal form; empty
    /// for a self-signed issuer): written after the leaf.
    package var chainPEM: String
    package var crlPath: String?
}

/// A `clientCerts` policy, resolved.
package struct ClientCertPolicy: Sendable {
    package var name: String
    package var issuer: ResolvedIssuer
    package var tags: [Int64]
    /// The common name, `{device}` to be replaced.
    package var commonName: String
    package var caChain: CertificateChain
    package var renewBefore: Int64
    package var attestationRequired: Bool
    /// `attestation: learn`: a device without a registered identity key has it learned on first use.
    package var learnsIdentity = false
    /// `minRenewalInterval` in seconds.
    package var minRenewalInterval: Int64 = 86400

    package func commonName(for device: String) -> String {
        commonName.replacingOccurrences(of: "{device}", with: device)
    }

    /// The tag a new identity is generated in: the one of the two the device is not using.
    package func standby(active: Int64) -> Int64 { active == tags[0] ? tags[1] : tags[0] }
}

/// A device's modem identity (config `identities`).
package struct DeviceIdentity: Sendable {
    package var key: P256.Signing.PublicKey
    package var uuid: [UInt8]?
}

/// How many certificates may be issued (config `issuance`): checked before a keygen bundle is signed, since a
/// certificate follows only from a keygen and a device has one bundle in flight at a time.
package struct IssuanceBudget: Sendable, Equatable {
    /// Certificates one device may be issued in any 24 hours.
    package var perDevicePerDay = 4
    /// Certificates the fleet may be issued in any hour.
    package var fleetPerHour = 10_000

    package init() {}
}

package struct ClientCertSettings: Sendable {
    package var policies: [ClientCertPolicy] = []
    package var identities: [DeviceKey: DeviceIdentity] = [:]
    package var budget = IssuanceBudget()

    /// Resolves `issuers`, `identities` and `clientCerts`; every problem goes into `problems` with its key path.
    static func resolve(
        _ config: CertrotConfig, targets: [ResolvedTarget], catalogue: [DaemonSettings.KnownChain],
        problems: inout [String]
    ) -> ClientCertSettings {
        var settings = ClientCertSettings()
        var issuers: [String: ResolvedIssuer] = [:]
        for (index, entry) in (config.issuers ?? []).enumerated() {
            do {
                guard issuers[entry.name] == nil else { throw CertrotError(.invalidConfig, "name used twice") }
                issuers[entry.name] = try resolveIssuer(entry, pkcs11: config.pkcs11)
            } catch {
                problems.append("issuers[\(index)]: \(message(error))")
            }
        }
        if let path = config.identities {
            do {
                settings.identities = try loadIdentities(path: path)
            } catch {
                problems.append("identities: \(message(error))")
            }
        }
        if let issuance = config.issuance {
            if let perDevice = issuance.perDevicePerDay {
                if perDevice >= 1 {
                    settings.budget.perDevicePerDay = perDevice
                } else {
                    problems.append("issuance.perDevicePerDay: must be at least 1")
                }
            }
            if let fleet = issuance.fleetPerHour {
                if fleet >= 1 {
                    settings.budget.fleetPerHour = fleet
                } else {
                    problems.append("issuance.fleetPerHour: must be at least 1")
                }
            }
        }
        var names: Set<String> = []
        var tagsInUse: Set<Int64> = []
        for (index, entry) in (config.clientCerts ?? []).enumerated() {
            do {
                guard names.insert(entry.name).inserted else { throw CertrotError(.invalidConfig, "name used twice") }
                guard !entry.name.isEmpty, entry.name.utf8.count <= 64 else {
                    throw CertrotError(.invalidConfig, "name must be 1…64 bytes")
                }
                guard let issuer = issuers[entry.issuer] else {
                    throw CertrotError(.invalidConfig, "issuer '\(entry.issuer)' is not under issuers")
                }
                guard entry.tags.count == 2, entry.tags[0] != entry.tags[1],
                    entry.tags.allSatisfy({ (0...Inventory.maxTag).contains($0) })
                else {
                    throw CertrotError(.invalidConfig, "tags must be two different sec tags in 0…\(Inventory.maxTag)")
                }
                for tag in entry.tags where !tagsInUse.insert(tag).inserted {
                    throw CertrotError(.invalidConfig, "sec tag \(tag) belongs to another clientCerts policy")
                }
                let subject = entry.subject ?? "CN={device}"
                guard subject.hasPrefix("CN="), subject.count > 3, !subject.dropFirst(3).contains(",") else {
                    throw CertrotError(.invalidConfig, "subject must be CN=<name>, e.g. CN={device}")
                }
                let chain =
                    targets.first(where: { $0.name == entry.caChain })?.chain
                    ?? catalogue.first(where: { $0.name == entry.caChain })?.chain
                guard let chain else {
                    throw CertrotError(.invalidConfig, "caChain '\(entry.caChain)' is no targets or catalogue chain")
                }
                let renewBefore = entry.renewBefore?.seconds ?? 60 * 86400
                guard renewBefore < issuer.issuer.validity else {
                    // Every certificate issued would be due for renewal the moment it is verified.
                    throw CertrotError(
                        .invalidConfig,
                        "renewBefore (\(renewBefore) s) must be shorter than the issuer's validity "
                            + "(\(issuer.issuer.validity) s)")
                }
                let minRenewalInterval = entry.minRenewalInterval?.seconds ?? 86400
                guard minRenewalInterval >= 0 else {
                    throw CertrotError(.invalidConfig, "minRenewalInterval must not be negative")
                }
                let attestation = entry.attestation ?? "required"
                guard ["required", "optional", "learn"].contains(attestation) else {
                    throw CertrotError(.invalidConfig, "attestation must be required, optional or learn")
                }
                settings.policies.append(
                    ClientCertPolicy(
                        name: entry.name, issuer: issuer, tags: entry.tags, commonName: String(subject.dropFirst(3)),
                        caChain: chain, renewBefore: renewBefore, attestationRequired: attestation != "optional",
                        learnsIdentity: attestation == "learn", minRenewalInterval: minRenewalInterval))
            } catch {
                problems.append("clientCerts[\(index)]: \(message(error))")
            }
        }
        return settings
    }

    private static func message(_ error: any Error) -> String {
        (error as? CertrotError)?.message ?? "\(error)"
    }

    static func resolveIssuer(_ entry: CertrotConfig.Issuer, pkcs11: CertrotConfig.PKCS11?) throws -> ResolvedIssuer {
        guard let text = try? String(contentsOfFile: entry.cert, encoding: .utf8) else {
            throw CertrotError(.invalidConfig, "cannot read cert \(entry.cert)")
        }
        let certificates: [Certificate]
        do {
            certificates = try PEMDocument.parseMultiple(pemString: text).map { try Certificate(pemDocument: $0) }
        } catch {
            throw CertrotError(.invalidConfig, "cert \(entry.cert) is not PEM certificates: \(error)")
        }
        guard let first = certificates.first else { throw CertrotError(.invalidConfig, "cert \(entry.cert) is empty") }
        let key = try KeyFile.loadIssuerKey(entry.key, pkcs11: pkcs11)
        let issuer = try ClientCertificateIssuer(
            certificate: first, key: key, validity: entry.validity?.seconds ?? 365 * 86400)
        let above = try certificates.filter { $0.issuer != $0.subject }.map { try $0.serializeAsPEM().pemString }
        let chainPEM = above.isEmpty ? "" : try PEM.normalizeChain(above.joined(separator: "\n")).pem
        if let crl = entry.crl {
            let directory = (crl as NSString).deletingLastPathComponent
            var isDirectory: ObjCBool = false
            guard
                FileManager.default.fileExists(atPath: directory.isEmpty ? "." : directory, isDirectory: &isDirectory),
                isDirectory.boolValue
            else { throw CertrotError(.invalidConfig, "crl: directory \(directory) does not exist") }
        }
        return ResolvedIssuer(name: entry.name, issuer: issuer, chainPEM: chainPEM, crlPath: entry.crl)
    }

    /// One JSON object a line: `{"device":ID,"identityKey":PEM,"uuid":HEX32?}`; blank lines and `#` lines skipped.
    package static func loadIdentities(path: String) throws -> [DeviceKey: DeviceIdentity] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw CertrotError(.invalidConfig, "cannot read \(path)")
        }
        struct Line: Decodable {
            var device: String
            var identityKey: String
            var uuid: String?
        }
        var identities: [DeviceKey: DeviceIdentity] = [:]
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#") else { continue }
            let where_ = "\(path):\(number + 1)"
            guard let entry = try? JSONDecoder().decode(Line.self, from: Data(trimmed.utf8)) else {
                throw CertrotError(.invalidConfig, "\(where_): not {\"device\",\"identityKey\",\"uuid\"?}")
            }
            if let problem = DeviceID.problem(entry.device) {
                throw CertrotError(.invalidConfig, "\(where_): \(problem)")
            }
            guard let key = try? P256.Signing.PublicKey(pemRepresentation: entry.identityKey) else {
                throw CertrotError(.invalidConfig, "\(where_): identityKey is not a P-256 public key (PEM)")
            }
            var uuid: [UInt8]?
            if let text = entry.uuid {
                guard let bytes = ModemUUID.parse(text) else {
                    throw CertrotError(
                        .invalidConfig, "\(where_): uuid is not 8-4-4-4-12 or 32 hex digits (the modem's device UUID)")
                }
                uuid = bytes
            }
            guard identities.updateValue(DeviceIdentity(key: key, uuid: uuid), forKey: DeviceKey(entry.device)) == nil
            else { throw CertrotError(.invalidConfig, "\(where_): device \(entry.device) listed twice") }
        }
        return identities
    }
}

/// Writes the `identities` file (`certrot identity learn`): one device's line replaced, or appended, every other
/// line (comments included) kept as it was; the file is replaced atomically. The result is read back with
/// ``ClientCertSettings/loadIdentities(path:)`` before it replaces the old one, so a bad line is never written.
package enum IdentityFile {
    package static func line(device: String, key: P256.Signing.PublicKey, uuid: [UInt8]?) throws -> String {
        var object: [String: String] = ["device": device, "identityKey": key.pemRepresentation]
        if let uuid { object["uuid"] = ModemUUID.format(uuid) }
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }

    /// Sets `device`'s identity in the file at `path` (made when missing). Returns true when the device had a line.
    @discardableResult
    package static func upsert(
        path: String, device: String, key: P256.Signing.PublicKey, uuid: [UInt8]?
    ) throws
        -> Bool
    {
        if let problem = DeviceID.problem(device) { throw CertrotError(.invalidConfig, problem) }
        let existing = FileManager.default.fileExists(atPath: path)
        var lines: [String] = []
        if existing {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw CertrotError(.invalidConfig, "cannot read \(path)")
            }
            _ = try ClientCertSettings.loadIdentities(path: path)
            lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            if lines.last == "" { lines.removeLast() }
        }
        let new = try line(device: device, key: key, uuid: uuid)
        var replaced = false
        for (index, text) in lines.enumerated() {
            struct Entry: Decodable { var device: String }
            guard let entry = try? JSONDecoder().decode(Entry.self, from: Data(text.utf8)),
                Array(entry.device.utf8) == Array(device.utf8)
            else { continue }
            lines[index] = new
            replaced = true
        }
        if !replaced { lines.append(new) }
        let temporary = path + ".new"
        try (lines.joined(separator: "\n") + "\n").write(toFile: temporary, atomically: false, encoding: .utf8)
        do {
            _ = try ClientCertSettings.loadIdentities(path: temporary)
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw CertrotError(.invalidConfig, "cannot replace \(path)")
        }
        return replaced
    }
}
