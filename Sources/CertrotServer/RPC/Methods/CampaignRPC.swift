import CertrotCore

/// A campaign named by `params.id`, and for pause and abort an optional `params.reason`.
package struct CampaignRef: Sendable, Equatable {
    package var id: String
    package var reason: String?

    static func parse(_ params: [String: Any], reason allowed: Bool) throws(RPCError) -> CampaignRef {
        guard let id = params["id"] as? String, !id.isEmpty else {
            throw RPCError(code: .invalidParams, message: "params.id (a campaign id) is required")
        }
        var reason: String?
        if allowed, let raw = params["reason"] {
            guard let text = raw as? String, text.utf8.count <= 512 else {
                throw RPCError(code: .invalidParams, message: "params.reason must be a string of at most 512 bytes")
            }
            reason = text
        }
        return CampaignRef(id: id, reason: reason)
    }
}

/// `campaign.create`: its params are checked with the daemon's clock when the request's turn comes
/// (`CampaignRequest.parse`, then the preflight); the reply comes once they have run.
package enum CampaignCreate: RPCMethod {
    package static let name = "campaign.create"
    package static let mutates = true

    /// The request's `params` object as it came.
    package struct Params: @unchecked Sendable {
        package var object: [String: Any]
    }

    package struct Result: Codable, Sendable, Equatable {
        package var id: String
        /// Members.
        package var devices: Int
        package var waves: Int
        package var state: String
    }

    package static func params(_ params: [String: Any]) throws(RPCError) -> Params { Params(object: params) }
}

/// `campaign.list`: every campaign, oldest first.
package enum CampaignList: RPCMethod {
    package static let name = "campaign.list"

    package struct Params: Sendable, Equatable {
        package var state: CampaignState?
    }

    package struct Result: Codable, Sendable, Equatable {
        package struct Summary: Codable, Sendable, Equatable {
            package var id: String
            package var name: String
            package var state: String
            package var origin: String
            package var createdAt: Int64
            package var total: Int
            package var states: [String: Int]
            package var currentWave: Int
            package var waves: Int
            package var reason: String?
        }

        package var campaigns: [Summary]
    }

    package static func params(_ params: [String: Any]) throws(RPCError) -> Params {
        guard let raw = params["state"] else { return Params() }
        guard let state = (raw as? String).flatMap(CampaignState.init(rawValue:)) else {
            throw RPCError(
                code: .invalidParams, message: "params.state must be one of \(CampaignState.allCases.map(\.rawValue))")
        }
        return Params(state: state)
    }
}

