import CertrotCore
import Foundation
import Yams

/// `certrot serve --config FILE`: the daemon's configuration (YAML). See config/certrot.yaml and the README.
public struct CertrotConfig: Sendable, Decodable {
    public struct Broker: Sendable, Decodable {
        public var url: String
        public var clientId: String?
        public var username: String?
        public var password: String?
        /// For `mqtts://`: `{ca, cert?, key?}` file paths.
        public var tls: TLS?
    }

    public struct TLS: Sendable, Decodable {
        public var ca: String
        public var cert: String?
        public var key: String?
    }

    public struct Target: Sendable, Decodable {
        public var name: String
        public var tag: Int64
        public var type: Int
        /// Path of the PEM chain to write into the tag.
        public var chain: String
        /// Auto-renewal: how long before the credential in the tag expires a device joins the standing
        /// auto-renewal campaign (default: a third of the target chain's lifetime, i.e. renew at two thirds).
        public var renewBefore: ConfigDuration?
        /// Auto-renewal: path of the chain that replaces `chain` on devices whose credential expires within
        /// `renewBefore`. Without it such devices are reported as expiring without successor.
        public var successor: String?
    }

    /// A campaign declared in the config file: the `campaign.create` params, with chain files as paths. Created at
    /// start unless a campaign of the same name exists.
    public struct DeclaredCampaign: Sendable, Decodable {
        public struct Target: Sendable, Decodable {
            public var tag: Int64
            public var type: Int?
            /// Path of a PEM chain.
            public var chain: String?
            public var credential: String?
            public var strategy: String?
        }

        public struct Select: Sendable, Decodable {
            public var all: Bool?
            public var devices: [String]?
            public var prefix: String?
            public var pattern: String?
            public var holding: String?
            public var tag: Int64?
            public var expiringBefore: Int64?
        }

        public var name: String
        /// `client-cert` with `clientCert` (a `clientCerts` policy) renews client certificates; no targets then.
        public var kind: String?
        public var clientCert: String?
        public var targets: [Target]?
        public var select: Select?
        public var waves: [String]?
        public var successThreshold: Double?
        public var errorThreshold: Double?
        public var minExecuted: Int?
        public var rate: Double?
        public var windows: [MaintenanceWindow]?
        public var start: Int64?
        public var deadline: Int64?
        public var continuous: Bool?
        public var pauseAfterWave: Bool?
        /// Path of the chain the server presents.
        public var endpointChain: String?
        public var minRemainingValidity: ConfigDuration?
        public var ackTimeout: ConfigDuration?

        /// The `campaign.create` params, chain files read.
        public func params() throws(CertrotError) -> [String: Any] {
            func read(_ path: String, _ key: String) throws(CertrotError) -> String {
                do {
                    return try String(contentsOfFile: path, encoding: .utf8)
                } catch {
                    throw CertrotError(.invalidConfig, "\(key): cannot read \(path)")
                }
            }
            var targetList: [[String: Any]] = []
            for (index, target) in (targets ?? []).enumerated() {
                var entry: [String: Any] = ["tag": target.tag, "type": target.type ?? 0]
                if let chain = target.chain { entry["chain"] = try read(chain, "targets[\(index)].chain") }
                entry["credential"] = target.credential
                entry["strategy"] = target.strategy
                targetList.append(entry)
            }
            var params: [String: Any] = ["name": name]
            if targets != nil { params["targets"] = targetList }
            params["kind"] = kind
            params["clientCert"] = clientCert
            var selection: [String: Any] = [:]
            if let select {
                selection["all"] = select.all
                selection["devices"] = select.devices
                selection["prefix"] = select.prefix
                selection["pattern"] = select.pattern
                selection["holding"] = select.holding
                selection["tag"] = select.tag
                selection["expiringBefore"] = select.expiringBefore
            }
            params["select"] = selection.isEmpty ? ["all": true] : selection
            params["waves"] = waves?.map { text -> Any in Int(text).map { $0 as Any } ?? text }
            params["successThreshold"] = successThreshold
            params["errorThreshold"] = errorThreshold
            params["minExecuted"] = minExecuted
            params["rate"] = rate
            params["windows"] = windows?.map { window -> [String: Any] in
                var object: [String: Any] = ["days": window.days, "start": window.start, "end": window.end]
                object["zone"] = window.zone
                return object
            }
            params["start"] = start
            params["deadline"] = deadline
            params["continuous"] = continuous
            params["pauseAfterWave"] = pauseAfterWave
            if let endpointChain { params["endpointChain"] = try read(endpointChain, "endpointChain") }
            params["minRemainingValidity"] = minRemainingValidity?.seconds
            params["ackTimeout"] = ackTimeout?.seconds
            return params
        }
    }

