import NIOPosix

/// A thread of its own for work that blocks on the store (every PostgreSQL statement waits for its answer). Swift
/// concurrency's cooperative pool has one thread per core; the engine already holds one of them while a batch
/// waits on the database, so a status read run there could wait for a thread before it waited for the database.
/// Run here, it waits only for the database. Stops with the last reference to it.
final class BlockingWorker: Sendable {
    private let pool: NIOThreadPool

    init() {
        pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
    }

    deinit {
        pool.shutdownGracefully { _ in }
    }

    /// Runs `body` on the worker's thread after the work submitted before it, and returns at once; `body` does not
    /// run if the worker is stopping.
    func submit(_ body: @escaping @Sendable () -> Void) {
        pool.submit { state in
            if state == .active { body() }
        }
    }

    /// Runs `body` on the worker's thread and returns its result; throws if the worker is stopping.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }
}
