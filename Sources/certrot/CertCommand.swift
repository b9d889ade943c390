import ArgumentParser
import CertrotCore
import CertrotPKCS11
import CertrotServer
import Crypto
import Foundation
import SwiftASN1
import X509

/// `certrot issuer init`: an issuing CA for device client certificates, for trials.
struct IssuerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issuer", abstract: "Make an issuing CA for device client certificates.",
        subcommands: [Init.self])

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an issuing CA for trials: its certificate (PEM) and key (PKCS#8 PEM, mode 0600).",
            discussion: """
                --key-type p256 (default), p384, rsa2048, rsa3072 or rsa4096; the CA signs certificates and CRLs \
                with ecdsa-with-SHA256, ecdsa-with-SHA384 or sha256WithRSAEncryption. A key in a token (--pkcs11) \
                may be of any of these kinds too. For production, issue from your own PKI's intermediate; certrot needs its certificate \
                and key. Refuses to overwrite either file.
                """)

        @Option(help: "Where to write the CA certificate.")
        var cert: String
        @Option(help: "Where to write the CA's private key (mode 0600).")
        var key: String?
        @Option(name: .customLong("pkcs11"), help: "Make the CA's key inside a PKCS#11 token instead (RFC 7512 URI).")
        var uri: String?
        @Option(help: "For --pkcs11: the token's user PIN, in a file (mode 0600); else CERTROT_PKCS11_PIN.")
        var pinFile: String?

        @Option(help: "The CA key's type: p256, p384, rsa2048, rsa3072 or rsa4096.")
        var keyType = "p256"

        func validate() throws {
            guard (key == nil) != (uri == nil) else { throw ValidationError("give exactly one of --key and --pkcs11") }
            guard let kind = IssuerKey.Kind(rawValue: keyType) else {
                throw ValidationError("--key-type must be one of \(IssuerKey.Kind.allCases.map(\.rawValue))")
            }
        }
        @Option(help: "The CA's common name.")
        var name = "certrot device CA"
        @Option(help: "Days the CA is valid for.")
        var days = 3650

        func run() throws {
            guard !FileManager.default.fileExists(atPath: cert) else {
                throw ValidationError("\(cert) exists; refusing to overwrite it")
            }
            guard days > 0, days <= 36500 else { throw ValidationError("--days must be 1…36500") }
            let kind = IssuerKey.Kind(rawValue: keyType)!
            let signing: IssuerKey
            let location: String
            if let key, kind != .p256 {
                signing = IssuerKey.generate(kind)
                try KeyFile.write(signing, to: key)
                location = key
            } else if let uri, kind != .p256 {
                do {
                    let parsed = try PKCS11URI(uri)
                    let token = try TokenKey.generate(
                        uri: parsed, pin: try KeyFile.pin(for: parsed, pinFile: pinFile), kind: kind)
                    (signing, location) = (IssuerKey(external: token), uri)
                } catch let error as CertrotError {
                    throw DataCheckFailed(error.message)
                }
            } else {
                let made = try NewKeyOptions.make(out: key, uri: uri, pinFile: pinFile)
                (signing, location) = (IssuerKey(made.key), made.location)
            }
            let certificate = try ClientCertificateIssuer.selfSignedCA(
                key: signing, commonName: name, days: days, now: Date())
            try (try certificate.serializeAsPEM().pemString + "\n").write(
                toFile: cert, atomically: true, encoding: .utf8)
            print(
                """
                issuing CA  \(cert)
                key         \(kind.name), \(key != nil ? "\(location) (mode 0600)" : location)
                subject     CN=\(name), valid until \(certificate.notValidAfter)
                """)
        }
    }
}

