import CertrotCore
import Foundation
import Logging
import Synchronization

/// The store's integrity check (SQLite's `quick_check`) on a thread of its own, beside the daemon's start rather
/// than before it: it reads every page, 0.9 s at 100,000 devices after two campaigns (#35 §3), and a restart should
/// not wait for it, nor does `/readyz` (at nice 19 on a busy machine it may take seconds): meanwhile
/// `certrot_store_check_running` is 1; when it passes its time is logged; damage it finds makes `/readyz` fail and
/// stops the daemon (`stop`, then `CertrotDaemon.run()` throws the check's error, which says what to do). What the
/// start writes meanwhile goes through SQLite, which refuses a page it finds damaged.
final class IntegrityCheck: Sendable {
    private let result = Mutex<(any Error)?>(nil)
    private let running = Mutex<Task<Void, Never>?>(nil)

    /// The check's error once it failed; nil while it runs and once it passed.
    var failure: (any Error)? { result.withLock { $0 } }

    init(
        store: any RotationStore, observability: Observability, logger: Logger, stop: @escaping @Sendable () -> Void
    ) {
        observability.storeCheck(running: true)
        let worker = BlockingWorker()
        let task = Task { [self] in
            do {
                if let seconds = try await worker.run({
                    // At the lowest priority: the check must not take the CPU a restart's first bundles need (at
                    // 100,000 devices it delayed the first bundle by the check's own 0.9 s on two busy cores).
                    Self.lowerThisThreadsPriority()
                    return try store.checkIntegrity()
                }) {
                    let after = StartupTimes.secondsSinceExec().map { String(format: ", %.3f s after exec", $0) }
                    logger.notice(
                        "store integrity check (quick_check) passed in \(String(format: "%.3f", seconds)) s\(after ?? "")"
                    )
                }
                observability.storeCheck(running: false)
            } catch {
                guard !Task.isCancelled else { return }
                logger.critical("\(error)")
                observability.storeCheck(running: false, failure: "\(error)")
                result.withLock { $0 = error }
                stop()
            }
        }
        running.withLock { $0 = task }
    }

    func cancel() { running.withLock { $0?.cancel() } }

    /// Nice 19 for the calling thread (the worker made for the check): on Linux a nice value is per thread.
    private static func lowerThisThreadsPriority() {
        #if os(Linux)
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)  // 0: the calling thread, on Linux
        #endif
    }
}
