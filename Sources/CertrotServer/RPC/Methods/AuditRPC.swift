import CertrotCore

/// `audit.list`: the audit log, a page at a time, oldest first (docs/security.md, "Audit log").
package enum AuditList: RPCMethod {
    package static let name = "audit.list"

    package struct Params: Sendable, Equatable {
        /// Records after this seq (exclusive).
        package var after: Int64 = 0
        package var limit = 100
        package var since: Int64?
        package var device: String?
    }

    package struct Result: Codable, Sendable, Equatable {
        package var records: [AuditRecord]
        /// The `after` of the next page; null when this was the last.
        package var next: Int64?

        enum CodingKeys: CodingKey { case records, next }

        package init(records: [AuditRecord], next: Int64?) {
            self.records = records
            self.next = next
        }

        package init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            records = try container.decode([AuditRecord].self, forKey: .records)
            next = try container.decodeIfPresent(Int64.self, forKey: .next)
        }

        package func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(records, forKey: .records)
            try container.encode(next, forKey: .next)  // null, not absent: the caller stops on it
        }
    }

    package static func params(_ params: [String: Any]) throws(RPCError) -> Params {
        let reader = ParamsReader(params)
        try reader.only(["after", "limit", "since", "device"])
        var result = Params()
        if let after = try reader.int("after", else: "params.after must be a record seq") {
            guard after >= 0 else { throw RPCError(code: .invalidParams, message: "params.after must be a record seq") }
            result.after = after
        }
        if let limit = try reader.int("limit", else: "params.limit must be 1…1000") {
            guard (1...1000).contains(limit) else {
                throw RPCError(code: .invalidParams, message: "params.limit must be 1…1000")
            }
            result.limit = Int(limit)
        }
        result.since = try reader.int("since", else: "params.since must be a Unix time in seconds")
        if let device = try reader.string("device", else: "params.device must be a valid device ID") {
            guard DeviceID.isValid(device) else {
                throw RPCError(code: .invalidParams, message: "params.device must be a valid device ID")
            }
            result.device = device
        }
        return result
    }
}

extension RPC {
    static func auditList(_ params: AuditList.Params, tx: any StoreTransaction) throws -> AuditList.Result {
        let records = try tx.auditRecords(
            after: params.after, limit: params.limit + 1, since: params.since, device: params.device)
        let page = Array(records.prefix(params.limit))
        return AuditList.Result(records: page, next: records.count > params.limit ? page.last?.seq : nil)
    }
}