    /// A named chain the daemon should recognise in inventories (e.g. the CA being replaced).
    public struct KnownCredential: Sendable, Decodable {
        public var name: String
        public var chain: String
    }

    public struct Retry: Sendable, Decodable {
        public var base: ConfigDuration?
        public var factor: Double?
        public var cap: ConfigDuration?
        public var attempts: Int?
    }

    public var broker: Broker
    public var store: String
    /// A PKCS#8 PEM file (mode 0600) or an RFC 7512 PKCS#11 URI (`pkcs11:token=…;object=…?module-path=…`).
    public var signingKey: String
    /// Keys in a PKCS#11 token: where the PIN is, and how many sessions each key may use.
    public var pkcs11: PKCS11?

    public struct PKCS11: Sendable, Decodable {
        /// A file holding the token's user PIN (mode 0600); else `CERTROT_PKCS11_PIN`.
        public var pinFile: String?
        /// Sessions per key (parallel signatures), default 4.
        public var sessions: Int?

        public init(pinFile: String? = nil, sessions: Int? = nil) {
            self.pinFile = pinFile
            self.sessions = sessions
        }
    }
    public var targets: [Target]
    public var catalogue: [KnownCredential]?
    /// Campaigns created at start (idempotently, by name).
    public var campaigns: [DeclaredCampaign]?
    public var profiles: [DeviceProfile]?
    public var defaultProfile: String?
    public var bundleLifetime: ConfigDuration?
    public var ackTimeout: ConfigDuration?
    public var retry: Retry?
    /// Outgoing QoS 1 publishes in flight at once.
    public var maxInflight: Int?
    /// The HTTP listener for `/metrics`, `/healthz` and `/readyz`; off when absent.
    public var http: HTTP?

    public struct HTTP: Sendable, Decodable {
        public var host: String?
        public var port: Int
        /// Who may call the HTTP API's mutating operations (and, off loopback, any): a name, recorded as the
        /// operator of what the token does, and the SHA-256 (64 hex digits) of the token; never the token itself.
        public var tokens: [Token]?
        /// A connection with no complete request for this long is closed, a half-sent request head included
        /// (default 30s).
        public var idleTimeout: ConfigDuration?
        /// Connections served at once; more wait in the kernel's backlog (default: a quarter of the process's
        /// descriptor limit, at most 512).
        public var maxConnections: Int?

        public struct Token: Sendable, Decodable {
            public var name: String
            public var sha256: String
        }
    }

    /// Several replicas on one PostgreSQL store and one broker (docs/scaling.md); absent: a single daemon.
    public var cluster: Cluster?

    public struct Cluster: Sendable, Decodable {
        /// This replica's name, unique in the cluster (default: host name and process id).
        public var replica: String?
        /// The shared-subscription group the replicas take inbound messages through (default "certrot").
        public var group: String?
        /// A replica not heard from for this long is dead: the leader re-sends what it had not delivered.
        public var deadAfter: ConfigDuration?
    }

    /// Operators' public keys (PEM files). When any are listed, mutating JSON-RPC methods need a signed request.
    public var operators: [Operator]?

    public struct Operator: Sendable, Decodable {
        public var name: String
        public var publicKey: String
    }

    /// Issuing CAs for device client certificates (docs/client-certificates.md).
    public var issuers: [Issuer]?
    /// A JSON Lines file of the devices' modem identity keys: `{"device":ID,"identityKey":PEM,"uuid":HEX32?}`.
    public var identities: String?
    /// Client-certificate policies: which devices renew their identity, from which issuer, in which sec tags.
    public var clientCerts: [ClientCert]?
    /// How many client certificates certrot may issue (docs/client-certificates.md, "Issuance budgets").
    public var issuance: Issuance?

    public struct Issuance: Sendable, Decodable {
        /// Certificates one device may be issued in any 24 hours (default 4). A renewal over it waits.
        public var perDevicePerDay: Int?
        /// Certificates the whole fleet may be issued in any hour (default 10,000). Renewals over it wait.
        public var fleetPerHour: Int?
    }

    /// Bundle-signing key rotation: devices that report `keys` are sent a `trust_key` op for `nextKey`.
    public var keyRotation: KeyRotation?

