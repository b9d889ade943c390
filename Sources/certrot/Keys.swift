import ArgumentParser
import CertrotCore
import CertrotPKCS11
import CertrotServer
import Foundation

/// Where a new key goes: a PEM file, or inside a PKCS#11 token (the PIN from --pin-file or CERTROT_PKCS11_PIN).
struct NewKeyOptions: ParsableArguments {
    @Option(help: "Where to write the private key (PKCS#8 PEM, mode 0600). Refuses to overwrite.")
    var out: String?

    @Option(
        name: .customLong("pkcs11"),
        help: "Make the key inside a PKCS#11 token instead: an RFC 7512 URI with token=, object= and module-path=.")
    var uri: String?

    @Option(help: "The token's user PIN, in a file (mode 0600); else CERTROT_PKCS11_PIN.")
    var pinFile: String?

    func validate() throws {
        guard (out == nil) != (uri == nil) else { throw ValidationError("give exactly one of --out and --pkcs11") }
    }

    /// The new key and where it is (the path, or the URI).
    func make() throws -> (key: SigningKey, location: String) {
        try Self.make(out: out, uri: uri, pinFile: pinFile)
    }

    static func make(out: String?, uri: String?, pinFile: String?) throws -> (key: SigningKey, location: String) {
        if let out { return (try newKey(at: out), out) }
        guard let text = uri else { throw ValidationError("give --out or --pkcs11") }
        do {
            let uri = try PKCS11URI(text)
            let pin = try KeyFile.pin(for: uri, pinFile: pinFile)
            return (SigningKey(external: try TokenKey.generate(uri: uri, pin: pin)), text)
        } catch let error as CertrotError {
            throw DataCheckFailed(error.message)
        }
    }
}

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage the bundle-signing key.", subcommands: [Generate.self, Export.self, Rotate.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate a P-256 signing key and print its kid: a PEM file (mode 0600), or inside a token.",
            discussion: """
                With --pkcs11 the key pair is made by the token (C_GenerateKeyPair): the private key is sensitive and \
                never extractable, labelled with the URI's object= (and id=, or a random id). Refuses when the token \
                already holds a private key of that label. Configure the same URI as signingKey, keyRotation.nextKey \
                or issuers[].key.
                """)

        @OptionGroup var destination: NewKeyOptions

        func run() throws {
            print(try destination.make().key.kid)
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a signing-key rotation: make the next key and say how to roll it out.",
            discussion: """
                Devices keep a list of trusted bundle-verification keys. A rotation is TUF-style: the daemon sends \
                every device that reports its keys a trust_key op for the next key, signed by the current key. \
                Devices that trust the next key get bundles signed with it. When the share in `certrot status` \
                reaches the threshold, promote the next key to signingKey.
                """)

        @OptionGroup var destination: NewKeyOptions

        @Option(help: "Share of devices that must trust the next key before the rotation is reported ready.")
        var threshold: Double = 0.95

        func run() throws {
            let (key, out) = try destination.make()
            print(
                """
                next key: \(out)
                kid:      \(key.kid)

                1. Add to the daemon's config and restart it:
                     keyRotation: {nextKey: \(out), threshold: \(threshold)}
                2. Watch the share of devices that trust it:
                     certrot status --broker URL --json   (result.signing.next.share, .ready)
                3. When ready, make it the signing key (signingKey: \(out)) and remove keyRotation.
                   Devices that never reported the next key keep only the old one: rotate them before retiring it.
                """)
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the public key that devices pin: PEM, JWK, or a C array to #include in firmware.")

        enum Format: String, ExpressibleByArgument, CaseIterable { case pem, jwk, c }

        @Option(help: "The signing key (private, PKCS#8), a public key PEM, or the key's PKCS#11 URI.")
        var key: String

        @Option(help: "For a PKCS#11 URI: the token's user PIN, in a file (mode 0600); else CERTROT_PKCS11_PIN.")
        var pinFile: String?

        @Option(help: "pem, jwk or c.")
        var format: Format = .pem

        func run() throws {
            let publicKey: VerificationKey
            if PKCS11URI.isURI(key) {
                do {
                    publicKey = try KeyFile.load(key, pkcs11: .init(pinFile: pinFile, sessions: 1)).publicKey
                } catch let error as CertrotError {
                    throw DataCheckFailed(error.message)
                }
            } else {
                let text = try String(contentsOfFile: key, encoding: .utf8)
                do {
                    publicKey = try VerificationKey(anyPEM: text)
                } catch {
                    throw ValidationError("\(key): \(error.message)")
                }
            }
            switch format {
            case .pem:
                print(publicKey.pem)
            case .jwk:
                let jwk = publicKey.jwkJSON.dropLast() + #","kid":"\#(publicKey.kid)","alg":"ES256","use":"sig"}"#
                print(jwk)
            case .c:
                print(Self.cArray(publicKey))
            }
        }

        static func cArray(_ key: VerificationKey) -> String {
            let bytes = key.x963
            var lines: [String] = []
            for start in stride(from: 0, to: bytes.count, by: 12) {
                let row = bytes[start..<min(start + 12, bytes.count)].map { String(format: "0x%02x", $0) }
                lines.append("    " + row.joined(separator: ", ") + ",")
            }
            return """
                /* certrot bundle-verification key: P-256 public key, uncompressed point (0x04 || X || Y).
                 * kid (RFC 7638 JWK thumbprint): \(key.kid)
                 * Generated by `certrot keys export --format c`. */
                #define CERTROT_PUBKEY_KID "\(key.kid)"
                static const unsigned char certrot_pubkey[65] = {
                \(lines.joined(separator: "\n"))
                };
                """
        }
    }
}

/// Generates a P-256 key and writes it to `path` (mode 0600, never overwriting).
func newKey(at path: String) throws -> SigningKey {
    let key = SigningKey.generate()
    do {
        try KeyFile.write(key, to: path)
    } catch let error as CertrotError {
        throw DataCheckFailed(error.message)
    }
    return key
}
