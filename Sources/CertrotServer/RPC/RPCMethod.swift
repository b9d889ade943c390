import CertrotCore
import Foundation

/// One JSON-RPC method (docs/protocol.md §8): its name, whether it changes stored state (then an operator's
/// signature is needed when operators are configured), its parameters, parsed and checked from the request's
/// `params` object, and its result, encoded as the reply's `result`.
package protocol RPCMethod {
    associatedtype Params: Sendable
    associatedtype Result: Codable & Sendable

    static var name: String { get }
    static var mutates: Bool { get }
    /// Checks `params` (the request's object, `[:]` when absent); a problem is an `invalidParams` error naming the
    /// member.
    static func params(_ params: [String: Any]) throws(RPCError) -> Params
}

extension RPCMethod {
    package static var mutates: Bool { false }
}

/// Every method the daemon answers, in one place: the dispatcher, the signature rule and the docs follow it.
package enum RPCMethods {
    package static let all: [any RPCMethod.Type] = [
        DeviceStatus.self, DeviceRetry.self, DeviceList.self, FleetStatus.self, FleetRisk.self,
        CampaignCreate.self, CampaignList.self, CampaignStatus.self, CampaignPause.self, CampaignResume.self,
        CampaignAbort.self, AuditList.self,
    ]
    package static let byName: [String: any RPCMethod.Type] = Dictionary(
        uniqueKeysWithValues: all.map { ($0.name, $0) })
    /// Methods that change stored state.
    package static let mutating: Set<String> = Set(all.filter { $0.mutates }.map { $0.name })
}

extension RPC {
    /// A method's result as the JSON text of the reply's `result`, written once: the reply is spliced around it
    /// (``Response``), not parsed back and written again (#35 §3).
    struct EncodedResult {
        let json: [UInt8]
    }

    /// A method's typed result as the JSON text of the reply (sorted keys, as ever).
    static func encode<R: Encodable>(_ result: R) throws -> EncodedResult {
        EncodedResult(json: Array(try resultEncoder.encode(result)))
    }

    /// A JSON-RPC 2.0 response: `{"id":…,"jsonrpc":"2.0","result":…}` or `{"error":…,"id":…,"jsonrpc":"2.0"}`,
    /// keys in sorted order.
    enum Response {
        case result(id: Any, EncodedResult)
        case error(id: Any, RPCError)

        var bytes: [UInt8] {
            switch self {
            case .result(let id, let result):
                // The id (a string, a number or null) written as the one element of an array, brackets dropped:
                // JSONSerialization stops the process on a top-level value that is not a collection.
                let idText =
                    (try? JSONSerialization.data(withJSONObject: [id], options: [.withoutEscapingSlashes]))
                    .map { Array($0.dropFirst().dropLast()) } ?? Array("null".utf8)
                return Array(#"{"id":"#.utf8) + idText + Array(#","jsonrpc":"2.0","result":"#.utf8) + result.json
                    + [UInt8(ascii: "}")]
            case .error(let id, let failure):
                let response: [String: Any] = ["jsonrpc": "2.0", "id": id, "error": failure.json]
                return
                    (try? JSONSerialization.data(
                        withJSONObject: response, options: [.sortedKeys, .withoutEscapingSlashes])).map(Array.init)
                    ?? Array(#"{"error":{"code":-32603,"message":"internal error"},"id":null,"jsonrpc":"2.0"}"#.utf8)
            }
        }
    }

    private static let resultEncoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
}

/// Reading `params` members with the messages of docs/protocol.md §8.
struct ParamsReader {
    let params: [String: Any]

    init(_ params: [String: Any]) { self.params = params }

    /// Refuses a member not in `allowed`.
    func only(_ allowed: Set<String>) throws(RPCError) {
        if let unknown = params.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw RPCError(code: .invalidParams, message: "unknown parameter '\(unknown.prefix(64))'")
        }
    }

    func has(_ key: String) -> Bool { params[key] != nil }

    /// An optional string; present and not a string is `message`.
    func string(_ key: String, else message: String) throws(RPCError) -> String? {
        guard let value = params[key] else { return nil }
        guard let text = value as? String else { throw RPCError(code: .invalidParams, message: message) }
        return text
    }

    /// An optional integer below 2^53 in magnitude; present and not one is `message`.
    func int(_ key: String, else message: String) throws(RPCError) -> Int64? {
        guard let value = params[key] else { return nil }
        guard let number = Params.int(value) else { throw RPCError(code: .invalidParams, message: message) }
        return number
    }
}

/// A JSON value carried through as it is (a campaign's `select`, as created).
package enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}
