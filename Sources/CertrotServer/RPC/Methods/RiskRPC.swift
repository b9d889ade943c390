import CertrotCore

/// `fleet.risk`: the devices that will not be back in time. For each chain a device holds in a target's tag, the
/// device is at risk when its last contact is longer ago than the time the chain has left — a device that checks
/// in every 40 days will not be seen again before a chain that expires in 20 — and always once it has expired:
/// per target, how many, by week until expiry, and the first `limit` to expire.
package enum FleetRisk: RPCMethod {
    package static let name = "fleet.risk"

    package struct Params: Sendable, Equatable {
        package var limit = 100
    }

    /// Weeks counted one by one; later ones go into `later`.
    static let weeks = 104

    package struct Result: Codable, Sendable, Equatable {
        package struct Target: Codable, Sendable, Equatable {
            /// Every device at risk, expired ones included.
            package var atRisk: Int
            /// Those whose chain has expired already.
            package var expired: Int
            /// `byWeek[k]`: those whose chain expires in week k + 1 from now (up to the last week with any).
            package var byWeek: [Int]
            /// Those whose chain expires more than 104 weeks from now.
            package var later: Int
        }

        package struct Device: Codable, Sendable, Equatable {
            package var device: String
            package var target: String
            package var notAfter: Int64
            package var lastSeen: Int64
            /// 0: expired; k: expires in week k.
            package var week: Int64
        }

        package var now: Int64
        /// Every configured target, and any other the store has expiries for.
        package var targets: [String: Target]
        /// The first to expire, soonest first.
        package var devices: [Device]
    }

    package static func params(_ params: [String: Any]) throws(RPCError) -> Params {
        let reader = ParamsReader(params)
        try reader.only(["limit"])
        var result = Params()
        if let limit = try reader.int("limit", else: "params.limit must be an integer 0…1000") {
            guard (0...1000).contains(limit) else {
                throw RPCError(code: .invalidParams, message: "params.limit must be an integer 0…1000")
            }
            result.limit = Int(limit)
        }
        return result
    }

    static func result(_ risk: StrandedRisk, targets: [String], now: Int64) -> Result {
        var byTarget: [String: Result.Target] = [:]
        for name in Set(targets).union(risk.byWeek.keys) {
            let weeks = risk.byWeek[name] ?? [:]
            let last = Int(min(weeks.keys.filter { $0 >= 1 }.max() ?? 0, Int64(Self.weeks)))
            var byWeek = Array(repeating: 0, count: last)
            var later = 0
            for (week, count) in weeks where week >= 1 {
                if week <= Int64(Self.weeks) { byWeek[Int(week) - 1] += count } else { later += count }
            }
            byTarget[name] = Result.Target(
                atRisk: weeks.values.reduce(0, +), expired: weeks[0] ?? 0, byWeek: byWeek, later: later)
        }
        return Result(
            now: now, targets: byTarget,
            devices: risk.devices.map {
                Result.Device(
                    device: $0.device, target: $0.target, notAfter: $0.notAfter, lastSeen: $0.lastSeen,
                    week: StrandedRisk.week(notAfter: $0.notAfter, now: now))
            })
    }
}
