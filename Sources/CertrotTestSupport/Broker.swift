import Foundation

/// A real mosquitto on an ephemeral loopback port, for tests and `certrot-lab demo`. Stopped by ``stop()`` or at deinit.
public final class Broker: @unchecked Sendable {
    // `process` is replaced only by restart(); tests call stop() and restart() from one task at a time.
    public let port: Int32
    /// The TLS listener's port, when one was asked for.
    public let tlsPort: Int32?
    public let directory: URL
    private var process: ChildProcess
    private let binary: String
    private let configPath: String

    public var url: String { "mqtt://127.0.0.1:\(port)" }
    public var host: String { "127.0.0.1" }
    public var logPath: String { directory.appendingPathComponent("mosquitto.log").path }

    /// Finds mosquitto: `$MOSQUITTO`, then /usr/sbin, then PATH.
    public static func executable() throws -> String {
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["MOSQUITTO"] { candidates.append(env) }
        candidates += ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"]
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            candidates.append("\(dir)/mosquitto")
        }
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw BrokerError(message: "mosquitto not found; install it (scripts/bootstrap) or set MOSQUITTO")
        }
        return found
    }

    /// Files for a TLS listener: the CA that signed client certificates, the broker's certificate and key.
    public struct TLSFiles: Sendable {
        public var caFile: String
        public var certFile: String
        public var keyFile: String
        /// Client certificates required, their CN used as the username (for ACL `%u` patterns).
        public var requireClientCertificate: Bool
        /// A CRL (PEM) client certificates are checked against, read when the broker starts.
        public var crlFile: String?
        /// A plugin (certrot's revocation plugin) sets the username from the certificate: no
        /// `use_identity_as_username`, with which mosquitto would call no plugin's authentication.
        public var identityFromPlugin: Bool

        public init(
            caFile: String, certFile: String, keyFile: String, requireClientCertificate: Bool = true,
            crlFile: String? = nil, identityFromPlugin: Bool = false
        ) {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
            self.requireClientCertificate = requireClientCertificate
            self.crlFile = crlFile
            self.identityFromPlugin = identityFromPlugin
        }
    }

    /// Starts mosquitto with a loopback listener on a free port, `extraConfig` (global settings such as
    /// `acl_file`), and optionally a TLS listener on a second free port.
    /// `persistent`: sessions and retained messages survive ``restart()`` (mosquitto persistence on).
    public init(
        extraConfig: String = "", listenerConfig: String = "allow_anonymous true", tls: TLSFiles? = nil,
        persistent: Bool = false
    ) throws {
        let binary = try Self.executable()
        self.binary = binary
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "certrot-broker-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // mosquitto started as root runs as user mosquitto: let it write its persistence file here.
        chmod(directory.path, 0o777)
        self.directory = directory
        self.configPath = directory.appendingPathComponent("mosquitto.conf").path
        var lastError = "mosquitto did not start"
        for _ in 0..<5 {
            let port = try Self.freePort()
            let tlsPort = try tls.map { _ in try Self.freePort() }
            var config = """
                persistence \(persistent)
                persistence_location \(directory.path)/
                autosave_interval 1
                max_queued_messages 1000000
                max_inflight_messages 1000
                set_tcp_nodelay true
                log_type error
                log_type warning
                log_type notice
                \(extraConfig)
                listener \(port) 127.0.0.1
                \(listenerConfig)

                """
            if let tls, let tlsPort {
                config += """
                    listener \(tlsPort) 127.0.0.1
                    cafile \(tls.caFile)
                    certfile \(tls.certFile)
                    keyfile \(tls.keyFile)
                    require_certificate \(tls.requireClientCertificate)
                    use_identity_as_username \(tls.requireClientCertificate && !tls.identityFromPlugin)
                    \(tls.crlFile.map { "crlfile \($0)" } ?? "")

                    """
            }
            let configPath = directory.appendingPathComponent("mosquitto.conf")
            try config.write(to: configPath, atomically: true, encoding: .utf8)
            let process = try ChildProcess(
                executable: binary, arguments: ["-c", configPath.path],
                outputPath: directory.appendingPathComponent("mosquitto.log").path)
            if Self.waitForPort(port, process: process, timeout: 5),
                tlsPort.map({ Self.waitForPort($0, process: process, timeout: 5) }) ?? true
            {
                self.port = port
                self.tlsPort = tlsPort
                self.process = process
                return
            }
            process.terminate()
            lastError =
                (try? String(contentsOfFile: directory.appendingPathComponent("mosquitto.log").path, encoding: .utf8))
                ?? lastError
        }
        throw BrokerError(message: "mosquitto did not start: \(lastError)")
    }

    deinit { stop() }

    /// The broker process's id (changes only when ``restart()`` starts a new one).
    public var pid: pid_t { process.pid }

    public func stop() {
        process.terminate()
    }

    /// Stops mosquitto (SIGTERM: a persistent broker saves its state) and starts it again on the same ports.
    public func restart(downFor seconds: Double = 0) throws {
        process.terminate()
        if seconds > 0 { usleep(UInt32(seconds * 1_000_000)) }
        let log = directory.appendingPathComponent("mosquitto.log").path
        process = try ChildProcess(executable: binary, arguments: ["-c", configPath], outputPath: log)
        guard Self.waitForPort(port, process: process, timeout: 10) else {
            throw BrokerError(message: "mosquitto did not come back on port \(port)")
        }
    }

    /// A port that was free a moment ago (bind to port 0, read it, close).
    public static func freePort() throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BrokerError(message: "socket() failed") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                guard bind(fd, pointer, length) == 0 else { return -1 }
                return getsockname(fd, pointer, &length)
            }
        }
        guard bound == 0 else { throw BrokerError(message: "bind() failed") }
        return Int32(UInt16(bigEndian: addr.sin_port))
    }

    static func waitForPort(_ port: Int32, process: ChildProcess, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard process.isRunning else { return false }
            if let fd = RawHTTP.connectLoopback(port: port) {
                close(fd)
                return true
            }
            usleep(50_000)
        }
        return false
    }
}

public struct BrokerError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
