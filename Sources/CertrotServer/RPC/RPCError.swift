import CertrotCore
import Foundation

/// A JSON-RPC error (docs/protocol.md §8): a code, a message, and — for a refused campaign — `data` saying why.
package struct RPCError: Error, Equatable, Sendable {
    package enum Code: Int, Sendable, Codable, CaseIterable {
        case parse = -32700
        case invalidRequest = -32600
        case methodNotFound = -32601
        case invalidParams = -32602
        case internalError = -32603
        case unknownDevice = -32004
        case unknownCampaign = -32005
        case unauthorized = -32010
        /// campaign.create refused by the preflight or the selection; `data` says why.
        case campaignRefused = -32020
        /// The campaign's state does not allow the operation (resume a completed campaign, …).
        case campaignState = -32021
        /// Not answered now: the store is unavailable, or (HTTP API) this replica does not lead the cluster.
        case unavailable = -32030
    }

    package var code: Code
    package var message: String
    package var data: [String: RefusalValue]?

    package init(code: Code, message: String, data: [String: RefusalValue]? = nil) {
        self.code = code
        self.message = message
        self.data = data
    }

    /// A refusal of campaign.create: its reason goes into `data` with the details.
    package init(_ refusal: Refusal) {
        let isParams = refusal.reason == "invalid_params" || refusal.reason == "invalid_window"
        code = isParams ? .invalidParams : .campaignRefused
        message = refusal.message
        var data = refusal.details
        data["reason"] = .string(refusal.reason)
        self.data = data
    }

    /// What a caller learns of a failure inside the daemon; the detail goes to the daemon's log only.
    static let internalFailure = RPCError(code: .internalError, message: "internal error; see the daemon log")

    /// The error object of the reply.
    var json: [String: Any] {
        var error: [String: Any] = ["code": code.rawValue, "message": message]
        if let data {
            error["data"] = data.mapValues { value -> Any in
                switch value {
                case .int(let n): n
                case .string(let s): s
                }
            }
        }
        return error
    }
}
