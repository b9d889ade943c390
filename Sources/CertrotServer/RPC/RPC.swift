import CertrotCore
import CertrotMQTT
import Foundation
import Logging

/// JSON-RPC 2.0 on `certrot/rpc`. The reply goes to the request's MQTT 5 Response Topic (with its Correlation
/// Data) or, for MQTT 3.1.1 clients, to the topic in the request's `reply_to` member.
enum RPC {
    struct Context {
        var targets: [ResolvedTarget]
        var catalogue: [String: (name: String, notAfter: Int64)]
        var drops: DropCounters
        var logger: Logger
        var signerKid: String
        var nextKid: String?
        var keyRotationThreshold: Double
    }

    static let maxRequestBytes = 64 * 1024

    enum ErrorCode: Int {
        case parse = -32700
        case invalidRequest = -32600
        case methodNotFound = -32601
        case invalidParams = -32602
        case internalError = -32603
        case unknownDevice = -32004
    }

    struct Failure: Error {
        var code: ErrorCode
        var message: String
    }

    static func handle(_ message: MQTTMessage, context: Context, tx: any StoreTransaction) -> Outbound? {
        var replyTopic = message.responseTopic.flatMap { isValidReplyTopic($0) ? $0 : nil }
        var id: Any = NSNull()
        var isNotification = false
        let response: [String: Any]
        do {
            guard message.payload.count <= maxRequestBytes else {
                throw Failure(code: .invalidRequest, message: "request is \(message.payload.count) bytes; at most \(maxRequestBytes)")
            }
            guard let object = try? JSONSerialization.jsonObject(with: Data(message.payload)) else {
                throw Failure(code: .parse, message: "request is not valid JSON")
            }
            guard let request = object as? [String: Any] else {
                throw Failure(code: .invalidRequest, message: "request must be a JSON object")
            }
            if replyTopic == nil, let replyTo = request["reply_to"] as? String { replyTopic = replyTo }
            if let requestID = request["id"], requestID is String || requestID is NSNumber { id = requestID }
            // JSON-RPC 2.0 §4.1: a request without an id is a notification and gets no reply.
            isNotification = request["id"] == nil
            guard request["jsonrpc"] as? String == "2.0" else {
                throw Failure(code: .invalidRequest, message: "jsonrpc must be \"2.0\"")
            }
            guard let method = request["method"] as? String else {
                throw Failure(code: .invalidRequest, message: "method must be a string")
            }
            let params = request["params"] as? [String: Any] ?? [:]
            if request["params"] != nil, !(request["params"] is [String: Any]) {
                throw Failure(code: .invalidParams, message: "params must be an object")
            }
            let result: Any
            switch method {
            case "device.status": result = try deviceStatus(params: params, context: context, tx: tx)
            case "fleet.status": result = try fleetStatus(context: context, tx: tx)
            default: throw Failure(code: .methodNotFound, message: "unknown method '\(method)'")
            }
            response = ["jsonrpc": "2.0", "id": id, "result": result]
        } catch let failure as Failure {
            response = ["jsonrpc": "2.0", "id": id, "error": ["code": failure.code.rawValue, "message": failure.message]]
        } catch {
            // Store errors stay in the daemon's log; the caller learns only that it failed.
            context.logger.error("rpc failed", metadata: ["error": "\(error)"])
            response = [
                "jsonrpc": "2.0", "id": id,
                "error": ["code": ErrorCode.internalError.rawValue, "message": "internal error; see the daemon log"],
            ]
        }
        if isNotification { return nil }
        guard let topic = replyTopic, isValidReplyTopic(topic) else {
            context.drops.count("rpc_no_reply_topic")
            return nil
        }
        guard let payload = try? JSONSerialization.data(withJSONObject: response, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return nil }
        return Outbound(
            topic: topic, payload: Array(payload), kind: .other, responseTopic: nil,
            correlationData: message.correlationData)
    }

    static func isValidReplyTopic(_ topic: String) -> Bool {
        !topic.isEmpty && topic.utf8.count <= 1024 && !topic.contains("+") && !topic.contains("#")
            && !topic.hasPrefix("$") && !topic.contains("\u{0}") && topic != Topics.rpc
    }

