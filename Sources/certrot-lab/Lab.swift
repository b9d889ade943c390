import ArgumentParser
import Foundation

/// The demo and the benchmark. Each starts what it needs on this machine — mosquitto on a free loopback port,
/// PostgreSQL for the cluster phase — and runs the `certrot` built beside this executable; they are not part of
/// the shipped `certrot`, which never links the launchers and fixture certificates of CertrotTestSupport.
@main
struct Lab: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certrot-lab",
        abstract: "Try and measure certrot on this machine: the demo and the benchmark (make demo, make bench).",
        subcommands: [Demo.self, Bench.self, HostileIssuance.self])
}

/// The `certrot` executable built beside this one (or $CERTROT_BIN).
func certrotExecutable() -> String {
    if let path = ProcessInfo.processInfo.environment["CERTROT_BIN"] { return path }
    return URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("certrot").path
}
