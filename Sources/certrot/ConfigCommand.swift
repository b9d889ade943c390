import ArgumentParser
import CertrotCore
import CertrotServer
import Foundation

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Work with the daemon's configuration.", subcommands: [Check.self])

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
}
