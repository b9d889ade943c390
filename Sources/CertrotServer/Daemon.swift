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
    /// Seconds between ticks (timeouts, due retries, campaign admissions).
    public var tickInterval: Double = 0.25
    /// Auto-renewal per configured target.
    public var renewal: [String: Renewal] = [:]
    /// Campaigns declared in the config file.
    public var declaredCampaigns: [CertrotConfig.DeclaredCampaign] = []
    /// Seconds after the first connection before declared campaigns are created (retained inventories arrive
    /// first, so that the selection sees the fleet).
    public var declaredCampaignDelay: Double = 5

    public struct Renewal: Sendable {
        /// Seconds before expiry at which a device is due for renewal.
        public var before: Int64
        public var successor: CertificateChain?
    }
    /// The next bundle-signing key, being installed on devices with `trust_key`.
    public var nextSigner: SigningKey?
    public var keyRotationThreshold: Double = 0.95
    /// Operators allowed to call mutating JSON-RPC methods (signed requests).
    public var operators: [VerificationKey] = []
    /// Each operator key's name in the config (kid → name), for the audit log.
    public var operatorNames: [String: String] = [:]
    /// Where `/metrics`, `/healthz` and `/readyz` listen; nil: no HTTP listener.
    public var http: (host: String, port: Int)?
    /// `http.idleTimeout` (seconds) and `http.maxConnections`.
    package var httpLimits = HTTPLimits()
    /// `http.tokens`: who may call the HTTP API (docs/operations.md, "HTTP API").
    package var httpTokens: [APIToken] = []
    /// Several replicas on one shared store; nil: a single daemon.
    public var cluster: ClusterSettings?
    public var limits = Limits()
    /// Client-certificate issuers, policies and device identities (`issuers`, `clientCerts`, `identities`).
    package var clientCerts = ClientCertSettings()

    /// What hostile devices and requesters can cost (docs/security.md).
    public struct Limits: Sendable {
        public var replyPrefix = RPC.defaultReplyPrefix
        public var signedReads = false
        public var requestRate = 50.0
        public var requestBurst = 100.0
        public var totalRequestRate = 500.0
        /// Status reads slower than this are logged with where their time went (`rpc.slowReadMilliseconds`).
        public var slowRead: Duration = .milliseconds(50)
        /// A glob device IDs must match; nil: any valid ID.
        public var idPattern: String?
        public var maxQueuedBytes = 64 << 20
        public var retention = RetentionPolicy()
    }

    public struct ClusterSettings: Sendable {
        public var replica: String
        public var group: String
        public var deadAfter: Int64

        public init(replica: String, group: String, deadAfter: Int64) {
            self.replica = replica
            self.group = group
            self.deadAfter = deadAfter
        }
    }

    public struct KnownChain: Sendable {
        public var name: String
        public var notAfter: Int64
        /// The chain itself, when certrot has it (catalogue, targets): `overlap` composes with it.
        public var chain: CertificateChain?

        public init(name: String, notAfter: Int64, chain: CertificateChain?) {
            self.name = name
            self.notAfter = notAfter
            self.chain = chain
        }
    }

    /// Resolves `config`, reading the signing key and every chain it names. Throws ``CertrotError`` listing every
    /// problem found, each with its key path.
    public static func resolve(_ config: CertrotConfig) throws -> DaemonSettings {
        var problems: [String] = []
        let settings = resolve(config, problems: &problems)
        guard let settings, problems.isEmpty else {
            throw CertrotError(.invalidConfig, problems.joined(separator: "\n"))
        }
        return settings
    }

    /// Every problem in `config` (`certrot config check`); empty when the daemon would start.
    public static func problems(_ config: CertrotConfig) -> [String] {
        var problems: [String] = []
        _ = resolve(config, problems: &problems)
        return problems
    }

    private static func resolve(_ config: CertrotConfig, problems: inout [String]) -> DaemonSettings? {
        func attempt<T>(_ path: String, _ body: () throws -> T) -> T? {
            do {
                return try body()
            } catch let error as CertrotError {
                problems.append("\(path): \(error.message)")
            } catch {
                problems.append("\(path): \(error)")
            }
            return nil
        }
        func fail(_ message: String) throws -> Never { throw CertrotError(.invalidConfig, message) }

        let broker: MQTTOptions? = attempt("broker") {
            guard let url = MQTTOptions.parseURL(config.broker.url) else {
                try fail("url '\(config.broker.url)' is not mqtt://host[:port] or mqtts://host[:port]")
            }
            var broker = MQTTOptions(
                host: url.host, port: url.port, clientID: config.broker.clientId ?? "certrot", cleanSession: false,
                protocolVersion: .v5)
            broker.username = config.broker.username
            broker.password = config.broker.password
            switch (url.tls, config.broker.tls) {
            case (true, nil): try fail("url is mqtts:// but tls.ca is not set")
            case (false, .some): try fail("tls is set but url is not mqtts://")
            case (true, .some(let tls)):
                let options = MQTTTLSOptions(caFile: tls.ca, certFile: tls.cert, keyFile: tls.key)
                try options.validate()
                broker.tls = options
            case (false, nil): break
            }
            return broker
        }
        _ = attempt("store") {
            do { try validateStoreURL(config.store) } catch { try fail("\(error)") }
        }
        let cluster: DaemonSettings.ClusterSettings? =
            attempt("cluster") {
                guard let cluster = config.cluster else { return nil }
                guard PostgresStore.isURL(config.store) else {
                    try fail("replicas share a PostgreSQL store: store must be postgres://…, not '\(config.store)'")
                }
                let replica = cluster.replica ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
                let group = cluster.group ?? "certrot"
                for (name, value) in [("replica", replica), ("group", group)]
                where value.isEmpty || value.contains(where: { "/+#".contains($0) }) {
                    try fail("\(name) '\(value)' must be non-empty and contain no '/', '+' or '#'")
                }
                let deadAfter = cluster.deadAfter?.seconds ?? 10
                guard deadAfter >= 3 else { try fail("deadAfter must be at least 3s (replicas report every second)") }
                return DaemonSettings.ClusterSettings(replica: replica, group: group, deadAfter: deadAfter)
            } ?? nil
        let signer = attempt("signingKey") { try KeyFile.load(config.signingKey, pkcs11: config.pkcs11) }
        let profile = attempt("defaultProfile") { try config.profile() } ?? .nrf91
        var targets: [ResolvedTarget] = []
        var renewal: [String: Renewal] = [:]
        for (index, target) in config.targets.enumerated() {
            guard let resolved = attempt("targets[\(index)]", { try ResolvedTarget.resolve(target, profile: profile) })
            else { continue }
            if targets.contains(where: { $0.name == resolved.name }) {
                problems.append("targets[\(index)]: name '\(resolved.name)' is used twice")
            } else if targets.contains(where: { $0.tag == resolved.tag && $0.type == resolved.type }) {
                problems.append(
                    "targets[\(index)]: another target already writes tag \(resolved.tag) type \(resolved.type)")
            } else {
                targets.append(resolved)
                var successor: CertificateChain?
                if let path = target.successor {
                    successor = attempt("targets[\(index)].successor") { () throws -> CertificateChain in
                        let text = try String(contentsOfFile: path, encoding: .utf8)
                        do {
                            return try Preflight.checkChain(
                                text, type: target.type, profile: profile, now: Date(), minRemainingValidity: 0,
                                what: "successor \(path)")
                        } catch let refusal as Refusal { throw CertrotError(.invalidConfig, refusal.message) }
                    }
                }
                let lifetime = resolved.chain.notAfter - resolved.chain.notBefore
                renewal[resolved.name] = Renewal(
                    before: target.renewBefore?.seconds ?? max(0, lifetime / 3), successor: successor)
            }
        }
        var declared: [CertrotConfig.DeclaredCampaign] = []
        for (index, campaign) in (config.campaigns ?? []).enumerated() {
            let ok: Bool? = attempt("campaigns[\(index)]") {
                let params = try campaign.params()
                do {
                    // Shape only: a deadline that has passed since must not stop the daemon from starting.
                    _ = try CampaignRequest.parse(params, now: 0)
                } catch let refusal as Refusal { throw CertrotError(.invalidConfig, refusal.message) }
                return true
            }
            if ok == true { declared.append(campaign) }
        }
        var catalogue: [String: KnownChain] = [:]
        for (index, known) in (config.catalogue ?? []).enumerated() {
            if let chain = attempt(
                "catalogue[\(index)]", { try ResolvedTarget.loadChain(path: known.chain, what: known.name) })
            {
                catalogue[chain.sha256] = KnownChain(name: known.name, notAfter: chain.notAfter, chain: chain)
            }
        }
        let clientCerts = ClientCertSettings.resolve(
            config, targets: targets, catalogue: Array(catalogue.values), problems: &problems)
        let lifetime = config.bundleLifetime?.seconds ?? BundleClaims.defaultLifetime
        if lifetime <= 0 { problems.append("bundleLifetime: must be positive") }
        var operators: [VerificationKey] = []
        var operatorNames: [String: String] = [:]
        for (index, entry) in (config.operators ?? []).enumerated() {
            let key = attempt("operators[\(index)]") { () throws -> VerificationKey in
                guard let text = try? String(contentsOfFile: entry.publicKey, encoding: .utf8) else {
                    try fail("cannot read \(entry.publicKey)")
                }
                return try VerificationKey(pem: text)
            }
            if let key {
                operators.append(key)
                operatorNames[key.kid] = entry.name
            }
        }
        var next: SigningKey?
        var threshold = 0.95
        if let rotation = config.keyRotation {
            next = attempt("keyRotation.nextKey") {
                let key = try KeyFile.load(rotation.nextKey, pkcs11: config.pkcs11)
                if key.kid == signer?.kid { try fail("is the current signing key") }
                return key
            }
            threshold = rotation.threshold ?? 0.95
            if !(threshold > 0 && threshold <= 1) { problems.append("keyRotation.threshold: must be in (0, 1]") }
        }
        guard let broker, let signer, problems.isEmpty else { return nil }
        var settings = DaemonSettings(
            broker: broker, storeURL: config.store, signer: signer, targets: targets, catalogue: catalogue,
            policy: config.rotationPolicy, profile: profile, bundleLifetime: lifetime,
            maxInflight: config.maxInflight ?? 1000)
        settings.operators = operators
        settings.operatorNames = operatorNames
        if let cluster {
            // Each replica has its own MQTT client id, and a clean session: a dead replica's session must not keep
            // its share of the shared subscriptions (the broker would go on queuing messages for it).
            settings.broker.clientID += "-" + cluster.replica
            settings.broker.cleanSession = true
            settings.cluster = cluster
        }
        if let http = config.http {
            if (0...65535).contains(http.port) {
                settings.http = (http.host ?? "127.0.0.1", http.port)
            } else {
                problems.append("http.port: \(http.port) is not a port")
                return nil
            }
            if let idle = http.idleTimeout {
                if idle.seconds >= 1 {
                    settings.httpLimits.idleTimeout = idle.seconds
                } else {
                    problems.append("http.idleTimeout: at least 1s")
                }
            }
            if let limit = http.maxConnections {
                if limit >= 1 {
                    settings.httpLimits.maxConnections = limit
                } else {
                    problems.append("http.maxConnections: at least 1")
                }
            }
            var names: Set<String> = []
            for (index, token) in (http.tokens ?? []).enumerated() {
                let digest = Hex.decode(token.sha256)
                if token.name.isEmpty || token.name.utf8.count > 64 {
                    problems.append("http.tokens[\(index)].name: 1…64 bytes")
                } else if !names.insert(token.name).inserted {
                    problems.append("http.tokens[\(index)].name: '\(token.name)' is used twice")
                }
                if digest?.count != 32 || token.sha256.utf8.count != 64 {
                    problems.append(
                        "http.tokens[\(index)].sha256: 64 hex digits, the SHA-256 of the token (`certrot config token`)"
                    )
                } else if let digest {
                    settings.httpTokens.append(APIToken(name: token.name, sha256: digest))
                }
            }
        }
        if let limits = attempt("limits", { try resolveLimits(config) }) {
            settings.limits = limits
        } else {
            return nil
        }
        settings.renewal = renewal
        settings.clientCerts = clientCerts
        settings.declaredCampaigns = declared
        settings.nextSigner = next
        settings.keyRotationThreshold = threshold
        return settings
    }
}

