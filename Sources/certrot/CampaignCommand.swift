import ArgumentParser
import CertrotConsole
import CertrotCore
import CertrotMQTT
import Foundation

struct CampaignCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "campaign",
        abstract: "Create, watch and steer renewal campaigns on a running daemon (JSON-RPC over MQTT).",
        discussion: "See docs/operations.md. Mutating commands sign their request with --operator-key when given.",
        subcommands: [Create.self, List.self, Status.self, Pause.self, Resume.self, Abort.self, Watch.self])

    /// Calls `method`, printing a JSON-RPC error (with its data) to stderr and exiting 1 on failure.
    static func call(
        _ connection: BrokerOptions, _ method: String, _ params: [String: Any], signed: Bool = false,
        timeout: Double? = nil
    ) async throws -> [String: Any] {
        let client = try connection.connect()
        defer { client.close() }
        let reply = try await client.call(
            method, params: params, timeout: timeout ?? connection.timeout, sign: signed ? try connection.signer() : nil
        )
        if let error = reply["error"] as? [String: Any] {
            var text = "certrot: \(method) refused: \(error["message"] ?? "error") (\(error["code"] ?? "?"))"
            if let data = error["data"] as? [String: Any], !data.isEmpty {
                text +=
                    "\n  " + data.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "\n  ")
            }
            FileHandle.standardError.write(Data((text + "\n").utf8))
            throw ExitCode(1)
        }
        return reply["result"] as? [String: Any] ?? [:]
    }

    static func printJSON(_ object: Any) throws {
        print(
            String(
                decoding: try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]),
                as: UTF8.self))
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a campaign: preflight-checked, then rolled out wave by wave.",
            discussion: """
                One target from the flags (--chain or --credential, --tag, --type, --strategy), or several with \
                --targets FILE (a JSON list of {tag, type, chain | credential, strategy}). Exactly one selection: \
                --all, --devices, --prefix, --pattern, --holding or --expiring-tag with --expiring-before. \
                --client-cert POLICY instead of a target renews the devices' client certificates under that \
                clientCerts policy (docs/client-certificates.md).
                Example: certrot campaign create --broker mqtt://127.0.0.1 --name ca-2027 --chain new-ca.pem \
                --strategy overlap --all --waves 1%,10%,50%,100% --rate 50 --endpoint-chain server-chain.pem
                """)

        @OptionGroup var connection: BrokerOptions
        @Option(help: "Campaign name.") var name: String
        @Option(help: "PEM chain file to write.") var chain: String?
        @Option(help: "A chain by name from the daemon's catalogue (or a configured target's name).") var credential:
            String?
        @Option(help: "Sec tag.") var tag: Int64 = 42
        @Option(help: "AT%CMNG credential type (0: root CA chain).") var type: Int = 0
        @Option(help: "replace (default) or overlap (new roots plus the still-valid roots held now).") var strategy:
            String = "replace"
        @Option(help: "JSON file with a list of targets, instead of the single-target flags.") var targets: String?
        @Option(help: "Renew client certificates under this clientCerts policy (kind client-cert), not a chain.")
        var clientCert: String?
        @Flag(help: "Select every known device.") var all = false
        @Option(help: "Select these devices (comma-separated IDs).") var devices: String?
        @Option(help: "Select devices whose ID starts with this.") var prefix: String?
        @Option(help: "Select devices whose ID matches this glob (* and ?).") var pattern: String?
        @Option(help: "Select devices holding a credential with this sha256.") var holding: String?
        @Option(help: "With --expiring-before: the tag whose credential's expiry counts.") var expiringTag: Int64?
        @Option(help: "Select devices whose credential in --expiring-tag expires before this Unix time.")
        var expiringBefore: Int64?
        @Option(help: "Cumulative waves: shares like 1% or counts, comma-separated (default: one wave).") var waves:
            String?
        @Option(help: "Share of a wave that must be verified before the next starts (default 0.95).")
        var successThreshold: Double?
        @Option(help: "Share of executed devices failing that pauses the campaign (default 0.05).") var errorThreshold:
            Double?
        @Option(help: "Executed devices needed before the error threshold applies (default 10).") var minExecuted: Int?
        @Option(help: "Bundles per second (default: no limit).") var rate: Double?
        @Option(
            help: "Maintenance window, e.g. \"mon-fri 01:00-05:00 Europe/Berlin\" or \"* 22:00-04:00\" (repeatable).")
        var window: [String] = []
        @Option(help: "Unix time to start at (scheduled until then).") var start: Int64?
        @Option(help: "Unix time after which nothing new is sent (the campaign is aborted).") var deadline: Int64?
        @Flag(help: "Devices that appear later and match join the campaign.") var continuous = false
        @Flag(help: "Pause after each wave until someone resumes.") var pauseAfterWave = false
        @Option(
            help:
                "The chain the server presents (leaf first): refuse unless it verifies to the roots devices will hold.")
        var endpointChain: String?
        @Option(help: "Least validity left on every certificate, e.g. 30d (default 30d).") var minRemainingValidity:
            String?
        @Flag(help: "Print the raw JSON result.") var json = false

        func params() throws -> [String: Any] {
            var params: [String: Any] = ["name": name]
            if let clientCert {
                guard chain == nil, credential == nil, targets == nil else {
                    throw ValidationError("--client-cert takes no --chain, --credential or --targets")
                }
                params["kind"] = "client-cert"
                params["clientCert"] = clientCert
            } else if let targets {
                let data = try Data(contentsOf: URL(fileURLWithPath: targets))
                guard let list = try JSONSerialization.jsonObject(with: data) as? [Any] else {
                    throw ValidationError("--targets must be a JSON list")
                }
                params["targets"] = list
            } else {
                var target: [String: Any] = ["tag": tag, "type": type, "strategy": strategy]
                switch (chain, credential) {
                case (let file?, nil): target["chain"] = try read(file, "--chain")
                case (nil, let name?): target["credential"] = name
                default:
                    throw ValidationError("give exactly one of --chain FILE and --credential NAME (or --targets FILE)")
                }
                params["targets"] = [target]
            }
            var selections: [[String: Any]] = []
            if all { selections.append(["all": true]) }
            if let devices {
                selections.append([
                    "devices": devices.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
                ])
            }
            if let prefix { selections.append(["prefix": prefix]) }
            if let pattern { selections.append(["pattern": pattern]) }
            if let holding { selections.append(["holding": holding]) }
            if expiringTag != nil || expiringBefore != nil {
                guard let expiringTag, let expiringBefore else {
                    throw ValidationError("--expiring-tag and --expiring-before go together")
                }
                selections.append(["tag": expiringTag, "expiringBefore": expiringBefore])
            }
            guard selections.count == 1 else {
                throw ValidationError(
                    "give exactly one selection: --all, --devices, --prefix, --pattern, --holding or --expiring-tag/--expiring-before"
                )
            }
            params["select"] = selections[0]
            if let waves {
                params["waves"] = waves.split(separator: ",").map { part -> Any in
                    let text = part.trimmingCharacters(in: .whitespaces)
                    return Int(text).map { $0 as Any } ?? text
                }
            }
            params["successThreshold"] = successThreshold
            params["errorThreshold"] = errorThreshold
            params["minExecuted"] = minExecuted
            params["rate"] = rate
            if !window.isEmpty { params["windows"] = try window.map(Self.parseWindow) }
            params["start"] = start
            params["deadline"] = deadline
            if continuous { params["continuous"] = true }
            if pauseAfterWave { params["pauseAfterWave"] = true }
            if let endpointChain { params["endpointChain"] = try read(endpointChain, "--endpoint-chain") }
            if let minRemainingValidity {
                guard let seconds = Self.duration(minRemainingValidity) else {
                    throw ValidationError("--min-remaining-validity must be a duration like 30d, 12h or 3600")
                }
                params["minRemainingValidity"] = seconds
            }
            return params
        }

        static func duration(_ text: String) -> Int64? {
            let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
            if let unit = text.last, let multiplier = units[unit], let value = Int64(text.dropLast()), value >= 0 {
                return value * multiplier
            }
            return Int64(text)
        }

        /// "mon-fri 01:00-05:00 Europe/Berlin", "sat,sun 00:00-06:00", "* 22:00-04:00 UTC".
        static func parseWindow(_ text: String) throws -> [String: Any] {
            let parts = text.split(separator: " ").map(String.init)
            guard parts.count == 2 || parts.count == 3 else {
                throw ValidationError("--window '\(text)': expected DAYS HH:MM-HH:MM [ZONE]")
            }
            let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            var days: [String] = []
            if parts[0] != "*" {
                for item in parts[0].split(separator: ",") {
                    let range = item.split(separator: "-").map(String.init)
                    if range.count == 2, let from = names.firstIndex(of: range[0]),
                        let to = names.firstIndex(of: range[1])
                    {
                        var index = from
                        while true {
                            days.append(names[index])
                            if index == to { break }
                            index = (index + 1) % 7
                        }
                    } else {
                        days.append(String(item))
                    }
                }
            }
            let times = parts[1].split(separator: "-").map(String.init)
            guard times.count == 2 else { throw ValidationError("--window '\(text)': times must be HH:MM-HH:MM") }
            var window: [String: Any] = ["days": days, "start": times[0], "end": times[1]]
            if parts.count == 3 { window["zone"] = parts[2] }
            return window
        }

        private func read(_ path: String, _ flag: String) throws -> String {
            do {
                return try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw ValidationError("\(flag): cannot read \(path)")
            }
        }

        func run() async throws {
            let result = try await CampaignCommand.call(
                connection, "campaign.create", try params(), signed: true, timeout: max(connection.timeout, 30))
            if json {
                try CampaignCommand.printJSON(result)
            } else {
                print(
                    "campaign \(result["id"] ?? "?") \(result["state"] ?? "created"): \(result["devices"] ?? 0) device(s) in \(result["waves"] ?? 1) wave(s)"
                )
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List campaigns.")
        @OptionGroup var connection: BrokerOptions
        @Option(help: "Only campaigns in this state (scheduled, running, paused, completed, aborted).") var state:
            String?
        @Flag(help: "Print the raw JSON result.") var json = false

        func run() async throws {
            var params: [String: Any] = [:]
            params["state"] = state
            let result = try await CampaignCommand.call(connection, "campaign.list", params)
            if json { return try CampaignCommand.printJSON(result) }
            let campaigns = result["campaigns"] as? [[String: Any]] ?? []
            if campaigns.isEmpty { print("no campaigns") }
            for campaign in campaigns {
                let states = campaign["states"] as? [String: Int] ?? [:]
                var line =
                    "\(campaign["id"] ?? "?")  \(campaign["state"] ?? "?")  \(campaign["name"] ?? "")  "
                    + "verified \(states["verified"] ?? 0)/\(campaign["total"] ?? 0)"
                    + "  wave \((campaign["currentWave"] as? Int ?? 0) + 1)/\(campaign["waves"] ?? 1)"
                if let reason = campaign["reason"] as? String { line += "  (\(reason))" }
                print(line)
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a campaign's progress: counts per wave, rate, ETA, failures.")
        @OptionGroup var connection: BrokerOptions
        @Argument(help: "Campaign id.") var id: String
        @Flag(help: "Print the raw JSON result.") var json = false

        func run() async throws {
            let result = try await CampaignCommand.call(connection, "campaign.status", ["id": id])
            if json { return try CampaignCommand.printJSON(result) }
            print(Progress.render(result, tty: false).joined(separator: "\n"))
            for failure in (result["failures"] as? [[String: Any]] ?? []).prefix(20) {
                print("  \(failure["device"] ?? "?")  \(failure["state"] ?? "?")  \(failure["reason"] ?? "")")
            }
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pause a campaign: nothing new is sent until it is resumed.")
        @OptionGroup var connection: BrokerOptions
        @Argument(help: "Campaign id.") var id: String
        @Option(help: "Why (shown in the campaign's status).") var reason: String?

        func run() async throws {
            var params: [String: Any] = ["id": id]
            params["reason"] = reason
            let result = try await CampaignCommand.call(connection, "campaign.pause", params, signed: true)
            print("campaign \(id) \(result["state"] ?? "?")")
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Resume a paused campaign (after a threshold pause, accepting the current wave's results).")
        @OptionGroup var connection: BrokerOptions
        @Argument(help: "Campaign id.") var id: String

        func run() async throws {
            let result = try await CampaignCommand.call(connection, "campaign.resume", ["id": id], signed: true)
            print("campaign \(id) \(result["state"] ?? "?"), wave \((result["currentWave"] as? Int ?? 0) + 1)")
        }
    }

    struct Abort: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Abort a campaign: devices not yet sent a bundle are cancelled; bundles already out still count.")
        @OptionGroup var connection: BrokerOptions
        @Argument(help: "Campaign id.") var id: String
        @Option(help: "Why (shown in the campaign's status).") var reason: String?

        func run() async throws {
            var params: [String: Any] = ["id": id]
            params["reason"] = reason
            let result = try await CampaignCommand.call(connection, "campaign.abort", params, signed: true)
            print("campaign \(id) \(result["state"] ?? "?"); \(result["cancelled"] ?? 0) device(s) cancelled")
        }
    }

    struct Watch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Follow a campaign: a progress bar per wave in a terminal, plain lines otherwise; ends when it completes or is aborted."
        )
        @OptionGroup var connection: BrokerOptions
        @Argument(help: "Campaign id.") var id: String
        @Option(help: "Seconds between updates.") var interval: Double = 1
        @Flag(help: "Plain lines even in a terminal.") var plain = false

        func run() async throws {
            let client = try connection.connect()
            defer { client.close() }
            let tty = !plain && isatty(STDOUT_FILENO) == 1
            var drawn = 0
            var lastPlain = ""
            while true {
                let reply = try await client.call("campaign.status", params: ["id": id], timeout: connection.timeout)
                if let error = reply["error"] as? [String: Any] {
                    FileHandle.standardError.write(Data("certrot: \(error["message"] ?? "error")\n".utf8))
                    throw ExitCode(1)
                }
                let status = reply["result"] as? [String: Any] ?? [:]
                let lines = Progress.render(status, tty: tty)
                // Written straight to the file descriptor: no buffering between redraws.
                if tty {
                    var text = drawn > 0 ? "\u{1B}[\(drawn)A" : ""
                    for line in lines { text += "\u{1B}[2K" + line + "\n" }
                    FileHandle.standardOutput.write(Data(text.utf8))
                    drawn = lines.count
                } else {
                    let text = lines.joined(separator: "\n")
                    if text != lastPlain { FileHandle.standardOutput.write(Data((text + "\n").utf8)) }
                    lastPlain = text
                }
                let state = status["state"] as? String ?? ""
                if state == "completed" || state == "aborted" { return }
                try await Task.sleep(for: .milliseconds(Int(interval * 1000)))
            }
        }
    }
}
