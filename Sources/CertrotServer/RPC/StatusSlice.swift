import CSched
import Foundation
import Logging
import Synchronization

/// A shorter scheduling slice for the threads a status read passes through: the RPC connection's network thread,
/// the thread that runs the read, and the store's reading event loop (docs/performance.md, "Status reads under
/// load").
///
/// During a campaign on a machine where the database shares the cores, every core is busy, and a thread that wakes
/// (a status request has arrived, the answer to its statement has come back) waits for one until a running thread's
/// slice ends — the whole tail of `device.status` on PostgreSQL was that wait, not the database's work. Linux 6.6
/// and later (EEVDF) let a thread ask for a shorter slice (`sched_setattr(2)`'s `sched_runtime`), which gives it an
/// earlier deadline when it wakes, so it runs sooner; it runs as long as before in all, only in shorter turns. No
/// privilege is needed for one's own threads, and the policy and nice value stay. Where the kernel has no such
/// call or no custom slices, nothing changes and a warning says so once.
package final class StatusSlice: Sendable {
    /// The slice asked for, in microseconds (config `statusSlice`); 0 asks for nothing.
    package let microseconds: Int
    private let logger: Logger
    private let warned = Atomic<Bool>(false)

    /// The default: 0.2 ms, against the kernel's 0.75–3 ms (its `base_slice`, scaled by the number of cores).
    package static let defaultMicroseconds = 200

    package init(microseconds: Int, logger: Logger) {
        self.microseconds = max(0, microseconds)
        self.logger = logger
    }

    /// Asks for the slice for the calling thread; `thread` names it in the warning if the kernel refuses.
    package func apply(_ thread: String) {
        guard microseconds > 0 else { return }
        let error = certrot_set_thread_slice(UInt64(microseconds) * 1000)
        guard error != 0 else { return }
        guard !warned.exchange(true, ordering: .relaxed) else { return }
        logger.warning(
            "cannot shorten the scheduling slice of the status-read threads; status reads may wait longer for a core under load",
            metadata: ["thread": "\(thread)", "errno": "\(error)", "statusSlice": "\(microseconds)us"])
    }

    /// Asks for `microseconds` (0: the kernel's) for every thread of every process named `command` (its `comm`);
    /// returns how many threads took it. For the benchmark, run as root, on its own PostgreSQL.
    package static func apply(microseconds: Int, toProcessesNamed command: String) -> Int {
        var count = 0
        for pid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int(pid) != nil {
            guard
                let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
                comm.trimmingCharacters(in: .whitespacesAndNewlines) == command
            else { continue }
            for task in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
                if let tid = Int32(task), certrot_set_task_slice(tid, UInt64(microseconds) * 1000) == 0 { count += 1 }
            }
        }
        return count
    }

    /// The calling thread's requested slice in microseconds, or nil where the kernel cannot tell.
    package static func current() -> Int? {
        let nanoseconds = certrot_thread_slice()
        return nanoseconds < 0 ? nil : Int(nanoseconds / 1000)
    }
}