    /// JSON-RPC limits (docs/security.md, "Hostile devices and requesters").
    public var rpc: RPC?

    public struct RPC: Sendable, Decodable {
        /// Replies go only to topics under this prefix (default `certrot/replies/`).
        public var replyPrefix: String?
        /// With `operators`: every method, reads included, needs a signed request.
        public var signedReads: Bool?
        /// Requests per second one requester (reply topic, or operator key) may make, and its burst.
        public var rate: Double?
        public var burst: Double?
        /// Requests per second from all requesters together.
        public var totalRate: Double?
        /// A status read (`device.status`, `fleet.status`, `device.list`, `fleet.risk`) that takes longer than
        /// this many milliseconds is logged (notice) with where its time went; 0 logs every one (default 50).
        public var slowReadMilliseconds: Int?
    }

    /// Which devices the daemon takes messages from, and how much it queues (docs/security.md).
    public var admission: Admission?

    public struct Admission: Sendable, Decodable {
        /// A glob (`*`, `?`) device IDs must match; messages from other IDs are dropped (`device_not_admitted`).
        public var idPattern: String?
        /// Bytes of inbound messages queued before the daemon stops reading from the broker (default 64 MiB).
        public var maxQueuedBytes: Int?
    }

    /// What the store keeps of the past (docs/operations.md, "Retention").
    public var retention: Retention?

    public struct Retention: Sendable, Decodable {
        /// History entries kept per device (default 200).
        public var history: Int?
        /// Bundles kept per device besides those a rotation still refers to (default 20).
        public var bundles: Int?
        /// History and bundles older than this go whatever their number (default 365d).
        public var maxAge: ConfigDuration?
        /// Issued client certificates that expired this long ago go from the store, unless a device still uses
        /// them (default 90d); a CRL lists a revoked certificate only until it expires.
        public var issuedCerts: ConfigDuration?
        /// Audit records older than this go, from the oldest signed checkpoint on, keeping every record of a
        /// certificate that has not expired (default 365d; at least 1d; docs/security.md, "Audit log").
        public var audit: ConfigDuration?
    }

    public struct KeyRotation: Sendable, Decodable {
        /// The next signing key (PKCS#8 PEM, mode 0600, or a PKCS#11 URI).
        public var nextKey: String
        /// Share of devices that must trust the next key before `fleet.status` reports the rotation ready.
        public var threshold: Double?
    }

