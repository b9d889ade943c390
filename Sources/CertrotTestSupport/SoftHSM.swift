import Foundation

/// A real SoftHSM2 token in a temporary directory: its own `softhsm2.conf`, one token initialised with
/// `softhsm2-util`, a user PIN and a PIN file (mode 0600). A process that loads the module reads the config named
/// by `SOFTHSM2_CONF` once, at C_Initialize: in-process tests share ``shared()`` (which sets the variable for the
/// test process and the daemons it starts); a daemon started with ``environment`` uses a token of its own.
public final class SoftHSM: Sendable {
    public let directory: URL
    public let label: String
    public let pin = "24681357"
    public let soPin = "13572468"
    public var configPath: String { directory.appendingPathComponent("softhsm2.conf").path }
    public var tokenDirectory: String { directory.appendingPathComponent("tokens").path }
    public var pinFile: String { directory.appendingPathComponent("pin").path }
    /// `SOFTHSM2_CONF` for a process that should see this token.
    public var environment: [String: String] { ["SOFTHSM2_CONF": configPath] }

    /// The module: `$CERTROT_PKCS11_MODULE`, else where Debian installs SoftHSM2.
    public static func module() throws -> String {
        let candidates =
            [ProcessInfo.processInfo.environment["CERTROT_PKCS11_MODULE"]].compactMap { $0 } + [
                "/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
            ]
        guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw BrokerError(message: "SoftHSM2 not found; install softhsm2 (scripts/bootstrap)")
        }
        return found
    }

    public static func utility() throws -> String {
        for directory in ["/usr/bin", "/usr/local/bin"]
        where FileManager.default.isExecutableFile(
            atPath: "\(directory)/softhsm2-util")
        {
            return "\(directory)/softhsm2-util"
        }
        throw BrokerError(message: "softhsm2-util not found; install softhsm2 (scripts/bootstrap)")
    }

    public init(label: String = "certrot") throws {
        let fm = FileManager.default
        directory = fm.temporaryDirectory.appendingPathComponent("certrot-hsm-\(UUID().uuidString)")
        self.label = label
        try fm.createDirectory(
            atPath: directory.appendingPathComponent("tokens").path, withIntermediateDirectories: true)
        try """
        directories.tokendir = \(tokenDirectory)
        objectstore.backend = file
        log.level = ERROR
        slots.removable = false

        """.write(toFile: configPath, atomically: true, encoding: .utf8)
        try (pin + "\n").write(toFile: pinFile, atomically: true, encoding: .utf8)
        chmod(pinFile, 0o600)
        let log = directory.appendingPathComponent("softhsm2-util.log").path
        let tool = try ChildProcess(
            executable: try Self.utility(),
            arguments: ["--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", soPin],
            outputPath: log, environment: environment)
        guard tool.waitForExit(timeout: 60) == 0 else {
            throw BrokerError(
                message:
                    "softhsm2-util --init-token failed: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }

    /// The RFC 7512 URI of the key labelled `object` in this token.
    public func uri(object: String) throws -> String {
        "pkcs11:token=\(label);object=\(object)?module-path=\(try Self.module())"
    }

    /// Hides the token from the module (as if the device were pulled), and brings it back.
    public func hide() throws {
        try FileManager.default.moveItem(atPath: tokenDirectory, toPath: tokenDirectory + ".hidden")
    }

    public func restore() throws {
        try FileManager.default.moveItem(atPath: tokenDirectory + ".hidden", toPath: tokenDirectory)
    }

    public func remove() { try? FileManager.default.removeItem(at: directory) }

    // MARK: One token per test process

    nonisolated(unsafe) private static var sharedToken: SoftHSM?
    private static let sharedLock = NSLock()

    /// The test process's token; sets `SOFTHSM2_CONF` so that this process (and the daemons it starts) use it.
    public static func shared() throws -> SoftHSM {
        sharedLock.lock()
        defer { sharedLock.unlock() }
        if let token = sharedToken { return token }
        let token = try SoftHSM()
        setenv("SOFTHSM2_CONF", token.configPath, 1)
        sharedToken = token
        atexit { SoftHSM.sharedToken?.remove() }
        return token
    }
}