    static func deviceStatus(params: [String: Any], context: Context, tx: any StoreTransaction) throws -> [String: Any] {
        guard let id = params["device"] as? String else {
            throw Failure(code: .invalidParams, message: "params.device (string) is required")
        }
        guard DeviceID.isValid(id) else { throw Failure(code: .invalidParams, message: DeviceID.problem(id)!) }
        guard let device = try tx.device(id) else {
            throw Failure(code: .unknownDevice, message: "device '\(id)' has not been seen")
        }
        var names: [String: (name: String, notAfter: Int64)] = context.catalogue
        for target in context.targets { names[target.sha256] = (target.name, target.chain.notAfter) }
        let creds: [[String: Any]] = (device.inventory?.creds ?? []).map { cred in
            var entry: [String: Any] = ["tag": cred.tag, "type": cred.type, "sha256": cred.sha256]
            let known = names[cred.sha256]
            if let name = known?.name { entry["name"] = name }
            if let notAfter = cred.notAfter ?? known?.notAfter { entry["notAfter"] = notAfter }
            if let serial = cred.serial { entry["serial"] = serial }
            return entry
        }
        let rotations: [[String: Any]] = try tx.rotations(device: id).map { r in
            var entry: [String: Any] = [
                "target": r.target, "sha256": r.sha256, "state": r.state.rawValue, "attempts": r.attempts,
                "createdAt": r.createdAt, "updatedAt": r.updatedAt,
            ]
            entry["jti"] = r.jti
            entry["seq"] = r.seq
            entry["lastError"] = r.lastError
            entry["nextAttemptAt"] = r.nextAttemptAt
            entry["sentAt"] = r.sentAt
            entry["appliedAt"] = r.appliedAt
            entry["verifiedAt"] = r.verifiedAt
            return entry
        }
        let history: [[String: Any]] = try tx.history(device: id, limit: 50).map { h in
            var entry: [String: Any] = ["at": h.at, "target": h.target, "state": h.state]
            entry["jti"] = h.jti
            entry["detail"] = h.detail
            return entry
        }
        var result: [String: Any] = [
            "device": id, "firstSeen": device.firstSeen, "lastSeen": device.lastSeen, "issuedSeq": device.issuedSeq,
            "inventory": creds, "rotations": rotations, "history": history,
        ]
        result["reportedSeq"] = device.inventory?.seq
        result["keys"] = device.inventory?.keys
        result["maxMessage"] = device.inventory?.maxMessage
        return result
    }

    /// Counts by state for each target and for the fleet. `in_sync`: devices that held the target when first seen
    /// and never needed a rotation. Fleet-wide figures add the targets up ((device, target) pairs).
    static func fleetStatus(context: Context, tx: any StoreTransaction) throws -> [String: Any] {
        let devices = try tx.deviceCount()
        let counts = try tx.rotationCounts()
        var fleet: [String: Int] = Dictionary(uniqueKeysWithValues: fleetStates.map { ($0, 0) })
        var perTarget: [String: Any] = [:]
        for target in context.targets {
            var states: [String: Int] = Dictionary(uniqueKeysWithValues: fleetStates.map { ($0, 0) })
            for (state, count) in counts[target.name] ?? [:] { states[state, default: 0] += count }
            states["in_sync"] = max(0, devices - (counts[target.name] ?? [:]).values.reduce(0, +))
            for (state, count) in states { fleet[state, default: 0] += count }
            perTarget[target.name] = ["tag": target.tag, "sha256": target.sha256, "states": states]
        }
        var signing: [String: Any] = ["kid": context.signerKid]
        if let next = context.nextKid {
            let trusting = try tx.deviceCount(trustingKey: next)
            let share = devices == 0 ? 0 : Double(trusting) / Double(devices)
            var states: [String: Int] = Dictionary(uniqueKeysWithValues: RotationState.allCases.map { ($0.rawValue, 0) })
            for (state, count) in counts[Engine.trustKeyTarget] ?? [:] { states[state, default: 0] += count }
            signing["next"] = [
                "kid": next, "devicesTrusting": trusting, "share": share, "threshold": context.keyRotationThreshold,
                "ready": share >= context.keyRotationThreshold, "states": states,
            ] as [String: Any]
        }
        return [
            "devices": devices, "states": fleet, "targets": perTarget, "dropped": context.drops.snapshot,
            "signing": signing,
        ]
    }

    static let fleetStates = RotationState.allCases.map(\.rawValue) + ["in_sync"]
}