private func resolveLimits(_ config: CertrotConfig) throws -> DaemonSettings.Limits {
    var limits = DaemonSettings.Limits()
    func fail(_ message: String) -> CertrotError { CertrotError(.invalidConfig, message) }
    if let rpc = config.rpc {
        if let prefix = rpc.replyPrefix {
            guard prefix.hasSuffix("/"), prefix.utf8.count >= 2, !prefix.hasPrefix("$"),
                !prefix.contains(where: { "+#\u{0}".contains($0) }), prefix != "certrot/",
                !prefix.hasPrefix("certrot/campaigns/")
            else {
                throw fail(
                    "rpc.replyPrefix '\(prefix)' must end with '/', hold no wildcard, and not be the daemon's own")
            }
            limits.replyPrefix = prefix
        }
        limits.signedReads = rpc.signedReads ?? false
        if limits.signedReads, (config.operators ?? []).isEmpty {
            throw fail("rpc.signedReads needs operators: nobody could sign a request")
        }
        for (key, value) in [("rpc.rate", rpc.rate), ("rpc.burst", rpc.burst), ("rpc.totalRate", rpc.totalRate)] {
            if let value, !(value > 0 && value <= 1_000_000) { throw fail("\(key) must be in (0, 1000000]") }
        }
        limits.requestRate = rpc.rate ?? limits.requestRate
        limits.requestBurst = rpc.burst ?? max(limits.requestBurst, limits.requestRate)
        limits.totalRequestRate = rpc.totalRate ?? max(limits.totalRequestRate, limits.requestRate)
        if let slow = rpc.slowReadMilliseconds {
            guard (0...3_600_000).contains(slow) else { throw fail("rpc.slowReadMilliseconds must be in 0…3600000") }
            limits.slowRead = .milliseconds(slow)
        }
    }
    if let admission = config.admission {
        if let pattern = admission.idPattern {
            guard !pattern.isEmpty, pattern.utf8.count <= 256 else {
                throw fail("admission.idPattern must be 1…256 bytes")
            }
            limits.idPattern = pattern
        }
        if let bytes = admission.maxQueuedBytes {
            guard bytes >= 1 << 20 else { throw fail("admission.maxQueuedBytes must be at least 1048576 (1 MiB)") }
            limits.maxQueuedBytes = bytes
        }
    }
    if let retention = config.retention {
        if let history = retention.history {
            guard history >= 1 else { throw fail("retention.history must be at least 1") }
            limits.retention.history = history
        }
        if let bundles = retention.bundles {
            guard bundles >= 1 else { throw fail("retention.bundles must be at least 1") }
            limits.retention.bundles = bundles
        }
        if let age = retention.maxAge { limits.retention.maxAge = age.seconds }
        if let age = retention.issuedCerts {
            guard age.seconds >= 0 else { throw fail("retention.issuedCerts must not be negative") }
            limits.retention.issuedCerts = age.seconds
        }
        if let age = retention.audit {
            // A shorter one would prune records the next verification of a recent export still links to.
            guard age.seconds >= 86400 else { throw fail("retention.audit must be at least 1d") }
            limits.retention.audit = age.seconds
        }
    }
    return limits
}

