import CertrotCore

/// `device.status`: what the daemon knows of one device.
package enum DeviceStatus: RPCMethod {
    package static let name = "device.status"

    package struct Params: Sendable, Equatable {
        package var device: String
    }

    package struct Result: Codable, Sendable, Equatable {
        package struct Credential: Codable, Sendable, Equatable {
            package var tag: Int64
            package var type: Int
            package var sha256: String
            package var name: String?
            package var notAfter: Int64?
            package var serial: String?
        }

        package struct RotationEntry: Codable, Sendable, Equatable {
            package var target: String
            package var sha256: String
            package var state: String
            package var attempts: Int
            package var createdAt: Int64
            package var updatedAt: Int64
            package var jti: String?
            package var seq: Int64?
            package var lastError: String?
            package var nextAttemptAt: Int64?
            package var sentAt: Int64?
            package var appliedAt: Int64?
            package var verifiedAt: Int64?
        }

        package var device: String
        package var firstSeen: Int64
        package var lastSeen: Int64
        package var issuedSeq: Int64
        package var reportedSeq: Int64?
        package var keys: [String]?
        package var maxMessage: Int?
        package var inventory: [Credential]
        package var rotations: [RotationEntry]
        package var history: [HistoryEntry]
        /// Under a `clientCerts` policy: the identity the device connects with (docs/protocol.md §11).
        package var clientCertificate: ClientIdentityStatus?
        /// Every client certificate certrot issued to the device, oldest first.
        package var issuedCertificates: [IssuedCertificateEntry]?
        /// Under `attestation: learn`: the modem identity key learned from the device's answers.
        package var learnedIdentity: LearnedIdentityEntry?
    }

    /// A ``LearnedIdentity`` as `device.status` shows it.
    package struct LearnedIdentityEntry: Codable, Sendable, Equatable {
        /// `candidates` (one answer seen) or `pinned`.
        package var state: String
        package var uuid: String
        /// The pinned key (uncompressed point, hex).
        package var key: String?
        /// The keys still open, before it is pinned.
        package var candidates: [String]?
        package var firstSeenAt: Int64
        package var pinnedAt: Int64?

        package init(_ identity: LearnedIdentity) {
            state = identity.pinnedAt == nil ? "candidates" : "pinned"
            uuid = ModemUUID.format(identity.uuid)
            key = identity.key
            candidates = identity.pinnedAt == nil ? identity.candidates : nil
            firstSeenAt = identity.firstSeenAt
            pinnedAt = identity.pinnedAt
        }
    }

    package static func params(_ params: [String: Any]) throws(RPCError) -> Params {
        guard let id = params["device"] as? String else {
            throw RPCError(code: .invalidParams, message: "params.device (string) is required")
        }
        if let problem = DeviceID.problem(id) { throw RPCError(code: .invalidParams, message: problem) }
        return Params(device: id)
    }
}

/// `device.retry`: a device's settled failures start over.
package enum DeviceRetry: RPCMethod {
    package static let name = "device.retry"
    package static let mutates = true

    package struct Params: Sendable, Equatable {
        package var device: String
        /// Only this target's rotation.
        package var target: String?
    }

    package struct Result: Codable, Sendable, Equatable {
        package var device: String
        package var retried: [String]
    }

    package static func params(_ params: [String: Any]) throws(RPCError) -> Params {
        guard let id = params["device"] as? String, DeviceID.isValid(id) else {
            throw RPCError(code: .invalidParams, message: "params.device must be a valid device ID")
        }
        let target = try ParamsReader(params).string("target", else: "params.target must be a string")
        return Params(device: id, target: target)
    }
}