/// `campaign.status`: one campaign's progress (also its retained progress topic).
package enum CampaignStatus: RPCMethod {
    package static let name = "campaign.status"

    package typealias Params = CampaignRef

    package struct Result: Codable, Sendable, Equatable {
        package struct Wave: Codable, Sendable, Equatable {
            package var index: Int
            package var size: Int
            package var state: String
            package var states: [String: Int]
        }

        package struct Failure: Codable, Sendable, Equatable {
            package var device: String
            package var state: String
            package var settled: Bool
            package var code: Int?
            package var reason: String?
        }

        package struct Target: Codable, Sendable, Equatable {
            package var rotationTarget: String
            package var tag: Int64
            package var type: Int
            package var strategy: String
            package var sha256: String
            package var credential: String?
            /// Held digest → digest of the chain sent to its holders.
            package var overlaps: [String: String]?
        }

        package var id: String
        package var name: String
        package var state: String
        package var origin: String
        package var reason: String?
        package var states: [String: Int]
        package var total: Int
        package var waves: [Wave]
        package var currentWave: Int
        package var failures: [Failure]
        package var rate: Double
        /// Seconds until every member is settled at `rate`; nil (null) while the rate is 0.
        package var eta: Int?
        package var rateLimit: Double?
        package var deadline: Int64?
        package var continuous: Bool
        package var select: [String: JSONValue]
        package var targets: [Target]
        /// A client-certificate campaign's policy (`kind: client-cert`); absent for CA-chain campaigns.
        package var clientCert: String?
        /// `ca-chain` or `client-cert`.
        package var kind = "ca-chain"
        package var createdAt: Int64
        package var updatedAt: Int64
        package var finishedAt: Int64?

        enum CodingKeys: String, CodingKey {
            case id, name, state, origin, reason, states, total, waves, currentWave, failures, rate, eta, rateLimit
            case deadline, continuous, select, targets, createdAt, updatedAt, finishedAt, kind, clientCert
        }

        package func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(name, forKey: .name)
            try c.encode(state, forKey: .state)
            try c.encode(origin, forKey: .origin)
            try c.encodeIfPresent(reason, forKey: .reason)
            try c.encode(states, forKey: .states)
            try c.encode(total, forKey: .total)
            try c.encode(waves, forKey: .waves)
            try c.encode(currentWave, forKey: .currentWave)
            try c.encode(failures, forKey: .failures)
            try c.encode(rate, forKey: .rate)
            try c.encode(eta, forKey: .eta)  // null, not absent, while the rate is 0
            try c.encodeIfPresent(rateLimit, forKey: .rateLimit)
            try c.encodeIfPresent(deadline, forKey: .deadline)
            try c.encode(continuous, forKey: .continuous)
            try c.encode(select, forKey: .select)
            try c.encode(targets, forKey: .targets)
            try c.encode(kind, forKey: .kind)
            try c.encodeIfPresent(clientCert, forKey: .clientCert)
            try c.encode(createdAt, forKey: .createdAt)
            try c.encode(updatedAt, forKey: .updatedAt)
            try c.encodeIfPresent(finishedAt, forKey: .finishedAt)
        }
    }

    package static func params(_ params: [String: Any]) throws(RPCError) -> Params {
        try CampaignRef.parse(params, reason: false)
    }
}

/// `campaign.pause`: a running or scheduled campaign stops sending anything new.
package enum CampaignPause: RPCMethod {
    package static let name = "campaign.pause"
    package static let mutates = true
    package typealias Params = CampaignRef

    package struct Result: Codable, Sendable, Equatable {
        package var id: String
        package var state: String
    }

    package static func params(_ params: [String: Any]) throws(RPCError) -> Params {
        try CampaignRef.parse(params, reason: true)
    }
}

/// `campaign.resume`: a paused campaign goes on.
package enum CampaignResume: RPCMethod {
    package static let name = "campaign.resume"
    package static let mutates = true
    package typealias Params = CampaignRef

    package struct Result: Codable, Sendable, Equatable {
        package var id: String
        package var state: String
        package var currentWave: Int
    }

    package static func params(_ params: [String: Any]) throws(RPCError) -> Params {
        try CampaignRef.parse(params, reason: false)
    }
}

/// `campaign.abort`: final; members not yet sent anything are cancelled.
package enum CampaignAbort: RPCMethod {
    package static let name = "campaign.abort"
    package static let mutates = true
    package typealias Params = CampaignRef

    package struct Result: Codable, Sendable, Equatable {
        package var id: String
        package var state: String
        /// Members now cancelled.
        package var cancelled: Int
    }

    package static func params(_ params: [String: Any]) throws(RPCError) -> Params {
        try CampaignRef.parse(params, reason: true)
    }
}

extension CampaignSelection {
    /// As campaign.status shows it: the form it was created with.
    var wire: [String: JSONValue] {
        switch self {
        case .all: ["all": .bool(true)]
        case .devices(let list): ["devices": .array(list.map(JSONValue.string))]
        case .prefix(let prefix): ["prefix": .string(prefix)]
        case .pattern(let pattern): ["pattern": .string(pattern)]
        case .holding(let digest): ["holding": .string(digest)]
        case .expiringBefore(let tag, let before): ["tag": .int(tag), "expiringBefore": .int(before)]
        case .expiringWithin(let tag, let seconds): ["tag": .int(tag), "expiringWithin": .int(seconds)]
        }
    }
}
