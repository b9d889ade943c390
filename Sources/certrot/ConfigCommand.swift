import ArgumentParser
import CertrotCore
import CertrotServer
import Foundation

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Work with the daemon's configuration.", subcommands: [Check.self, Token.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a config file as `serve` would (files, keys, chains) and report every problem.",
            discussion: """
                Environment overrides apply, as for serve: \
                \(CertrotConfig.environmentOverrides.map { "\($0.variable) (\($0.key))" }.joined(separator: ", ")).
                """)

        @Argument(help: "The YAML config file.")
        var file: String

        func run() throws {
            let config: CertrotConfig
            do {
                config = try CertrotConfig.load(path: file)
            } catch let error as CertrotError {
                print("\(file): \(error.message)")
                throw ExitCode(1)
            }
            let problems = DaemonSettings.problems(config)
            guard !problems.isEmpty else {
                print("\(file): ok")
                return
            }
            for problem in problems { print("\(file): \(problem)") }
            throw ExitCode(1)
        }
    }

    struct Token: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new HTTP API token: prints the token (give it to its holder) and its http.tokens entry.",
            discussion: """
                The token is 32 random bytes, base64url. Only its SHA-256 goes into the config: the daemon never \
                stores the token. Its holder sends it as `Authorization: Bearer <token>`.
                """)

        @Argument(help: "The token's name, recorded as the operator of what it does (1…64 bytes).")
        var name: String

        func validate() throws {
            guard !name.isEmpty, name.utf8.count <= 64,
                !name.contains(where: { $0.isNewline || $0 == "," || $0 == "}" })
            else { throw ValidationError("the name must be 1…64 bytes, without newlines, ',' or '}'") }
        }

        func run() throws {
            var bytes = [UInt8](repeating: 0, count: 32)
            var generator = SystemRandomNumberGenerator()
            for index in bytes.indices { bytes[index] = UInt8.random(in: 0...255, using: &generator) }
            let token = Base64URL.encode(bytes)
            print("token: \(token)")
            print("http.tokens entry: - {name: \(name), sha256: \(Hex.sha256(Array(token.utf8)))}")
        }
    }
}