/// `certrot cert inspect`: what a KEYGEN output, a certificate or a CRL says.
struct CertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cert", abstract: "Inspect client-certificate material.", subcommands: [Inspect.self])

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decode an AT%KEYGEN output (CSR and COSE attestation), a certificate, or a CRL.",
            discussion: """
                With --identity-key (the modem's device identity public key: PEM, or hex of its uncompressed \
                point), a KEYGEN output's attestation is verified, for --tag when given. With --issuer, a CRL's \
                signature is verified. Exits non-zero when a check fails.
                """)

        @Argument(help: "File to read, or - for standard input.")
        var input: String = "-"
        @Option(help: "The modem's device identity public key (PEM, or hex of the 65-byte point).")
        var identityKey: String?
        @Option(help: "The sec tag the key must have been generated in.")
        var tag: Int64?
        @Option(help: "The issuing CA's certificate (PEM), to verify a CRL's signature.")
        var issuer: String?

        func run() throws {
            let text = try readInput(input).trimmingCharacters(in: .whitespacesAndNewlines)
            do {
                if text.contains("-----BEGIN X509 CRL-----") {
                    try crl(text)
                } else if text.contains("-----BEGIN CERTIFICATE-----") {
                    try certificates(text)
                } else {
                    try keygen(text)
                }
            } catch let error as CertrotError {
                // A failed check of the input is not a wrong command line: `Error: …`, exit 1, no usage text.
                throw DataCheckFailed(error.description)
            }
        }

        func keygen(_ text: String) throws {
            let output = try KeygenOutput.parse(text)
            print("KEYGEN output")
            print("  CSR subject    \(output.csr.subject) (certrot names the certificate by its own policy)")
            print("  CSR key        P-256, proof of possession verified")
            print("  CSR sha256     \(Hex.sha256(output.csrDER))")
            guard let attestation = output.attestation else {
                print("  attestation    none")
                if identityKey != nil { throw CertrotError(.badAttestation, "the output carries no attestation") }
                return
            }
            print("  device UUID    \(ModemUUID.format(attestation.uuid))")
            print("  sec tag        \(attestation.secTag)")
            print("  digest         matches the CSR")
            print("  nonce          \(Hex.encode(attestation.nonce))")
            guard let identityKey else {
                print("  signature      not checked (give --identity-key); the identity keys it fits:")
                if let cose = output.cose {
                    for key in IdentityKeyRecovery.candidates(cose) {
                        print("    \(Hex.encode(key.x963Representation))")
                    }
                }
                return
            }
            try output.verify(
                identityKey: try Self.publicKey(identityKey), secTag: tag ?? attestation.secTag, uuid: nil)
            print("  signature      verified under the identity key")
        }

        func certificates(_ text: String) throws {
            for document in try PEMDocument.parseMultiple(pemString: text) where document.discriminator == "CERTIFICATE"
            {
                let certificate = try Certificate(derEncoded: document.derBytes)
                let pem = try PEM.normalizeChain(document.pemString).pem
                print("certificate")
                print("  subject        \(certificate.subject)")
                print("  issuer         \(certificate.issuer)")
                print("  serial         \(Hex.encode(certificate.serialNumber.bytes))")
                print("  valid          \(certificate.notValidBefore) … \(certificate.notValidAfter)")
                print("  signed with    \(certificate.signatureAlgorithm)")
                if let usage = try? certificate.extensions.extendedKeyUsage {
                    print("  extended usage \(usage.map { "\($0)" }.joined(separator: ", "))")
                }
                print("  sha256 (PEM)   \(Hex.sha256(Array(pem.utf8)))")
            }
        }

        func crl(_ text: String) throws {
            let list = try RevocationList.parse(text)
            print("CRL")
            print("  issuer         \(list.issuer)")
            print("  this update    \(list.thisUpdate)")
            if let next = list.nextUpdate { print("  next update    \(next)") }
            print("  signed with    \(list.signatureAlgorithm.map { "\($0)" } ?? "an algorithm certrot does not know")")
            print("  revoked        \(list.serials.count)")
            for serial in list.serials { print("    \(serial)") }
            guard let issuer else { return }
            let certificate = try Certificate(pemEncoded: try String(contentsOfFile: issuer, encoding: .utf8))
            guard list.isSigned(by: certificate) else {
                throw CertrotError(.badSignature, "the CRL is not signed by \(issuer)")
            }
            print("  signature      verified under \(issuer)")
        }

        static func publicKey(_ text: String) throws -> P256.Signing.PublicKey {
            if text.contains("-----BEGIN") { return try P256.Signing.PublicKey(pemRepresentation: text) }
            if FileManager.default.fileExists(atPath: text) {
                return try publicKey(try String(contentsOfFile: text, encoding: .utf8))
            }
            guard let bytes = Hex.decode(text) else {
                throw ValidationError("--identity-key: a PEM public key, a file holding one, or hex of the point")
            }
            return try P256.Signing.PublicKey(x963Representation: bytes)
        }
    }
}
