import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An exclusive lock on a store that one process owns (SQLite): `flock` on a file beside it, holding the owner's
/// process id. The kernel releases it when the process dies, so a SIGKILLed daemon never leaves it stale.
final class StoreLock: @unchecked Sendable {
    // `fd` is set once in init and closed once in release (guarded by `released`).
    private var fd: Int32
    private let released = NSLock()
    private var isReleased = false

    init(path: String, store: String) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw StoreError("cannot open \(path) to lock store \(store): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = read(fd, &buffer, buffer.count)
            let holder = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            close(fd)
            throw StoreError(
                "store \(store) is in use by another process (pid \(holder.isEmpty ? "unknown" : holder), lock \(path)): "
                    + "run one certrot per SQLite store, or use PostgreSQL with cluster: for several")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, pid, pid.count, 0)
    }

    func release() {
        released.lock()
        defer { released.unlock() }
        guard !isReleased else { return }
        isReleased = true
        flock(fd, LOCK_UN)
        close(fd)
    }

    deinit { release() }
}
