import Foundation

/// AT%KEYGEN answers printed by real nRF9160/nRF9151 modems, published by Nordic and others, with where each came
/// from: `Tests/CertrotCoreTests/Vectors/real-modem/keygen.json` (its `source` and `howJudgedReal` say how they were
/// collected). For the core, engine and CLI tests alike.
package struct RealModemFixtures: Decodable, Sendable {
    package struct Answer: Decodable, Sendable {
        package var id: String
        /// `csr+cose`, `csr+cose (CSR part edited by the test author)`, or `csr-only`.
        package var kind: String
        package var keygen: String
        package var repository: String
        package var path: String
        package var uuid: String?
        package var secTag: Int64?
        /// false: the stored string is not what the modem printed (see `reconstructedModemAnswer`).
        package var verbatim: Bool?
        package var reconstructedModemAnswer: String?

        /// What the modem printed: the stored answer, or the reconstruction of one a test author edited.
        package var modemAnswer: String { verbatim == false ? reconstructedModemAnswer ?? keygen : keygen }
    }

    /// A modem's identity public key (uncompressed point, hex), recovered from the answers it names.
    package struct IdentityKey: Decodable, Sendable {
        package var uuid: String
        package var identityPublicKey: String
        package var recoveredFrom: [String]
    }

    package struct PublicKeyAnswer: Decodable, Sendable {
        package var id: String
        package var keygen: String
    }

    package var answers: [Answer]
    package var identityKeys: [IdentityKey]
    package var publicKeyAnswers: [PublicKeyAnswer]

    package static func load() throws -> RealModemFixtures {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tests/CertrotCoreTests/Vectors/real-modem/keygen.json")
        return try JSONDecoder().decode(RealModemFixtures.self, from: Data(contentsOf: url))
    }

    package func answer(_ id: String) -> Answer? { answers.first { $0.id == id } }
}
