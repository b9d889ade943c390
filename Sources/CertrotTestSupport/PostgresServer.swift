import Foundation

/// A real PostgreSQL on an ephemeral loopback port, in a fresh cluster under a temporary directory (initdb, trust
/// authentication on loopback, fsync off: a test server). Tests share one per process (``shared()``) and each
/// creates its own database (``createDatabase()``). Run as root (as CI does), the server runs as the `postgres`
/// user that Debian's package creates: PostgreSQL refuses to run as root.
public final class PostgresServer: @unchecked Sendable {
    // Stored properties are immutable after init, but for `process` (under `processLock`).
    public let port: Int32
    public let directory: URL
    public let user = "certrot"
    /// The server process; replaced by ``restart(downFor:)``, under `processLock`.
    private var process: ChildProcess
    private let processLock = NSLock()
    private let bin: String
    private let wrapper: [String]
    private let data: String
    /// Whether the server loaded pg_stat_statements (the benchmark counts statements with it): when the module
    /// is installed beside the server, as Debian's package has it.
    public let hasStatementStatistics: Bool

    public var host: String { "127.0.0.1" }
    public var logPath: String { directory.appendingPathComponent("postgres.log").path }

    /// The directory holding initdb and postgres: `$PG_BIN`, then Debian's /usr/lib/postgresql/<newest>/bin,
    /// then PATH.
    public static func binDirectory() throws -> String {
        let fm = FileManager.default
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["PG_BIN"] { candidates.append(env) }
        let versions = (try? fm.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        for version in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
            candidates.append("/usr/lib/postgresql/\(version)/bin")
        }
        candidates += (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        guard
            let found = candidates.first(where: {
                fm.isExecutableFile(atPath: "\($0)/initdb") && fm.isExecutableFile(atPath: "\($0)/postgres")
            })
        else {
            throw BrokerError(
                message: "PostgreSQL (initdb, postgres) not found; install it (scripts/bootstrap) or set PG_BIN")
        }
        return found
    }

    public init() throws {
        let bin = try Self.binDirectory()
        self.bin = bin
        let hasStatementStatistics = FileManager.default.fileExists(
            atPath: URL(fileURLWithPath: bin).deletingLastPathComponent().appendingPathComponent(
                "lib/pg_stat_statements.so"
            )
            .path)
        self.hasStatementStatistics = hasStatementStatistics
        let fm = FileManager.default
        let directory = fm.temporaryDirectory.appendingPathComponent("certrot-pg-\(UUID().uuidString)")
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        self.directory = directory
        let data = directory.appendingPathComponent("data").path
        let log = directory.appendingPathComponent("postgres.log").path
        self.data = data
        var wrapper: [String] = []
        if getuid() == 0 {
            guard let account = getpwnam("postgres") else {
                throw BrokerError(
                    message: "running as root needs the 'postgres' user (Debian's postgresql package creates it)")
            }
            chown(directory.path, account.pointee.pw_uid, account.pointee.pw_gid)
            wrapper = ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        }
        self.wrapper = wrapper
        let spawn = { (program: String, arguments: [String]) throws -> ChildProcess in
            try Self.spawn(wrapper: wrapper, bin: bin, program, arguments, log: log)
        }
        let initdb = try spawn(
            "initdb", ["-D", data, "-U", user, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
        guard initdb.waitForExit(timeout: 120) == 0 else {
            initdb.terminate()
            throw BrokerError(message: "initdb failed: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
        var lastError = "postgres did not start"
        for _ in 0..<5 {
            let port = try Broker.freePort()
            let process = try spawn(
                "postgres",
                Self.serverArguments(
                    data: data, port: port, socketDirectory: directory.path, statements: hasStatementStatistics))
            if Broker.waitForPort(port, process: process, timeout: 30) {
                self.port = port
                self.process = process
                return
            }
            process.terminate()
            lastError = (try? String(contentsOfFile: log, encoding: .utf8)) ?? lastError
        }
        throw BrokerError(message: "postgres did not start: \(lastError)")
    }

    static func spawn(
        wrapper: [String], bin: String, _ program: String, _ arguments: [String], log: String
    ) throws -> ChildProcess {
        let argv = wrapper + ["\(bin)/\(program)"] + arguments
        return try ChildProcess(executable: argv[0], arguments: Array(argv.dropFirst()), outputPath: log)
    }

    static func serverArguments(data: String, port: Int32, socketDirectory: String, statements: Bool) -> [String] {
        [
            "-D", data, "-p", "\(port)", "-k", socketDirectory, "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ] + (statements ? ["-c", "shared_preload_libraries=pg_stat_statements"] : [])
    }

    deinit { stop() }

    public func stop() {
        processLock.withLock { process.terminate(grace: 10) }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Stops the server as `pg_ctl restart -m fast` does (SIGINT: every session is ended, then a clean
    /// shutdown), waits `seconds`, and starts it again on the same port and data: the clients see their
    /// connections drop and connecting refused meanwhile.
    public func restart(downFor seconds: Double = 0) throws {
        try processLock.withLock {
            process.signal(SIGINT)
            guard process.waitForExit(timeout: 60) != nil else {
                throw BrokerError(message: "postgres did not shut down within 60 s")
            }
            if seconds > 0 { usleep(UInt32(seconds * 1_000_000)) }
            process = try Self.spawn(
                wrapper: wrapper, bin: bin, "postgres",
                Self.serverArguments(
                    data: data, port: port, socketDirectory: directory.path, statements: hasStatementStatistics),
                log: logPath)
            guard Broker.waitForPort(port, process: process, timeout: 30) else {
                throw BrokerError(message: "postgres did not come back on port \(port)")
            }
        }
    }

    /// `postgres://certrot@127.0.0.1:PORT/DATABASE`.
    public func url(database: String) -> String { "postgres://\(user)@\(host):\(port)/\(database)" }

    /// Creates an empty database and returns its URL.
    public func createDatabase(
        _ name: String = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
    ) throws -> String {
        // The server takes connections a moment before it takes queries ("the database system is starting up").
        for attempt in 1... {
            do {
                try psql("CREATE DATABASE \(name)")
                break
            } catch let error as BrokerError where error.message.contains("starting up") && attempt < 60 {
                usleep(500_000)
            }
        }
        return url(database: name)
    }

    /// Runs one SQL command through psql against `database` and returns what it printed (unaligned, tuples only).
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") throws -> String {
        let log = directory.appendingPathComponent("psql-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let client = try ChildProcess(
            executable: "\(bin)/psql",
            arguments: [
                "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", "\(port)", "-U", user, "-d",
                database, "-c", sql,
            ],
            outputPath: log)
        let status = client.waitForExit(timeout: 60)
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        guard status == 0 else {
            client.terminate()
            throw BrokerError(message: "psql \(sql): \(output)")
        }
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: One server per test process

    nonisolated(unsafe) private static var sharedServer: PostgresServer?
    private static let sharedLock = NSLock()

    /// The process's server, started on first use and stopped when the process exits.
    public static func shared() throws -> PostgresServer {
        sharedLock.lock()
        defer { sharedLock.unlock() }
        if let server = sharedServer { return server }
        let server = try PostgresServer()
        sharedServer = server
        atexit { PostgresServer.sharedServer?.stop() }
        return server
    }
}
