import ArgumentParser
import CertrotCore
import CertrotServer
import CertrotStore
import Foundation

/// `certrot audit export|verify`: the audit log (docs/security.md, "Audit log").
struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Export and verify the audit log of what certrot signed, issued and changed.",
        subcommands: [Export.self, Verify.self])

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the audit log as JSON lines, oldest first.",
            discussion: """
                A SQLite store is read read-only, also while the daemon runs. Verify an export made with --since \
                with `audit verify --part`, one made with --device with `audit verify --records`.
                """)

        @Option(help: "The daemon's store URL (sqlite:PATH or postgres://…).") var store: String
        @Option(help: "Only records at or after this Unix time.") var since: Int64?
        @Option(help: "Only this device's records.") var device: String?
        @Option(help: "Write here instead of standard output.") var out: String?

        func run() throws {
            let records = try AuditReader.records(storeURL: store, since: since, device: device)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            var text = ""
            for record in records { text += String(decoding: try encoder.encode(record), as: UTF8.self) + "\n" }
            if let out {
                // Mode 0600 whatever the umask: the log names every device and operator.
                guard
                    FileManager.default.createFile(
                        atPath: out, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
                else { throw ValidationError("cannot write \(out)") }
                chmod(out, 0o600)
            } else {
                print(text, terminator: "")
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the audit log's hash chain and its signed checkpoints; name the first bad record.",
            discussion: """
                Give the exported file, or --store. The checkpoints are verified under --key (public keys, PEM; \
                `certrot keys export --format pem` prints them), or under the signing keys of --config. Unless \
                --no-age, the last checkpoint must be at most --max-age seconds older than --now (default: the \
                newest record's time for a file, now for a store): the daemon signs one every minute while it \
                records and every hour when idle, so an older one means the end of the log is missing. Exits 1 \
                when a check fails.
                """)

        @Argument(help: "An exported file (JSON lines).") var file: String?
        @Option(help: "Read the log from this store instead.") var store: String?
        @Option(name: .customLong("key"), help: "A verification key file (repeatable).") var keys: [String] = []
        @Option(help: "Take the verification keys from this daemon config (signingKey, keyRotation.nextKey).")
        var config: String?
        @Option(help: "Seconds the last checkpoint may be older than --now.") var maxAge: Int64 = 2 * 3600
        @Option(help: "The time to judge the last checkpoint's age against (Unix seconds).") var now: Int64?
        @Flag(help: "Do not check the last checkpoint's age.") var noAge = false
        @Flag(help: "The file is a --since export: a contiguous part of the chain, from its first record.")
        var part = false
        @Flag(help: "The file is a --device export: check each record alone (its hash, a checkpoint's signature).")
        var records = false

        func run() throws {
            var verification: [VerificationKey] = []
            for path in keys {
                verification.append(try VerificationKey(pem: try String(contentsOfFile: path, encoding: .utf8)))
            }
            if let config {
                let settings = try DaemonSettings.resolve(try CertrotConfig.load(path: config))
                verification.append(settings.signer.publicKey)
                if let next = settings.nextSigner { verification.append(next.publicKey) }
            }
            guard !verification.isEmpty else { throw ValidationError("give --key FILE or --config FILE") }
            let log: [AuditRecord]
            var age: Int64?
            switch (file, store) {
            case (let file?, nil):
                let text = try String(contentsOfFile: file, encoding: .utf8)
                var parsed: [AuditRecord] = []
                for (number, line) in text.split(separator: "\n").enumerated() {
                    guard let record = try? JSONDecoder().decode(AuditRecord.self, from: Data(line.utf8)) else {
                        print("FAIL: line \(number + 1) is not an audit record")
                        throw ExitCode(1)
                    }
                    parsed.append(record)
                }
                log = parsed
                age = now ?? log.last?.at
            case (nil, let store?):
                log = try AuditReader.records(storeURL: store)
                age = now ?? Int64(Date().timeIntervalSince1970)
            default:
                throw ValidationError("give an exported FILE or --store URL, not both")
            }
            do {
                if records {
                    for (index, record) in log.enumerated() {
                        do {
                            _ = try AuditChain.verify([record], keys: verification, partial: true)
                        } catch {
                            throw AuditChain.Problem(index: index, seq: record.seq, reason: error.reason)
                        }
                    }
                    print("ok: \(log.count) records checked one by one (a --device export has no chain to follow)")
                } else {
                    let summary = try AuditChain.verify(
                        log, keys: verification, partial: part, now: noAge ? nil : age, maxCheckpointAge: maxAge)
                    let range = log.isEmpty ? "none" : "seq \(log[0].seq)…\(log[log.count - 1].seq)"
                    print(
                        "ok: \(summary.records) records (\(range)); last checkpoint "
                            + (summary.lastCheckpoint.map { "seq \($0.seq) at \($0.at)" } ?? "none")
                            + "; \(summary.unsigned) after it")
                }
            } catch {
                print("FAIL: \(error)")
                throw ExitCode(1)
            }
        }
    }
}