/// `device.list`: devices by filter, a bounded page at a time.
package enum DeviceList: RPCMethod {
    package static let name = "device.list"

    package struct Params: Sendable, Equatable {
        package var state: String?
        package var campaign: String?
        package var holding: String?
        package var expiringBefore: Int64?
        package var tag: Int64?
        package var after: String?
        /// Only devices whose ID starts with it (byte-wise).
        package var prefix: String?
        package var limit = 100
    }

    package struct Result: Codable, Sendable, Equatable {
        package struct Member: Codable, Sendable, Equatable {
            package var id: String
            package var wave: Int
            package var state: String
        }

        package struct Entry: Codable, Sendable, Equatable {
            package var device: String
            package var lastSeen: Int64
            package var issuedSeq: Int64
            package var reportedSeq: Int64?
            /// Rotation target → state.
            package var rotations: [String: String]
            /// With `params.campaign`: the device's membership.
            package var campaign: Member?
            /// Under a `clientCerts` policy: the identity the device connects with.
            package var clientCertificate: ClientIdentityStatus?
        }

        package var devices: [Entry]
        /// Where the next page starts (`after`); null once the whole fleet was looked at.
        package var next: String?

        enum CodingKeys: CodingKey { case devices, next }

        package init(devices: [Entry], next: String?) {
            self.devices = devices
            self.next = next
        }

        package init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            devices = try container.decode([Entry].self, forKey: .devices)
            next = try container.decodeIfPresent(String.self, forKey: .next)
        }

        package func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(devices, forKey: .devices)
            try container.encode(next, forKey: .next)  // null, not absent: the caller stops on it
        }
    }

    package static func params(_ params: [String: Any]) throws(RPCError) -> Params {
        let reader = ParamsReader(params)
        try reader.only(["state", "campaign", "holding", "expiringBefore", "tag", "after", "prefix", "limit"])
        var result = Params()
        if reader.has("limit") {
            result.limit = CertrotCore.Params.int(params["limit"]).map(Int.init) ?? -1
        }
        guard (1...1000).contains(result.limit) else {
            throw RPCError(code: .invalidParams, message: "params.limit must be 1…1000")
        }
        if reader.has("state") {
            guard let state = params["state"] as? String,
                RotationState(rawValue: state) != nil || MemberState(rawValue: state) != nil
            else {
                throw RPCError(
                    code: .invalidParams,
                    message: "params.state must be a rotation state (or waiting/cancelled with campaign)")
            }
            result.state = state
        }
        if reader.has("holding") {
            guard let holding = params["holding"] as? String, Hex.isSHA256(holding) else {
                throw RPCError(
                    code: .invalidParams, message: "params.holding must be a sha256 (64 lowercase hex digits)")
            }
            result.holding = holding
        }
        result.expiringBefore = try reader.int(
            "expiringBefore", else: "params.expiringBefore must be a Unix time in seconds")
        if reader.has("tag") {
            guard let tag = CertrotCore.Params.int(params["tag"]), result.expiringBefore != nil else {
                throw RPCError(code: .invalidParams, message: "params.tag must be a sec tag, given with expiringBefore")
            }
            result.tag = tag
        }
        if result.state == MemberState.waiting.rawValue, !reader.has("campaign") {
            throw RPCError(code: .invalidParams, message: "params.state waiting needs params.campaign")
        }
        if let campaign = params["campaign"] {
            // A campaign named by something other than a string exists no more than an unknown id does.
            guard let id = campaign as? String else {
                throw RPCError(
                    code: .unknownCampaign, message: "no campaign '\(String(describing: campaign).prefix(80))'")
            }
            result.campaign = id
        }
        result.after = try reader.string("after", else: "params.after must be a device ID")
        result.prefix = try reader.string("prefix", else: "params.prefix must be a string of 1…128 bytes")
        if let prefix = result.prefix, prefix.isEmpty || prefix.utf8.count > 128 {
            throw RPCError(code: .invalidParams, message: "params.prefix must be a string of 1…128 bytes")
        }
        return result
    }
}

/// `fleet.status`: the fleet's counts, expiry and signing keys.
package enum FleetStatus: RPCMethod {
    package static let name = "fleet.status"

    package struct Params: Sendable, Equatable {}

    package struct Result: Codable, Sendable, Equatable {
        /// Devices by days left: expired, < 7 d, < 30 d, < 90 d, later.
        package struct Buckets: Codable, Sendable, Equatable {
            package var expired = 0
            package var lt7d = 0
            package var lt30d = 0
            package var lt90d = 0
            package var later = 0
        }

        package struct Target: Codable, Sendable, Equatable {
            package var tag: Int64
            package var sha256: String
            package var states: [String: Int]
        }

        package struct NextKey: Codable, Sendable, Equatable {
            package var kid: String
            package var devicesTrusting: Int
            package var share: Double
            package var threshold: Double
            package var ready: Bool
            package var states: [String: Int]
        }

        package struct Signing: Codable, Sendable, Equatable {
            package var kid: String
            package var next: NextKey?
        }

        package struct Expiry: Codable, Sendable, Equatable {
            package var fleet: Buckets
            package var targets: [String: Buckets]
        }

        package var devices: Int
        package var states: [String: Int]
        package var targets: [String: Target]
        package var dropped: [String: Int]
        package var campaignStates: [String: Int]
        package var signing: Signing
        package var expiry: Expiry
        package var expiringWithoutSuccessor: [String: Int]
        /// Per `clientCerts` policy: its rotations by state; per issuer, certificates by state.
        package var clientCerts: [String: ClientCerts]?

        package struct ClientCerts: Codable, Sendable, Equatable {
            package var states: [String: Int]
            package var issuer: String
            package var certificates: [String: Int]
        }
    }

    package static func params(_ params: [String: Any]) throws(RPCError) -> Params { Params() }
}
