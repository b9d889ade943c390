import Foundation
import Logging

/// Where a start's time went, for an operator asking why a restart took as long as it did (and for the bench's
/// recovery figure): seconds since the process was executed at each step — config read, store opened, campaigns
/// loaded, broker connected, first bundle part published (the store's integrity check runs beside these and logs
/// its own time, ``IntegrityCheck``). Logged at
/// notice twice: once connected, and at the first bundle part published after the start.
package struct StartupTimes {
    /// Monotonic seconds (``Engine/monotonic``'s clock) at the process's exec; when the kernel does not say, at
    /// this value's creation.
    let origin: Double
    private(set) var steps: [(what: String, at: Double)] = []

    package init(now: Double = Self.monotonicNow()) {
        origin = now - (Self.secondsSinceExec() ?? 0)
    }

    package static func monotonicNow() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// Seconds since this process was executed: `/proc/self/stat`'s start time (clock ticks after boot) against
    /// `CLOCK_BOOTTIME` (10 ms resolution). nil off Linux or when it cannot be read.
    static func secondsSinceExec() -> Double? {
        #if os(Linux)
            guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            // Fields after the command's closing parenthesis start at the third (state); starttime is the 22nd.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 19, let ticks = Double(fields[19]) else { return nil }
            let hertz = Double(sysconf(Int32(_SC_CLK_TCK)))
            var now = timespec()
            guard hertz > 0, clock_gettime(CLOCK_BOOTTIME, &now) == 0 else { return nil }
            let since = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 - ticks / hertz
            return since >= 0 ? since : nil
        #else
            return nil
        #endif
    }

    package mutating func mark(_ what: String, now: Double = Self.monotonicNow()) {
        steps.append((what, now - origin))
    }

    /// "config read 0.054 s, store opened 0.061 s, …": each step at its seconds after exec.
    package var summary: String {
        steps.map { "\($0.what) \(String(format: "%.3f", $0.at)) s" }.joined(separator: ", ")
    }

    /// Marks the broker's first connection and logs the start so far.
    package mutating func connected(logger: Logger, now: Double = Self.monotonicNow()) {
        guard !steps.contains(where: { $0.what == "broker connected" }) else { return }
        mark("broker connected", now: now)
        logger.notice("started (seconds after exec): \(summary)")
    }

    /// Marks each batch the engine commits once connected, until the first one with bundle parts to publish:
    /// what the start did between the connection and its first bundle.
    package mutating func batchCommitted(parts: Int, now: Double = Self.monotonicNow()) {
        guard steps.contains(where: { $0.what == "broker connected" }),
            !steps.contains(where: { $0.what.hasPrefix("first batch with parts") })
        else { return }
        if parts > 0 {
            mark("first batch with parts committed (\(parts) parts)", now: now)
        } else if !steps.contains(where: { $0.what.hasPrefix("batches without parts") }) {
            mark("batches without parts from", now: now)
        }
    }

    /// Marks and logs the first bundle part published after the start (the engine calls it once), with the steps
    /// since the connection.
    package mutating func partPublished(logger: Logger, now: Double = Self.monotonicNow()) {
        let since = steps.drop { $0.what != "broker connected" }.dropFirst()
            .map { "\($0.what) \(String(format: "%.3f", $0.at)) s" }
        mark("first bundle part published", now: now)
        let detail = since.isEmpty ? "" : " (\(since.joined(separator: ", ")))"
        logger.notice("first bundle part published \(String(format: "%.3f", now - origin)) s after exec\(detail)")
    }
}
