import ArgumentParser
import CertrotCore
import CertrotServer
import Crypto
import Foundation

/// `certrot identity learn`: a modem's device identity public key, recovered from its attested KEYGEN answers.
struct IdentityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "identity", abstract: "Register modems' device identity keys.", subcommands: [Learn.self])

    struct Learn: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recover a modem's identity public key from its attested AT%KEYGEN answers and register it.",
            discussion: """
                A modem never prints its identity public key, but it signs every attested KEYGEN answer with it, \
                and each ECDSA signature admits two public keys. Two answers from one modem (its two A/B tags, or \
                the factory's keygen and a later one) leave one: that key and the attested UUID are written as the \
                device's line of the identities file (docs/client-certificates.md). One answer prints its two \
                candidates and writes nothing. Every answer must carry an attestation, name one UUID, and hold a \
                CSR whose own signature verifies.
                """)

        @Option(help: "The device ID the key is registered under.")
        var device: String
        @Option(help: "The identities file (JSON Lines) to write; the device's line is replaced or added.")
        var identities: String?
        @Argument(help: "Files holding one KEYGEN answer each (as the modem printed it), or - for standard input.")
        var answers: [String]

        func run() throws {
            if let problem = DeviceID.problem(device) { throw ValidationError("--device: \(problem)") }
            guard !answers.isEmpty else { throw ValidationError("give at least one KEYGEN answer") }
            var messages: [COSESign1] = []
            var uuid: [UInt8]?
            for path in answers {
                let output: KeygenOutput
                do {
                    output = try KeygenOutput.parse(try readInput(path))
                } catch let error as CertrotError {
                    throw ValidationError("\(path): \(error.message)")
                }
                guard let cose = output.cose, let attestation = output.attestation else {
                    throw ValidationError("\(path): the answer carries no attestation (AT%KEYGEN=…,2,0 prints one)")
                }
                if let uuid, uuid != attestation.uuid {
                    throw ValidationError(
                        "\(path): attested by modem \(ModemUUID.format(attestation.uuid)), the others by "
                            + ModemUUID.format(uuid))
                }
                uuid = attestation.uuid
                messages.append(cose)
                print("\(path): modem \(ModemUUID.format(attestation.uuid)), sec tag \(attestation.secTag)")
            }
            switch IdentityKeyRecovery.recover(messages) {
            case .none:
                throw ValidationError("no one key signed every answer: they are not all from one modem")
            case .ambiguous(let keys):
                print("candidates  \(keys.count) keys fit; a second answer from the same modem settles it:")
                for key in keys { print("  \(Hex.encode(key.x963Representation))") }
                throw ExitCode(2)
            case .settled(let key):
                print("identity key \(Hex.encode(key.x963Representation))")
                print(key.pemRepresentation)
                guard let identities else { return }
                do {
                    let replaced = try IdentityFile.upsert(path: identities, device: device, key: key, uuid: uuid)
                    print("\(replaced ? "replaced" : "added") \(device) in \(identities)")
                } catch let error as CertrotError {
                    throw ValidationError(error.message)
                }
            }
        }
    }
}
