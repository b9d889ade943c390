import CertrotCore
import Foundation
import Hummingbird
import OpenAPIHummingbird
import Logging
import Metrics
import Prometheus
import Synchronization

/// The daemon's metrics (swift-metrics over a per-daemon Prometheus registry) and health.
public final class Observability: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    let bundlesSigned: Metrics.Counter
    let partsPublished: Metrics.Counter
    let reconnects: Metrics.Counter
    let storeWrites: Metrics.Timer
    private let state = Mutex(State())

    struct State {
        var connected = false
        var connects = 0
        var storeWritable = true
        var lastStoreError: String?
        /// When a store write last failed (monotonic seconds).
        var storeFailedAt: Double?
        /// The store's integrity check: running (beside the start), or what it found.
        var storeCheckRunning = false
        var storeCheckFailure: String?
        /// When recent inputs were dropped for a store error (monotonic seconds), newest last.
        var storeErrors: [Double] = []
        /// The keys that sign (bundles, checkpoints, certificates): a key in a token that cannot sign makes the
        /// daemon not ready.
        var signers: [any SignerHealth] = []
        /// The issuance budgets, shown beside what they count (nil: no client-certificate policy).
        var budget: IssuanceBudget?
        /// The issuing CAs: name, certificate expiry, CRL path (their expiry and their CRLs' nextUpdate, exported).
        var issuers: [(name: String, notAfter: Date, crl: String?)] = []
        /// The CRL files' nextUpdate as last read, by path, with the file's modification time and size.
        var crls: [String: (stamp: CRLStamp, next: Date?)] = [:]
    }

    struct CRLStamp: Equatable {
        var modified: Date?
        var size: Int
    }

    /// Inputs dropped for store errors within `storeErrorWindow` seconds that make the daemon not ready: a damaged
    /// store can fail some writes and not others, and each failed input is lost.
    static let storeErrorBurst = 10
    static let storeErrorWindow = 60.0
    /// Seconds a replica stays not ready after a failed store write, even once writes succeed again: a store that
    /// fails and comes back within a tick (sessions cut off and reopened, a database restarting) is reported for
    /// longer than one probe's interval instead of flapping between two probes.
    package let storeRecoveryHold: Double

    public convenience init() { self.init(storeRecoveryHold: 3) }

    package init(storeRecoveryHold: Double) {
        self.storeRecoveryHold = storeRecoveryHold
        factory = PrometheusMetricsFactory(registry: registry)
        bundlesSigned = Metrics.Counter(label: "certrot_bundles_signed_total", factory: factory)
        partsPublished = Metrics.Counter(label: "certrot_parts_published_total", factory: factory)
        reconnects = Metrics.Counter(label: "certrot_broker_reconnects_total", factory: factory)
        storeWrites = Metrics.Timer(label: "certrot_store_write_duration_seconds", factory: factory)
        // Exported from the start at 0, so that an alert on their increase (deploy/prometheus) has a series.
        _ = Metrics.Counter(label: "certrot_signing_failures_total", factory: factory)
        for budget in ["device", "fleet"] {
            _ = Metrics.Counter(
                label: "certrot_client_cert_issuance_deferred_total", dimensions: [("budget", budget)], factory: factory
            )
        }
    }

    /// 1 while this replica leads its cluster (a single daemon always does).
    func leader(_ leading: Bool) {
        Metrics.Gauge(label: "certrot_cluster_leader", factory: factory).record(leading ? 1 : 0)
    }

    /// A leader's transaction failed its fence: another replica had taken the leadership.
    func fenced() {
        Metrics.Counter(label: "certrot_cluster_fenced_total", factory: factory).increment()
    }

    func ack(_ status: String) {
        Metrics.Counter(label: "certrot_acks_total", dimensions: [("status", status)], factory: factory).increment()
    }

    /// A bundle sent again whole, same `jti` and `seq`: `device_back` (an inventory showed the device back without
    /// it), `reconnect` (this daemon's broker connection came back while it was out).
    func bundleResent(_ reason: String) {
        Metrics.Counter(label: "certrot_bundles_resent_total", dimensions: [("reason", reason)], factory: factory)
            .increment()
    }

    func dropped(_ reason: String) {
        Metrics.Counter(label: "certrot_messages_dropped_total", dimensions: [("reason", reason)], factory: factory)
            .increment()
    }

    /// The keys whose health readiness reports (the bundle-signing keys and the issuers' keys).
    func watch(signers: [any SignerHealth]) {
        state.withLock { $0.signers = signers }
    }

    /// The issuing CAs whose certificate expiry and CRL nextUpdate `/metrics` shows.
    func watch(issuers: [(name: String, notAfter: Date, crl: String?)]) {
        state.withLock { $0.issuers = issuers }
    }

    /// The `nextUpdate` of the CRL file at `path`, parsed again only when the file changed (a CRL of 100,000
    /// entries is megabytes: not to be read on every scrape).
    private func crlNextUpdate(_ path: String) -> Date? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
        let stamp = CRLStamp(
            modified: attributes[.modificationDate] as? Date, size: (attributes[.size] as? NSNumber)?.intValue ?? -1)
        if let cached = state.withLock({ $0.crls[path] }), cached.stamp == stamp { return cached.next }
        let next = (try? String(contentsOfFile: path, encoding: .utf8)).flatMap {
            (try? RevocationList.parse($0))?.nextUpdate
        }
        state.withLock { $0.crls[path] = (stamp, next) }
        return next
    }

    /// The issuance budgets `/metrics` shows beside the certificates issued in the last hour.
    func watch(budget: IssuanceBudget?) {
        state.withLock { $0.budget = budget }
    }

    /// A signature that a key could not make (its token is unavailable).
    func signingFailed(_ error: String) {
        Metrics.Counter(label: "certrot_signing_failures_total", factory: factory).increment()
    }

    /// A record appended to the audit log.
    func auditRecord(_ kind: String) {
        Metrics.Counter(label: "certrot_audit_records_total", dimensions: [("kind", kind)], factory: factory)
            .increment()
    }

    /// A client certificate issued from a device's CSR.
    func certificateIssued(issuer: String) {
        Metrics.Counter(
            label: "certrot_client_certs_issued_total", dimensions: [("issuer", issuer)], factory: factory
        ).increment()
    }

    /// A client-certificate renewal that waits because an issuance budget (`device` or `fleet`) is spent.
    func issuanceDeferred(scope: String) {
        Metrics.Counter(
            label: "certrot_client_cert_issuance_deferred_total", dimensions: [("budget", scope)], factory: factory
        ).increment()
    }

    /// Rows the retention sweep deleted (`history`, `issued_certs`, `audit`).
    func retained(deleted: Int, what: String) {
        guard deleted > 0 else { return }
        Metrics.Counter(label: "certrot_retention_deleted_total", dimensions: [("what", what)], factory: factory)
            .increment(by: deleted)
    }

    /// A device's CSR refused by a check (docs/protocol.md §11); nothing was issued.
    func csrRefused(_ reason: String) {
        Metrics.Counter(label: "certrot_csr_refused_total", dimensions: [("reason", reason)], factory: factory)
            .increment()
    }

    /// Seconds from the broker's PUBACK to the device's `applied` ack, and from `applied` to `verified`.
    func latency(_ phase: String, seconds: Int64) {
        Metrics.Timer(
            label: "certrot_rotation_phase_duration_seconds", dimensions: [("phase", phase)], factory: factory
        )
        .recordSeconds(max(0, seconds))
    }

    func transition(target: String, to state: String) {
        Metrics.Counter(
            label: "certrot_rotation_transitions_total", dimensions: [("target", target), ("state", state)],
            factory: factory
        )
        .increment()
    }

    package func brokerConnected(_ connected: Bool) {
        let reconnect = state.withLock { state -> Bool in
            state.connected = connected
            guard connected else { return false }
            state.connects += 1
            return state.connects > 1
        }
        if reconnect { reconnects.increment() }
    }

    package func storeWrite(ok: Bool, error: String? = nil) {
        state.withLock {
            $0.storeWritable = ok
            if !ok {
                $0.lastStoreError = error
                $0.storeFailedAt = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
            }
        }
    }

    /// The store's integrity check started, passed (`running: false`), or found the store damaged (`failure`).
    package func storeCheck(running: Bool, failure: String? = nil) {
        state.withLock {
            $0.storeCheckRunning = running
            $0.storeCheckFailure = failure
        }
    }

    /// An input was dropped because its store write failed.
    func inputLost(storeError error: String) {
        let now = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
        state.withLock { state in
            state.lastStoreError = error
            state.storeErrors.append(now)
            state.storeErrors.removeAll { now - $0 > Self.storeErrorWindow }
        }
    }

    /// Why the daemon is not ready, or nil when it is: the store's integrity check has found no damage (it does not
    /// wait for the check, which runs beside the daemon at the lowest priority and may take seconds on a busy
    /// machine), broker connected, store writable, and every key in a token able to sign (a key that failed is probed
    /// again here, at most once a second, so readiness returns with the token).
    public var notReadyReason: String? {
        let signers = state.withLock { $0.signers }
        for signer in signers where signer.problem != nil {
            if let problem = signer.probe() { return "a signing key is unavailable: \(problem)" }
        }
        return state.withLock { state in
            if let damage = state.storeCheckFailure { return "the store is damaged: \(damage)" }
            if !state.connected { return "not connected to the broker" }
            if !state.storeWritable { return "the store is not writable: \(state.lastStoreError ?? "unknown error")" }
            let now = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
            if let failed = state.storeFailedAt, now - failed < storeRecoveryHold {
                return "the store failed \(String(format: "%.1f", now - failed)) s ago: "
                    + "\(state.lastStoreError ?? "unknown error")"
            }
            let recent = state.storeErrors.filter { now - $0 <= Self.storeErrorWindow }.count
            if recent >= Self.storeErrorBurst {
                return "\(recent) inputs lost to store errors in the last \(Int(Self.storeErrorWindow)) s: "
                    + "\(state.lastStoreError ?? "unknown error")"
            }
            return nil
        }
    }

    private func gauge(_ name: String, help: String, labels: [(String, String)] = []) -> Prometheus.Gauge {
        registry.makeGauge(
            descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    /// Days left on the credentials devices hold in each target tag, as cumulative bucket gauges
    /// (`le` in days: 0 = expired), and `certrot_expiring_without_successor`: devices due for renewal
    /// (`renewBefore`) while nothing newer is configured (no successor, and the target chain itself is due).
    private static let dayBuckets: [Int64] = [0, 7, 30, 90, 365]

    private func renderExpiry(
        targets: [ResolvedTarget], histogram: [String: [Int]], expiringWithoutSuccessor: [String: Int]
    ) {
        let days = Self.dayBuckets
        for target in targets {
            let buckets = histogram[target.name] ?? Array(repeating: 0, count: days.count + 1)
            for (index, limit) in days.enumerated() {
                gauge(
                    "certrot_credential_days_left_bucket",
                    help: "Devices whose credential in the target tag expires within le days",
                    labels: [("target", target.name), ("le", String(limit))]
                ).set(to: Double(buckets[index]))
            }
            gauge(
                "certrot_credential_days_left_bucket",
                help: "Devices whose credential in the target tag expires within le days",
                labels: [("target", target.name), ("le", "+Inf")]
            ).set(to: Double(buckets[days.count]))
            gauge(
                "certrot_expiring_without_successor",
                help:
                    "Devices whose credential in the target tag is due for renewal (renewBefore) with no successor configured",
                labels: [("target", target.name)]
            ).set(to: Double(expiringWithoutSuccessor[target.name] ?? 0))
        }
    }

    /// Sets the gauges computed from the store (devices, rotations by target and state, known expiries) and
    /// renders the Prometheus text format.
    func render(
        store: any RotationStore, targets: [ResolvedTarget], renewal: [String: RenewalInfo], logger: Logger
    ) -> String {
        do {
            let now = Int64(Date().timeIntervalSince1970)
            let (devices, counts, histogram, expiring, campaigns, issued) = try store.readAside { tx in
                (
                    try tx.deviceCount(), try tx.rotationCounts(),
                    try tx.expiryHistogram(limits: Self.dayBuckets.map { now + $0 * 86400 }),
                    try RPC.expiringWithoutSuccessor(tx: tx, targets: targets, renewal: renewal, now: now),
                    try tx.campaigns().filter { !$0.state.isFinal || now - ($0.finishedAt ?? now) < 86400 }
                        .map { ($0, try tx.memberCounts(campaign: $0.id)) },
                    try tx.issuedCounts()
                )
            }
            // Readiness and the signing keys, as /readyz judges them (alerts: deploy/prometheus/certrot-alerts.yml).
            let signers = state.withLock { $0.signers }
            let unavailable = signers.filter { $0.problem != nil && $0.probe() != nil }.count
            gauge("certrot_ready", help: "1 while /readyz answers 200 (store check, broker, store, signing keys)").set(
                to: notReadyReason == nil ? 1 : 0)
            gauge(
                "certrot_store_check_running",
                help: "1 while the store's integrity check (SQLite quick_check, beside the start) runs"
            ).set(to: state.withLock { $0.storeCheckRunning } ? 1 : 0)
            gauge(
                "certrot_signing_keys_unavailable",
                help: "Signing keys (bundles, issuers) whose token cannot sign now"
            ).set(to: Double(unavailable))
            for issuer in state.withLock({ $0.issuers }) {
                gauge(
                    "certrot_issuer_not_after_timestamp_seconds", help: "When an issuing CA's certificate expires",
                    labels: [("issuer", issuer.name)]
                ).set(to: issuer.notAfter.timeIntervalSince1970)
                // The CRL as mosquitto reads it: the file, not what certrot meant to write.
                if let path = issuer.crl, let next = crlNextUpdate(path) {
                    gauge(
                        "certrot_crl_next_update_timestamp_seconds",
                        help: "The nextUpdate of the CRL file an issuer's crl path holds",
                        labels: [("issuer", issuer.name)]
                    ).set(to: next.timeIntervalSince1970)
                }
            }
            if let budget = state.withLock({ $0.budget }) {
                let lastHour = try store.readAside { tx in try tx.issuedCount(since: now - 3600 + 1) }
                gauge(
                    "certrot_client_certs_issued_last_hour",
                    help: "Client certificates issued to the fleet in the last hour (issuance.fleetPerHour counts them)"
                ).set(to: Double(lastHour))
                for (name, value) in [
                    ("fleet_per_hour", budget.fleetPerHour), ("device_per_day", budget.perDevicePerDay),
                ] {
                    gauge(
                        "certrot_client_cert_issuance_budget",
                        help: "The issuance budgets (config issuance): renewals over them wait",
                        labels: [("budget", name)]
                    ).set(to: Double(value))
                }
            }
            for (issuer, byState) in issued {
                for state in IssuedCertificate.State.allCases {
                    gauge(
                        "certrot_client_certificates", help: "Client certificates certrot issued, by issuer and state",
                        labels: [("issuer", issuer), ("state", state.rawValue)]
                    ).set(to: Double(byState[state.rawValue] ?? 0))
                }
            }
            for (target, byState) in counts where RotationTarget(target).isClientCert {
                for state in RotationState.allCases {
                    gauge(
                        "certrot_rotations", help: "Rotations by target and state",
                        labels: [("target", target), ("state", state.rawValue)]
                    ).set(to: Double(byState[state.rawValue] ?? 0))
                }
            }
            renderExpiry(targets: targets, histogram: histogram, expiringWithoutSuccessor: expiring)
            let risk = FleetRisk.result(
                try store.readAside { tx in try tx.strandedRisk(now: now, limit: 0) }, targets: targets.map(\.name),
                now: now
            )
            for (target, value) in risk.targets {
                gauge(
                    "certrot_stranded_devices",
                    help:
                        "Devices whose last contact is longer ago than the time their chain in the target tag has left (fleet.risk)",
                    labels: [("target", target)]
                ).set(to: Double(value.atRisk))
            }
            for (name, value) in store.traffic {
                gauge(
                    "certrot_store_\(name)",
                    help: "PostgreSQL: \(name.replacingOccurrences(of: "_", with: " ")) since the daemon started"
                )
                .set(to: Double(value))
            }
            for (campaign, waves) in campaigns {
                var total: [MemberState: Int] = [:]
                for counted in waves.values { total.merge(counted.states, uniquingKeysWith: +) }
                for state in MemberState.allCases {
                    gauge(
                        "certrot_campaign_devices",
                        help: "Campaign members by state (running campaigns and those finished within a day)",
                        labels: [("campaign", campaign.id), ("name", campaign.name), ("state", state.rawValue)]
                    )
                    .set(to: Double(total[state] ?? 0))
                }
                for state in CampaignState.allCases {
                    gauge(
                        "certrot_campaign_state", help: "1 for the campaign's current state",
                        labels: [("campaign", campaign.id), ("state", state.rawValue)]
                    ).set(to: campaign.state == state ? 1 : 0)
                }
            }
            gauge("certrot_devices", help: "Devices with an accepted inventory").set(to: Double(devices))
            for target in targets {
                var seen = 0
                for state in RotationState.allCases {
                    let count = counts[target.name]?[state.rawValue] ?? 0
                    seen += count
                    gauge(
                        "certrot_rotations", help: "Rotations by target and state",
                        labels: [("target", target.name), ("state", state.rawValue)]
                    )
                    .set(to: Double(count))
                }
                gauge(
                    "certrot_rotations", help: "Rotations by target and state",
                    labels: [("target", target.name), ("state", "in_sync")]
                )
                .set(to: Double(max(0, devices - seen)))
                gauge(
                    "certrot_target_not_after_timestamp_seconds", help: "Earliest notAfter of the target chain",
                    labels: [("target", target.name)]
                )
                .set(to: Double(target.chain.notAfter))
            }
        } catch {
            logger.error("metrics: store read failed", metadata: ["error": "\(error)"])
        }
        gauge("certrot_broker_connected", help: "1 while connected to the broker").set(
            to: state.withLock { $0.connected } ? 1 : 0)
        return registry.emitToString()
    }
}

/// `/metrics`, `/healthz`, `/readyz` and the HTTP API under `/api/v1/` (docs/openapi.yaml) on the configured
/// address (hummingbird). The API's read-only operations are open when `host` is a loopback address.
func makeHTTPApplication(
    host: String, port: Int, observability: Observability, store: any RotationStore, targets: [ResolvedTarget],
    renewal: [String: RenewalInfo], api: HTTPAPI, tokens: [APIToken], limits: HTTPLimits = HTTPLimits(),
    logger: Logger
) throws -> some ApplicationProtocol {
    let router = Router()
    router.add(middleware: NoSniff())
    // The API's operations are a group whose middleware runs on what the router matched, whatever the spelling of
    // the path (`//api/v1/fleet` matches `/api/v1/fleet`): one place decides who may call them. The body is read
    // only once the caller is known, and only up to the limit of an RPC request.
    let loopback = Loopback.contains(host)
    let hostCheck = HostCheck<BasicRequestContext>(listener: host.lowercased(), enforced: loopback)
    let operations = router.group()
        .add(middleware: hostCheck)
        .add(middleware: APIAuthentication(tokens: tokens, readsOpen: loopback))
        .add(middleware: BodyLimit(maxBytes: RPC.maxRequestBytes))
    try api.registerHandlers(on: operations, middlewares: [APIErrors()])
    try Console(rpc: api.rpc, logger: logger).register(on: router.group().add(middleware: hostCheck), enabled: loopback)
    router.get("healthz") { _, _ in "ok\n" }
    router.get("readyz") { _, _ -> Response in
        if let reason = observability.notReadyReason {
            return Response(status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: reason + "\n")))
        }
        return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
    }
    router.get("metrics") { _, _ -> Response in
        let text = observability.render(store: store, targets: targets, renewal: renewal, logger: logger)
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
    return Application(
        router: router, server: .http1(configuration: .init(idleTimeout: .seconds(limits.idleTimeout))),
        configuration: .init(
            address: .hostname(host, port: port), serverName: "certrot",
            availableConnectionsDelegate: .maximum(limits.maxConnections, logger: logger)),
        logger: logger)
}

/// Bounds on the HTTP listener (red-team #32, finding 4: 20,000 half-open connections exhausted the daemon's
/// descriptors): a connection with no complete request for `idleTimeout` seconds is closed, and at most
/// `maxConnections` are served at once (more wait in the kernel's backlog), well below the descriptor limit, which
/// the store, the broker and the files need too.
package struct HTTPLimits: Sendable {
    package var idleTimeout: Int64 = 30
    package var maxConnections: Int = HTTPLimits.defaultMaxConnections

    package init() {}

    /// A quarter of the soft descriptor limit, between 16 and 512.
    static var defaultMaxConnections: Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 256 }
        return Int(min(512, max(16, limit.rlim_cur / 4)))
    }
}
