import Foundation
import Logging

// Terminal output shared by the `certrot` CLI and `certrot-lab` (the demo and the benchmark).

/// Logs to standard error at `level` from here on (once per process), and returns a logger named `label`. Every
/// line goes through ``EscapingLogHandler``: peers' words cannot start a forged line.
public func makeStandardErrorLogger(_ label: String, level: Logger.Level) -> Logger {
    LoggingSystem.bootstrap { name in
        var handler = StreamLogHandler.standardError(label: name)
        handler.logLevel = level
        return EscapingLogHandler(handler)
    }
    return Logger(label: label)
}

/// Unbuffered line output, so progress shows at once even through a pipe.
public func say(_ text: String = "") {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

public enum FleetTable {
    public static let order = [
        "in_sync", "pending", "sent", "applied", "verified", "rejected", "failed", "timed_out", "cancelled",
    ]

    public static func render(_ result: [String: Any]) -> String {
        var lines = ["devices: \(result["devices"] ?? 0)"]
        let header = ["target"] + order
        var rows: [[String]] = [header]
        if let states = result["states"] as? [String: Int] {
            rows.append(["(all)"] + order.map { "\(states[$0] ?? 0)" })
        }
        for (name, value) in ((result["targets"] as? [String: Any]) ?? [:]).sorted(by: { $0.key < $1.key }) {
            let states = ((value as? [String: Any])?["states"] as? [String: Int]) ?? [:]
            rows.append([name] + order.map { "\(states[$0] ?? 0)" })
        }
        let widths = (0..<header.count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            lines.append(
                zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
        if let dropped = result["dropped"] as? [String: Int], !dropped.isEmpty {
            lines.append(
                "dropped: " + dropped.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }
}

/// Campaign progress as text: a header line and one line per wave.
public enum Progress {
    public static func render(_ status: [String: Any], tty: Bool) -> [String] {
        let states = status["states"] as? [String: Int] ?? [:]
        let total = status["total"] as? Int ?? 0
        var header = "\(status["id"] ?? "?") \(status["name"] ?? "") — \(status["state"] ?? "?")"
        header += ": verified \(states["verified"] ?? 0)/\(total)"
        if let rate = status["rate"] as? Double { header += String(format: ", %.1f/s", rate) }
        if let eta = status["eta"] as? Int, eta > 0 { header += ", ETA \(eta) s" }
        if let reason = status["reason"] as? String { header += " (\(reason))" }
        var lines = [header]
        for wave in status["waves"] as? [[String: Any]] ?? [] {
            let counts = wave["states"] as? [String: Int] ?? [:]
            let size = wave["size"] as? Int ?? 0
            let verified = counts["verified"] ?? 0
            let inFlight = (counts["pending"] ?? 0) + (counts["sent"] ?? 0) + (counts["applied"] ?? 0)
            let failed = (counts["rejected"] ?? 0) + (counts["failed"] ?? 0) + (counts["timed_out"] ?? 0)
            let index = (wave["index"] as? Int ?? 0) + 1
            var line = "  wave \(index) \(wave["state"] ?? "?")"
            if tty { line += " " + bar(verified: verified, inFlight: inFlight, failed: failed, size: size) }
            line += "  verified \(verified)/\(size)  sent \(inFlight)  failed \(failed)"
            if let cancelled = counts["cancelled"], cancelled > 0 { line += "  cancelled \(cancelled)" }
            lines.append(line)
        }
        return lines
    }

    /// `[#####>>>!!......]`: verified, in flight, failed, not yet.
    public static func bar(verified: Int, inFlight: Int, failed: Int, size: Int, width: Int = 30) -> String {
        guard size > 0 else { return "[" + String(repeating: " ", count: width) + "]" }
        func cells(_ n: Int) -> Int { Int((Double(n) / Double(size) * Double(width)).rounded()) }
        let v = cells(verified)
        let f = min(width - v, cells(failed))
        let s = min(width - v - f, cells(inFlight))
        return "[" + String(repeating: "#", count: v) + String(repeating: "!", count: f)
            + String(repeating: ">", count: s)
            + String(repeating: ".", count: max(0, width - v - f - s)) + "]"
    }
}
