import CertrotCore
import CertrotMQTT
import CertrotStore
import Foundation
import Logging
import ServiceLifecycle

/// Everything the daemon needs, resolved from config: files read, keys loaded, chains checked.
public struct DaemonSettings: Sendable {
    public var broker: MQTTOptions
    public var storeURL: String
    public var signer: SigningKey
    public var targets: [ResolvedTarget]
    public var catalogue: [String: KnownChain]
    public var policy: RotationPolicy
    public var profile: DeviceProfile
    public var bundleLifetime: Int64
    public var maxInflight: Int
    /// Seconds between ticks (timeouts, due retries).
    public var tickInterval: Double = 1
    /// The next bundle-signing key, being installed on devices with `trust_key`.
    public var nextSigner: SigningKey?
    public var keyRotationThreshold: Double = 0.95
    /// Operators allowed to call mutating JSON-RPC methods (signed requests).
    public var operators: [VerificationKey] = []

    public struct KnownChain: Sendable {
        public var name: String
        public var notAfter: Int64
    }

    /// Resolves `config`, reading the signing key and every chain it names. Throws ``CertrotError`` with the reason.
    public static func resolve(_ config: CertrotConfig) throws -> DaemonSettings {
        guard let url = MQTTOptions.parseURL(config.broker.url) else {
            throw CertrotError(.invalidConfig, "broker.url '\(config.broker.url)' is not mqtt://host[:port] or mqtts://host[:port]")
        }
        var broker = MQTTOptions(
            host: url.host, port: url.port, clientID: config.broker.clientId ?? "certrot", cleanSession: false,
            protocolVersion: .v5)
        broker.username = config.broker.username
        broker.password = config.broker.password
        switch (url.tls, config.broker.tls) {
        case (true, nil):
            throw CertrotError(.invalidConfig, "broker.url is mqtts:// but broker.tls.ca is not set")
        case (false, .some):
            throw CertrotError(.invalidConfig, "broker.tls is set but broker.url is not mqtts://")
        case (true, .some(let tls)):
            let options = MQTTTLSOptions(caFile: tls.ca, certFile: tls.cert, keyFile: tls.key)
            do {
                try options.validate()
            } catch {
                throw CertrotError(.invalidConfig, "\(error)")
            }
            broker.tls = options
        case (false, nil):
            break
        }
        guard SQLiteStore.path(fromURL: config.store) != nil else {
            throw CertrotError(.invalidConfig, "store '\(config.store)' is not sqlite:PATH")
        }
        let signer = try KeyFile.loadSigningKey(path: config.signingKey)
        let profile = try config.profile()
        guard !config.targets.isEmpty else { throw CertrotError(.invalidConfig, "targets: at least one is required") }
        var targets: [ResolvedTarget] = []
        for target in config.targets {
            let resolved = try ResolvedTarget.resolve(target, profile: profile)
            if targets.contains(where: { $0.name == resolved.name }) {
                throw CertrotError(.invalidConfig, "target name '\(resolved.name)' is used twice")
            }
            if targets.contains(where: { $0.tag == resolved.tag && $0.type == resolved.type }) {
                throw CertrotError(.invalidConfig, "two targets write tag \(resolved.tag) type \(resolved.type)")
            }
            targets.append(resolved)
        }
        var catalogue: [String: KnownChain] = [:]
        for known in config.catalogue ?? [] {
            let chain = try ResolvedTarget.loadChain(path: known.chain, what: "catalogue '\(known.name)'")
            catalogue[chain.sha256] = KnownChain(name: known.name, notAfter: chain.notAfter)
        }
        let lifetime = config.bundleLifetime?.seconds ?? BundleClaims.defaultLifetime
        guard lifetime > 0 else { throw CertrotError(.invalidConfig, "bundleLifetime must be positive") }
        var settings = DaemonSettings(
            broker: broker, storeURL: config.store, signer: signer, targets: targets, catalogue: catalogue,
            policy: config.rotationPolicy, profile: profile, bundleLifetime: lifetime,
            maxInflight: config.maxInflight ?? 1000)
        for entry in config.operators ?? [] {
            guard let text = try? String(contentsOfFile: entry.publicKey, encoding: .utf8) else {
                throw CertrotError(.invalidConfig, "operators '\(entry.name)': cannot read \(entry.publicKey)")
            }
            do {
                settings.operators.append(try VerificationKey(pem: text))
            } catch {
                throw CertrotError(.invalidConfig, "operators '\(entry.name)': \(error.message)")
            }
        }
        if let rotation = config.keyRotation {
            let next = try KeyFile.loadSigningKey(path: rotation.nextKey)
            guard next.kid != signer.kid else {
                throw CertrotError(.invalidConfig, "keyRotation.nextKey is the current signing key")
            }
            let threshold = rotation.threshold ?? 0.95
            guard threshold > 0, threshold <= 1 else {
                throw CertrotError(.invalidConfig, "keyRotation.threshold must be in (0, 1]")
            }
            settings.nextSigner = next
            settings.keyRotationThreshold = threshold
        }
        return settings
    }
}

/// The daemon as a swift-service-lifecycle `Service`: connects, subscribes, and runs the engine until cancelled
/// or gracefully shut down.
public final class CertrotDaemon: Service, CustomStringConvertible {
    public let settings: DaemonSettings
    public let drops = DropCounters()
    private let logger: Logger
    private let clock: @Sendable () -> Int64

    public var description: String { "CertrotDaemon(\(settings.broker.host):\(settings.broker.port))" }

    public init(settings: DaemonSettings, logger: Logger, clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }) {
        self.settings = settings
        self.logger = logger
        self.clock = clock
    }

    public func run() async throws {
        let store = try SQLiteStore(path: SQLiteStore.path(fromURL: settings.storeURL)!)
        let inbox = Inbox<EngineInput>()
        let engine = Engine(
            store: store, signer: settings.signer, targets: settings.targets,
            catalogue: settings.catalogue.mapValues { ($0.name, $0.notAfter) }, policy: settings.policy,
            profile: settings.profile, bundleLifetime: settings.bundleLifetime, maxInflight: settings.maxInflight,
            clock: clock, drops: drops, logger: logger)
        engine.nextSigner = settings.nextSigner
        engine.keyRotationThreshold = settings.keyRotationThreshold
        engine.operators = settings.operators
        let client = try MQTTClient(options: settings.broker, logger: logger) { event in inbox.push(.mqtt(event)) }
        engine.client = client
        defer { client.stop() }
        logger.info(
            "certrot starting",
            metadata: [
                "broker": "\(settings.broker.host):\(settings.broker.port)", "kid": "\(settings.signer.kid)",
                "targets": "\(settings.targets.map(\.name))",
            ])
        try client.start()
        let interval = settings.tickInterval
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int(interval * 1000)))
                inbox.push(.tick)
            }
        }
        defer { ticker.cancel() }
        await withTaskCancellationOrGracefulShutdownHandler {
            while let batch = await inbox.next(limit: 2000) {
                engine.handle(batch)
            }
        } onCancelOrGracefulShutdown: {
            inbox.finish()
        }
        logger.info("certrot stopped")
    }
}

/// `certrot serve`: the daemon plus signal handling, as one ServiceGroup.
public func buildServices(config: CertrotConfig, logger: Logger) throws -> (group: ServiceGroup, daemon: CertrotDaemon) {
    let daemon = CertrotDaemon(settings: try DaemonSettings.resolve(config), logger: logger)
    let group = ServiceGroup(
        configuration: ServiceGroupConfiguration(
            services: [.init(service: daemon)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    return (group, daemon)
}