    public static func load(path: String) throws -> CertrotConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw CertrotError(.invalidConfig, "cannot read config file \(path): \(error.localizedDescription)")
        }
        var config = try parse(yaml: text, source: path)
        try config.applyEnvironment(ProcessInfo.processInfo.environment)
        return config
    }

    /// Environment variables that override config keys (for containers and systemd environment files).
    public static let environmentOverrides: [(variable: String, key: String)] = [
        ("CERTROT_BROKER_URL", "broker.url"), ("CERTROT_BROKER_CLIENT_ID", "broker.clientId"),
        ("CERTROT_BROKER_USERNAME", "broker.username"), ("CERTROT_BROKER_PASSWORD", "broker.password"),
        ("CERTROT_BROKER_TLS_CA", "broker.tls.ca"), ("CERTROT_BROKER_TLS_CERT", "broker.tls.cert"),
        ("CERTROT_BROKER_TLS_KEY", "broker.tls.key"), ("CERTROT_STORE", "store"),
        ("CERTROT_SIGNING_KEY", "signingKey"), ("CERTROT_ACK_TIMEOUT", "ackTimeout"),
        ("CERTROT_BUNDLE_LIFETIME", "bundleLifetime"), ("CERTROT_HTTP_HOST", "http.host"),
        ("CERTROT_HTTP_PORT", "http.port"), ("CERTROT_CLUSTER_REPLICA", "cluster.replica"),
        ("CERTROT_PKCS11_PIN_FILE", "pkcs11.pinFile"),
    ]

    /// Applies `CERTROT_…` overrides (see ``environmentOverrides``).
    public mutating func applyEnvironment(_ environment: [String: String]) throws(CertrotError) {
        func value(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        func duration(_ name: String) throws(CertrotError) -> ConfigDuration? {
            guard let text = value(name) else { return nil }
            guard let parsed = ConfigDuration.parse(text) else {
                throw CertrotError(.invalidConfig, "\(name)='\(text)' is not a duration (e.g. 30s, 10m, 1h, 7d)")
            }
            return parsed
        }
        if let url = value("CERTROT_BROKER_URL") { broker.url = url }
        if let id = value("CERTROT_BROKER_CLIENT_ID") { broker.clientId = id }
        if let user = value("CERTROT_BROKER_USERNAME") { broker.username = user }
        if let password = value("CERTROT_BROKER_PASSWORD") { broker.password = password }
        if let ca = value("CERTROT_BROKER_TLS_CA") {
            broker.tls = TLS(ca: ca, cert: broker.tls?.cert, key: broker.tls?.key)
        }
        if let cert = value("CERTROT_BROKER_TLS_CERT") { broker.tls?.cert = cert }
        if let key = value("CERTROT_BROKER_TLS_KEY") { broker.tls?.key = key }
        if let store = value("CERTROT_STORE") { self.store = store }
        if let key = value("CERTROT_SIGNING_KEY") { signingKey = key }
        if let timeout = try duration("CERTROT_ACK_TIMEOUT") { ackTimeout = timeout }
        if let lifetime = try duration("CERTROT_BUNDLE_LIFETIME") { bundleLifetime = lifetime }
        if let text = value("CERTROT_HTTP_PORT") {
            guard let port = Int(text) else {
                throw CertrotError(.invalidConfig, "CERTROT_HTTP_PORT='\(text)' is not a port")
            }
            if http == nil { http = HTTP(port: port) } else { http?.port = port }
        }
        if let host = value("CERTROT_HTTP_HOST") {
            if http == nil { http = HTTP(host: host, port: 9464) } else { http?.host = host }
        }
        if let pinFile = value("CERTROT_PKCS11_PIN_FILE") {
            pkcs11 = PKCS11(pinFile: pinFile, sessions: pkcs11?.sessions)
        }
        if let replica = value("CERTROT_CLUSTER_REPLICA") {
            cluster = Cluster(replica: replica, group: cluster?.group, deadAfter: cluster?.deadAfter)
        }
    }

    public static func parse(yaml: String, source: String = "config") throws -> CertrotConfig {
        do {
            return try YAMLDecoder().decode(CertrotConfig.self, from: yaml)
        } catch let error as DecodingError {
            throw CertrotError(.invalidConfig, "\(source): \(describeDecoding(error))")
        } catch {
            throw CertrotError(.invalidConfig, "\(source): \(error)")
        }
    }

    public var rotationPolicy: RotationPolicy {
        let defaults = RetryPolicy()
        return RotationPolicy(
            retry: RetryPolicy(
                base: retry?.base?.seconds ?? defaults.base, factor: retry?.factor ?? defaults.factor,
                cap: retry?.cap?.seconds ?? defaults.cap, attempts: retry?.attempts ?? defaults.attempts),
            ackTimeout: ackTimeout?.seconds ?? 600)
    }

    /// The profile for devices that do not say otherwise.
    public func profile() throws(CertrotError) -> DeviceProfile {
        let name = defaultProfile ?? "nrf91"
        if let found = (profiles ?? []).first(where: { $0.name == name }) { return found }
        if name == DeviceProfile.nrf91.name { return .nrf91 }
        throw CertrotError(.invalidConfig, "defaultProfile '\(name)' is not defined under profiles")
    }
}

/// A duration in config: an integer number of seconds or a string like `30s`, `10m`, `1h`, `7d`.
public struct ConfigDuration: Sendable, Decodable, Equatable {
    public var seconds: Int64

    public init(seconds: Int64) { self.seconds = seconds }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Int64.self) {
            guard value >= 0 else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "a duration cannot be negative")
            }
            seconds = value
            return
        }
        let text = try container.decode(String.self)
        guard let parsed = ConfigDuration.parse(text) else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "'\(text)' is not a duration (use e.g. 30s, 10m, 1h, 7d)")
        }
        self = parsed
    }

    public static func parse(_ text: String) -> ConfigDuration? {
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        guard let unit = text.last, let multiplier = units[unit], let value = Int64(text.dropLast()), value >= 0
        else { return Int64(text).flatMap { $0 >= 0 ? ConfigDuration(seconds: $0) : nil } }
        let (seconds, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : ConfigDuration(seconds: seconds)
    }
}

func describeDecoding(_ error: DecodingError) -> String {
    func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop { $0 == "." }.description
    }
    switch error {
    case .keyNotFound(let key, let context):
        return "\(path(context.codingPath + [key])) is required"
    case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
        return "\(path(context.codingPath)): \(context.debugDescription)"
    @unknown default:
        return "\(error)"
    }
}
