import CertrotCore
import CertrotMQTT
import Foundation
import Synchronization

/// A request made inside the daemon (the HTTP API): the call its reply goes back to, and the name of the HTTP
/// token its caller presented (`http.tokens`), which stands in for an operator's signature and is recorded as the
/// operator. Nil: no token (a read on a loopback listener).
package struct LocalOrigin: Sendable {
    package var call: UUID
    package var token: String?
}

/// JSON-RPC requests made inside the daemon waiting for their replies. The engine answers one after the batch it
/// came in has committed, as it publishes an MQTT reply: a caller sees its request's effect once it has its reply.
package final class LocalCalls: Sendable {
    private let waiting = Mutex<[UUID: CheckedContinuation<[UInt8]?, Never>]>([:])

    package init() {}

    /// Runs `submit` with a new call and waits for its reply: the JSON-RPC response, or nil after `timeout` (the
    /// engine is waiting for the store, say).
    func call(timeout: Duration, submit: (LocalOrigin) -> Void, token: String?) async -> [UInt8]? {
        let id = UUID()
        let timer = Task { [self] in
            try? await Task.sleep(for: timeout)
            resume(id, with: nil)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            waiting.withLock { $0[id] = continuation }
            submit(LocalOrigin(call: id, token: token))
        }
    }

    /// Hands a reply of kind ``Outbound/Kind/local(_:)`` to its call (gone if it timed out). Always true: the item
    /// is done with.
    func finish(_ item: Outbound) -> Bool {
        if case .local(let id) = item.kind { resume(id, with: item.payload) }
        return true
    }

    private func resume(_ id: UUID, with reply: [UInt8]?) {
        waiting.withLock { $0.removeValue(forKey: id) }?.resume(returning: reply)
    }
}

extension Outbound.Kind {
    var isLocal: Bool {
        if case .local = self { true } else { false }
    }
}

/// The JSON-RPC methods for the HTTP API: reads (``ReadOnlyRPC/methods``) answered beside the engine in a read
/// transaction, everything else by the engine, ahead of queued device messages as an MQTT request is.
package final class LocalRPC: Sendable {
    /// What a call came to: the method's `result` (JSON), its error, or no answer in time.
    package enum Reply: Sendable {
        case result(Data)
        case error(code: Int, message: String, data: Data?)
        case unavailable(String)
    }

    let reads: ReadOnlyRPC
    let calls: LocalCalls
    let submit: @Sendable (EngineInput) -> Void
    let timeout: Duration

    init(
        reads: ReadOnlyRPC, calls: LocalCalls, timeout: Duration = .seconds(15),
        submit: @escaping @Sendable (EngineInput) -> Void
    ) {
        self.reads = reads
        self.calls = calls
        self.timeout = timeout
        self.submit = submit
    }

    /// Calls `method` with `params` on behalf of the holder of `token` (its name; nil: none presented).
    package func call(_ method: String, params: [String: Any] = [:], token: String?) async -> Reply {
        let request: [String: Any] = ["jsonrpc": "2.0", "id": 1, "method": method, "params": params]
        guard let bytes = try? JSONSerialization.data(withJSONObject: request, options: [.sortedKeys]) else {
            return .error(code: RPCError.Code.invalidParams.rawValue, message: "params are not JSON", data: nil)
        }
        let reply: [UInt8]?
        if ReadOnlyRPC.methods.contains(method) {
            reply = await reads.answer(Array(bytes), origin: LocalOrigin(call: UUID(), token: token))
        } else {
            reply = await calls.call(
                timeout: timeout, submit: { [submit] origin in submit(.local(Array(bytes), origin)) }, token: token)
        }
        guard let reply else { return .unavailable("no answer within \(timeout): the store may be unavailable") }
        return Self.parse(reply)
    }

    static func parse(_ reply: [UInt8]) -> Reply {
        guard let object = try? JSONSerialization.jsonObject(with: Data(reply)) as? [String: Any] else {
            return .error(code: RPCError.Code.internalError.rawValue, message: "unreadable reply", data: nil)
        }
        if let error = object["error"] as? [String: Any] {
            let data = error["data"].flatMap { try? JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys]) }
            return .error(
                code: error["code"] as? Int ?? RPCError.Code.internalError.rawValue,
                message: error["message"] as? String ?? "error", data: data)
        }
        let result = object["result"] ?? NSNull()
        guard let data = try? JSONSerialization.data(withJSONObject: result, options: [.fragmentsAllowed, .sortedKeys])
        else {
            return .error(code: RPCError.Code.internalError.rawValue, message: "unreadable result", data: nil)
        }
        return .result(data)
    }
}