/// The daemon as a swift-service-lifecycle `Service`: connects, subscribes, and runs the engine until cancelled
/// or gracefully shut down.
public final class CertrotDaemon: Service, CustomStringConvertible {
    public let settings: DaemonSettings
    public let observability = Observability()
    public let drops: DropCounters
    private let logger: Logger
    private let clock: @Sendable () -> Int64

    public var description: String { "CertrotDaemon(\(settings.broker.host):\(settings.broker.port))" }

    public init(
        settings: DaemonSettings, logger: Logger,
        clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }
    ) {
        self.settings = settings
        self.logger = logger
        self.clock = clock
        self.drops = DropCounters(observability: observability)
        observability.watch(
            signers: ([settings.signer] + [settings.nextSigner].compactMap { $0 }) as [any SignerHealth]
                + settings.clientCerts.policies.map(\.issuer.issuer.key))
        observability.watch(budget: settings.clientCerts.policies.isEmpty ? nil : settings.clientCerts.budget)
        var issuers: [String: (name: String, notAfter: Date, crl: String?)] = [:]
        for policy in settings.clientCerts.policies {
            let issuer = policy.issuer
            issuers[issuer.name] = (issuer.name, issuer.issuer.certificate.notValidAfter, issuer.crlPath)
        }
        observability.watch(issuers: issuers.values.sorted { $0.name < $1.name })
    }

    /// What `/metrics` answers, from `store` (tests on the engine harness read it without a listener).
    package func metricsText(store: any RotationStore) -> String {
        observability.render(
            store: store, targets: settings.targets,
            renewal: settings.renewal.mapValues { RenewalInfo(before: $0.before, hasSuccessor: $0.successor != nil) },
            logger: logger)
    }

    /// Takes the store's leadership lock, trying for a few seconds: a daemon restarted at once (by systemd, or an
    /// operator) may start while the database still holds the lock of the session its predecessor just closed.
    private func holdLeadership(of store: any RotationStore) async throws -> Bool {
        for attempt in 0..<20 {
            if try store.holdLeadership() { return true }
            if attempt == 0 { logger.notice("the store's leadership lock is held; waiting up to 5 s for it") }
            try await Task.sleep(for: .milliseconds(250))
        }
        return false
    }

    public func run() async throws {
        var startup = StartupTimes()
        startup.mark("config read")
        // The store's integrity check runs beside the start (below), not before it: SQLite's quick_check reads
        // every page, 0.9 s at 100,000 devices after two campaigns and ten times that at a million (#35 §3).
        let store = try openStore(
            url: settings.storeURL, sessionTimeout: settings.cluster?.deadAfter,
            applicationName: settings.cluster.map { "certrot-\($0.replica)" } ?? "certrot", checkIntegrity: false)
        defer { store.close() }
        startup.mark("store opened")
        // A daemon that is not one of a cluster's replicas must be the only one on a shared store (two would both
        // send every bundle): it holds the store's leadership lock for as long as it runs.
        if settings.cluster == nil, store.isShared, try !(await holdLeadership(of: store)) {
            throw CertrotError(
                .invalidConfig,
                "store \(PostgresStore.redacted(settings.storeURL)) is in use by another certrot (it holds the store's "
                    + "leadership lock): run one daemon per store, or configure cluster: on every replica")
        }
        let drops = self.drops
        let inbox = Inbox<EngineInput>(
            maxBytes: settings.limits.maxQueuedBytes, key: EngineInput.coalescingKey, size: EngineInput.queuedSize,
            superseded: { drops.count("inventory_superseded") }, merge: EngineInput.merge)
        let integrity = IntegrityCheck(store: store, observability: observability, logger: logger) { inbox.finish() }
        defer { integrity.cancel() }
        let engine = makeEngine(store: store)
        do {
            try engine.startCampaigns()
        } catch {
            throw store.explaining(error)  // a start that fails on a damaged store says so
        }
        startup.mark("campaigns loaded")
        engine.startup = startup
        let reads = ReadOnlyRPC(
            store: store, clock: clock, snapshotInterval: store.isShared ? .seconds(1) : nil, logger: logger,
            slowRead: settings.limits.slowRead)
        engine.reads = reads
        engine.publishContext()
        var httpTask: Task<Void, any Error>?
        var httpGroup: ServiceGroup?
        if let http = settings.http {
            let api = LocalRPC(reads: reads, calls: engine.delivery.localCalls) { inbox.pushUrgent($0) }
            let app = try makeHTTPApplication(
                host: http.host, port: http.port, observability: observability, store: store,
                targets: settings.targets,
                renewal: settings.renewal.mapValues {
                    RenewalInfo(before: $0.before, hasSuccessor: $0.successor != nil)
                },
                api: HTTPAPI(rpc: api, logger: logger), tokens: settings.httpTokens, limits: settings.httpLimits,
                logger: logger)
            // Run as a service group of its own and stopped with a graceful shutdown, not a cancellation (which
            // HummingbirdCore logs as an error while it waits on its child channels).
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: [.init(service: app)], gracefulShutdownSignals: [], logger: logger))
            httpGroup = group
            httpTask = Task { try await group.run() }
            logger.info(
                "HTTP API, metrics and health on http://\(http.host):\(http.port)",
                metadata: ["tokens": "\(settings.httpTokens.map(\.name))"])
        }
        defer {
            if let httpGroup { Task { await httpGroup.triggerGracefulShutdown() } }
        }
        let client = try MQTTClient(options: settings.broker, logger: logger) { event in inbox.push(.from(event)) }
        engine.client = client
        defer { client.stop() }
        let rpc = RPCConnection(answering: settings.cluster == nil, logger: logger)
        engine.rpc = rpc
        defer { rpc.stop() }
        let snapshots = Task { await reads.refreshSnapshots(while: rpc) }
        defer { snapshots.cancel() }
        logger.info(
            "certrot starting",
            metadata: [
                "broker": "\(settings.broker.host):\(settings.broker.port)", "kid": "\(settings.signer.kid)",
                "targets": "\(settings.targets.map(\.name))", "replica": "\(settings.cluster?.replica ?? "-")",
            ])
        try client.start()
        var rpcOptions = settings.broker
        rpcOptions.clientID += "-rpc"
        let limiter = RequestLimiter(
            rate: settings.limits.requestRate, burst: settings.limits.requestBurst,
            totalRate: settings.limits.totalRequestRate)
        try rpc.start(options: rpcOptions) { message in
            guard limiter.admit(message) else {
                drops.count("rpc_rate_limited")
                return
            }
            if ReadOnlyRPC.accepts(message) {
                reads.submit(message, replies: rpc)
            } else {
                inbox.pushUrgent(.mqtt(.message(message)))  // an operator's request goes before queued device messages
            }
        }
        let interval = settings.tickInterval
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int(interval * 1000)))
                inbox.pushUrgent(.tick)
            }
        }
        defer { ticker.cancel() }
        await withTaskCancellationOrGracefulShutdownHandler {
            // One transaction per batch. SQLite commits a big batch cheaply (group commit); on PostgreSQL every
            // statement is a round trip, and replicas wait for the devices a transaction holds: keep batches short.
            let batchLimit = store.isShared ? 100 : 2000
            while let batch = await inbox.next(limit: batchLimit) {
                await engine.handle(batch)
            }
        } onCancelOrGracefulShutdown: {
            inbox.finish()
        }
        if let damaged = integrity.failure { throw damaged }
        logger.info("certrot stopped")
    }

    /// The engine on `store` as the daemon wires it from its settings, before any connection: `run()` uses it, and
    /// so does the engine fuzzer (which feeds it decoded messages without a broker).
    package func makeEngine(store: any RotationStore) -> Engine {
        let engine = Engine(
            store: store, signer: settings.signer, targets: settings.targets, policy: settings.policy,
            profile: settings.profile, bundleLifetime: settings.bundleLifetime, maxInflight: settings.maxInflight,
            clock: clock, drops: drops, logger: logger, clientCerts: settings.clientCerts)
        engine.nextSigner = settings.nextSigner
        engine.keyRotationThreshold = settings.keyRotationThreshold
        engine.operators = settings.operators
        engine.operatorNames = settings.operatorNames
        engine.observability = observability
        engine.catalogue.renewal = settings.renewal.mapValues { ($0.before, $0.successor) }
        engine.declaredCampaignDelay = settings.declaredCampaignDelay
        engine.cluster = settings.cluster
        engine.limits = settings.limits
        engine.retention = settings.limits.retention
        for (digest, chain) in settings.catalogue {
            engine.catalogue.known[digest] = chain
            engine.catalogue.byName[chain.name] = chain.chain
        }
        for target in settings.targets {
            engine.catalogue.known[target.sha256] = DaemonSettings.KnownChain(
                name: target.name, notAfter: target.chain.notAfter, chain: target.chain)
            if let successor = settings.renewal[target.name]?.successor {
                engine.catalogue.known[successor.sha256] = DaemonSettings.KnownChain(
                    name: "\(target.name) successor", notAfter: successor.notAfter, chain: successor)
            }
        }
        engine.declaredCampaigns = settings.declaredCampaigns.compactMap { declared in
            guard let params = try? declared.params(),
                let data = try? JSONSerialization.data(withJSONObject: params),
                let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
            else { return nil }
            return object
        }
        return engine
    }
}

/// `certrot serve`: the daemon plus signal handling, as one ServiceGroup.
public func buildServices(config: CertrotConfig, logger: Logger) throws -> (group: ServiceGroup, daemon: CertrotDaemon)
{
    let daemon = CertrotDaemon(settings: try DaemonSettings.resolve(config), logger: logger)
    let group = ServiceGroup(
        configuration: ServiceGroupConfiguration(
            services: [.init(service: daemon)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    return (group, daemon)
}
