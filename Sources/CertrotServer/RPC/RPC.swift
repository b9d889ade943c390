import CertrotCore
import CertrotMQTT
import Foundation
import Logging

/// What fleet figures need to know of a target's auto-renewal.
struct RenewalInfo: Sendable {
    var before: Int64
    var hasSuccessor: Bool
}

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
        /// Operators' public keys; when any are configured, mutating methods need a signed request.
        var operators: [VerificationKey]
        /// kid → the operator's configured name.
        var operatorNames: [String: String] = [:]
        var now: Int64
        var renewal: [String: RenewalInfo] = [:]
        /// Where replies may go (config `rpc.replyPrefix`).
        var replyPrefix = RPC.defaultReplyPrefix
        /// With operators configured: every method, reads included, needs a signed request (`rpc.signedReads`).
        var signedReads = false
        /// Ids of the campaigns the engine knows (device.list's `campaign` filter, answered beside the engine).
        var campaignIDs: Set<String> = []
        /// `clientCerts` policies, with the issuer each names.
        var clientCertPolicies: [(policy: ClientIdentityStatus.Policy, issuer: String)] = []
        /// `fleet.status` as last snapshotted (``ReadOnlyRPC/snapshotInterval``): answered instead of reading the
        /// store.
        var fleetSnapshot: FleetStatus.Result?
    }

    /// Replies go only to topics under this prefix unless configured otherwise: the shipped ACL lets operators
    /// read there, and nothing the daemon or a device owns lives under it.
    static let defaultReplyPrefix = "certrot/replies/"

    /// Per configured target: devices whose credential in the tag is due for renewal (expires within
    /// `renewBefore`) while nothing newer is configured — no successor, and the target chain itself expires
    /// within `renewBefore` (otherwise the target is what those devices are rotated to).
    static func expiringWithoutSuccessor(
        tx: any StoreTransaction, targets: [ResolvedTarget], renewal: [String: RenewalInfo], now: Int64
    ) throws -> [String: Int] {
        var result: [String: Int] = [:]
        for target in targets {
            guard let info = renewal[target.name], !info.hasSuccessor, target.chain.notAfter < now + info.before else {
                result[target.name] = 0
                continue
            }
            result[target.name] = try tx.expiryHistogram(limits: [now + info.before])[target.name]?.first ?? 0
        }
        return result
    }

    static let day: Int64 = 86400

    /// Devices by days left on the credential in each target tag: expired, < 7 d, < 30 d, < 90 d, later.
    static func expiryBuckets(
        tx: any StoreTransaction, targets: [ResolvedTarget], now: Int64
    ) throws -> FleetStatus.Result.Expiry {
        let histogram = try tx.expiryHistogram(limits: [now, now + 7 * day, now + 30 * day, now + 90 * day])
        var fleet = [0, 0, 0, 0, 0]
        var perTarget: [String: FleetStatus.Result.Buckets] = [:]
        for target in targets {
            let c = histogram[target.name] ?? [0, 0, 0, 0, 0]
            let buckets = [c[0], c[1] - c[0], c[2] - c[1], c[3] - c[2], c[4] - c[3]]
            for index in buckets.indices { fleet[index] += buckets[index] }
            perTarget[target.name] = self.buckets(buckets)
        }
        return FleetStatus.Result.Expiry(fleet: buckets(fleet), targets: perTarget)
    }

    private static func buckets(_ b: [Int]) -> FleetStatus.Result.Buckets {
        FleetStatus.Result.Buckets(expired: b[0], lt7d: b[1], lt30d: b[2], lt90d: b[3], later: b[4])
    }

    /// Accepted distance between a signed request's `iat` and the daemon's clock.
    static let authWindow: Int64 = 120
    static let requestType = "certrot-rpc+jwt"

    static let maxRequestBytes = 64 * 1024

    /// A request's JSON or JWS form, from its first byte that is not white space: `{` (or `[`, a batch, refused
    /// as an invalid request) is JSON; anything else is read as a JWS.
    static func isJSONText(_ payload: [UInt8]) -> Bool {
        guard let first = payload.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) else { return true }
        return first == UInt8(ascii: "{") || first == UInt8(ascii: "[")
    }

    /// What a method handler outside this file returns.
    enum HandlerResult {
        /// A method's result, encoded (``RPC/encode(_:)``).
        case value(EncodedResult)
        /// Answered later (after the batch commits), through ``reply(to:result:drops:)``.
        case deferred
    }

    /// A request whose answer comes after the batch (campaign.create runs async checks).
    struct Deferred {
        var method: String
        var params: [String: Any]
        var id: Any
        var isNotification: Bool
        var replyTopic: String?
        var correlationData: [UInt8]?
        var signedBy: String?
        var replyPrefix: String
        /// Made inside the daemon (the HTTP API): answered to that call, not on MQTT.
        var local: LocalOrigin?
    }

    typealias Handler = (_ method: String, _ params: [String: Any], _ tx: any StoreTransaction) throws -> HandlerResult?

    /// Handles one request; devices whose rotations it reset are appended to `reissue`. Methods the built-in
    /// ones do not cover go to `handler` (campaigns); a deferred one is appended to `deferred`.
    /// A record of an operator's request that changes state: the method, who asked (the operator's name in the
    /// config and the kid of the key that signed it; "unsigned" when no operators are configured; "config" for a
    /// campaign the config file declares), a digest of its params (not the params: a campaign's chains are large,
    /// and the store keeps what they changed), and the result.
    /// `token`: the request came over HTTP with this token (its configured name is the operator; `via` is `http`).
    static func auditRequest(
        method: String, signedBy: String?, names: [String: String], origin: String? = nil, token: String? = nil,
        params: [String: Any], result: String, at: Int64, tx: any StoreTransaction
    ) throws {
        let canonical =
            (try? JSONSerialization.data(withJSONObject: params, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data()
        var body: [String: Any] = [
            "operator": origin ?? token ?? signedBy.map { names[$0] ?? $0 } ?? "unsigned",
            "params": Hex.sha256(Array(canonical)), "result": result,
        ]
        body["kid"] = signedBy
        if token != nil { body["via"] = "http" }
        try tx.audit(.operatorRequest, at: at, subject: method, body: body)
    }

    /// `local`: the request was made inside the daemon (the HTTP API), which authenticated its caller; the reply
    /// is an ``Outbound`` of kind ``Outbound/Kind/local(_:)`` for that call.
    static func handle(
        _ message: MQTTMessage, context: Context, tx: any StoreTransaction, reissue: inout [String],
        deferred: inout [Deferred], local: LocalOrigin? = nil, handler: Handler
    ) -> Outbound? {
        var replyTopic = message.responseTopic.flatMap { isValidReplyTopic($0, prefix: context.replyPrefix) ? $0 : nil }
        let token = local?.token
        var id: Any = NSNull()
        var isNotification = false
        let response: Response
        // Set once a request that changes state passed its authorisation: what it did goes into the audit log.
        var audited: (method: String, signedBy: String?, token: String?, params: [String: Any])?
        do {
            guard message.payload.count <= maxRequestBytes else {
                throw RPCError(
                    code: .invalidRequest,
                    message: "request is \(message.payload.count) bytes; at most \(maxRequestBytes)")
            }
            // A request is a JSON object, or a JWS (typ certrot-rpc+jwt) whose payload is that object.
            var body = message.payload
            var signedBy: String?
            var authFailure: RPCError?
            if !isJSONText(body), local == nil {
                let text = String(decoding: body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                do {
                    let verified = try JWS.verify(text, typ: requestType, keys: context.operators)
                    signedBy = verified.kid
                    body = verified.payload
                } catch {
                    authFailure = RPCError(code: .unauthorized, message: "signed request refused: \(error.message)")
                    // Still read the (unverified) payload, only to find where to send the refusal.
                    let pieces = text.split(separator: ".")
                    body = pieces.count == 3 ? Base64URL.decode(pieces[1]) ?? [] : []
                }
            }
            guard let object = try? JSONSerialization.jsonObject(with: Data(body)) else {
                throw RPCError(code: .parse, message: "request is not valid JSON")
            }
            guard let request = object as? [String: Any] else {
                let what =
                    object is [Any]
                    ? "batch requests are not supported; send one request per message" : "request must be a JSON object"
                throw RPCError(code: .invalidRequest, message: what)
            }
            if replyTopic == nil, let replyTo = request["reply_to"] as? String,
                isValidReplyTopic(replyTo, prefix: context.replyPrefix)
            {
                replyTopic = replyTo
            }
            if let requestID = request["id"], requestID is String || requestID is NSNumber { id = requestID }
            if let authFailure { throw authFailure }
            if signedBy != nil {
                // Both bounded before they meet: `iat` as the protocol allows (an integer within Bounds.times).
                guard let iat = Params.int(request["iat"]), Bounds.times.contains(iat),
                    Bounds.times.contains(context.now),
                    abs(iat - context.now) <= authWindow
                else {
                    throw RPCError(
                        code: .unauthorized,
                        message: "signed request refused: iat missing or more than \(authWindow) s from now")
                }
                guard let jti = request["jti"] as? String, !jti.isEmpty, jti.utf8.count <= 64 else {
                    throw RPCError(code: .unauthorized, message: "signed request refused: jti (1…64 bytes) is required")
                }
                guard try tx.rememberRequest(jti: jti, at: context.now, forgetBefore: context.now - 2 * authWindow)
                else {
                    throw RPCError(
                        code: .unauthorized, message: "signed request refused: jti \(jti) was already used (replay)")
                }
            }
            if let requestID = request["id"], requestID is String || requestID is NSNumber { id = requestID }
            // JSON-RPC 2.0 §4.1: a request without an id is a notification and gets no reply.
            isNotification = request["id"] == nil
            guard request["jsonrpc"] as? String == "2.0" else {
                throw RPCError(code: .invalidRequest, message: "jsonrpc must be \"2.0\"")
            }
            guard let method = request["method"] as? String else {
                throw RPCError(code: .invalidRequest, message: "method must be a string")
            }
            let params = request["params"] as? [String: Any] ?? [:]
            if request["params"] != nil, !(request["params"] is [String: Any]) {
                throw RPCError(code: .invalidParams, message: "params must be an object")
            }
            if context.signedReads, !context.operators.isEmpty, signedBy == nil, token == nil {
                throw RPCError(
                    code: .unauthorized,
                    message: "this daemon answers only requests signed by an operator key (rpc.signedReads)")
            }
            guard RPCMethods.byName[method] != nil else {
                throw RPCError(code: .methodNotFound, message: "unknown method '\(method)'")
            }
            if RPCMethods.mutating.contains(method), local != nil, token == nil {
                throw RPCError(code: .unauthorized, message: "\(method) changes state and needs an HTTP token")
            }
            if RPCMethods.mutating.contains(method), !context.operators.isEmpty, signedBy == nil, token == nil {
                throw RPCError(
                    code: .unauthorized,
                    message:
                        "\(method) changes state and needs a request signed by an operator key (certrot --operator-key)"
                )
            }
            if RPCMethods.mutating.contains(method) { audited = (method, signedBy, token, params) }
            let result: EncodedResult
            switch method {
            case DeviceStatus.name:
                result = try encode(deviceStatus(DeviceStatus.params(params), context: context, tx: tx))
            case FleetRisk.name:
                let risk = try tx.strandedRisk(now: context.now, limit: FleetRisk.params(params).limit)
                result = try encode(FleetRisk.result(risk, targets: context.targets.map(\.name), now: context.now))
            case FleetStatus.name:
                result = try encode(context.fleetSnapshot ?? fleetStatus(context: context, tx: tx))
            case DeviceRetry.name:
                result = try encode(
                    deviceRetry(DeviceRetry.params(params), context: context, tx: tx, reissue: &reissue))
            case DeviceList.name:
                result = try encode(deviceList(DeviceList.params(params), context: context, tx: tx))
            case AuditList.name:
                result = try encode(auditList(AuditList.params(params), tx: tx))
            default:
                switch try handler(method, params, tx) {
                case .value(let value): result = value
                case .deferred:
                    audited = nil  // recorded when it is answered
                    deferred.append(
                        Deferred(
                            method: method, params: params, id: id, isNotification: isNotification,
                            replyTopic: replyTopic, correlationData: message.correlationData, signedBy: signedBy,
                            replyPrefix: context.replyPrefix, local: local))
                    return nil
                case nil: throw RPCError(code: .methodNotFound, message: "unknown method '\(method)'")
                }
            }
            if let who = signedBy ?? token, RPCMethods.mutating.contains(method) {
                context.logger.notice("operator request", metadata: ["method": "\(method)", "operator": "\(who)"])
            }
            if let audited {
                try auditRequest(
                    method: audited.method, signedBy: audited.signedBy, names: context.operatorNames,
                    token: audited.token, params: audited.params, result: "ok",
                    at: context.now, tx: tx)
            }
            response = .result(id: id, result)
        } catch let failure as RPCError {
            if let audited {
                try? auditRequest(
                    method: audited.method, signedBy: audited.signedBy, names: context.operatorNames,
                    token: audited.token, params: audited.params,
                    result: "error \(failure.code.rawValue)", at: context.now, tx: tx)
            }
            response = .error(id: id, failure)
        } catch let refusal as Refusal {
            if let audited {
                try? auditRequest(
                    method: audited.method, signedBy: audited.signedBy, names: context.operatorNames,
                    token: audited.token, params: audited.params,
                    result: "refused \(refusal.reason)", at: context.now, tx: tx)
            }
            response = .error(id: id, RPCError(refusal))
        } catch {
            // Store errors stay in the daemon's log; the caller learns only that it failed.
            context.logger.error("rpc failed", metadata: ["error": "\(error)"])
            response = .error(id: id, .internalFailure)
        }
        if let local { return localReply(response, call: local.call) }
        return outbound(
            response, isNotification: isNotification, replyTopic: replyTopic, correlationData: message.correlationData,
            drops: context.drops, replyPrefix: context.replyPrefix)
    }

    /// The reply to a request made inside the daemon: the JSON-RPC response, for ``LocalCalls`` to hand back.
    static func localReply(_ response: Response, call: UUID) -> Outbound {
        Outbound(topic: "", payload: response.bytes, kind: .local(call), urgent: true)
    }

    /// The reply to a deferred request.
    static func reply(to request: Deferred, result: Result<EncodedResult, RPCError>, drops: DropCounters) -> Outbound? {
        let response: Response =
            switch result {
            case .success(let value): .result(id: request.id, value)
            case .failure(let failure): .error(id: request.id, failure)
            }
        if let local = request.local { return localReply(response, call: local.call) }
        return outbound(
            response, isNotification: request.isNotification, replyTopic: request.replyTopic,
            correlationData: request.correlationData, drops: drops, replyPrefix: request.replyPrefix)
    }

    private static func outbound(
        _ response: Response, isNotification: Bool, replyTopic: String?, correlationData: [UInt8]?,
        drops: DropCounters, replyPrefix: String
    ) -> Outbound? {
        if isNotification { return nil }
        guard let topic = replyTopic, isValidReplyTopic(topic, prefix: replyPrefix) else {
            drops.count("rpc_no_reply_topic")
            return nil
        }
        return Outbound(
            topic: topic, payload: response.bytes, kind: .other, responseTopic: nil, correlationData: correlationData,
            urgent: true)
    }

    /// Starts settled failures (`rejected`, or `failed`/`timed_out` with no retry left) of a device over: attempts
    /// back to 0, a new bundle issued. `params.target` limits it to one target.
    static func deviceRetry(
        _ params: DeviceRetry.Params, context: Context, tx: any StoreTransaction, reissue: inout [String]
    ) throws -> DeviceRetry.Result {
        let (id, only) = (params.device, params.target)
        try tx.lockDevice(id)
        guard try tx.device(id) != nil else {
            throw RPCError(code: .unknownDevice, message: "device '\(id)' has not been seen")
        }
        var retried: [String] = []
        for var rotation in try tx.rotations(device: id) where only == nil || rotation.target.description == only {
            let settledFailure =
                rotation.state == .rejected
                || ((rotation.state == .failed || rotation.state == .timedOut) && rotation.nextAttemptAt == nil)
            guard settledFailure else { continue }
            rotation.restart(sha256: rotation.sha256, now: context.now)
            try tx.saveRotation(rotation)
            try tx.appendHistory(
                device: id,
                entry: HistoryEntry(
                    at: context.now, target: rotation.target.description, state: rotation.state.rawValue, jti: nil,
                    detail: "retried by an operator"))
            retried.append(rotation.target.description)
        }
        if !retried.isEmpty { reissue.append(id) }
        return DeviceRetry.Result(device: id, retried: retried)
    }

    /// A topic a reply may go to: under `prefix`, no wildcard or NUL, at most 1024 bytes, and none that the daemon
    /// or a device owns (a device's bundle, ack or inventory topic, a campaign's status, `certrot/rpc`) whatever the
    /// prefix: a request must not be able to put fleet data into a device's bundle topic.
    static func isValidReplyTopic(_ topic: String, prefix: String) -> Bool {
        let bytes = topic.utf8
        guard bytes.count > prefix.utf8.count, bytes.count <= 1024, bytes.starts(with: prefix.utf8) else {
            return false
        }
        guard !bytes.contains(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") || $0 == 0 }) else {
            return false
        }
        return Topics.classify(topic) == nil && !topic.hasPrefix("certrot/campaigns/")
    }

    static func deviceStatus(
        _ params: DeviceStatus.Params, context: Context, tx: any StoreTransaction
    ) throws -> DeviceStatus.Result {
        let id = params.device
        let withIssued = !context.clientCertPolicies.isEmpty
        guard let view = try tx.deviceView(id, historyLimit: 50, issued: withIssued) else {
            throw RPCError(code: .unknownDevice, message: "device '\(id)' has not been seen")
        }
        let device = view.record
        var names: [String: (name: String, notAfter: Int64)] = context.catalogue
        for target in context.targets { names[target.sha256] = (target.name, target.chain.notAfter) }
        let creds = (device.inventory?.creds ?? []).map { cred in
            let known = names[cred.sha256]
            return DeviceStatus.Result.Credential(
                tag: cred.tag, type: cred.type, sha256: cred.sha256, name: known?.name,
                notAfter: cred.notAfter ?? known?.notAfter, serial: cred.serial)
        }
        let rotations = view.rotations.map { r in
            DeviceStatus.Result.RotationEntry(
                target: r.target.description, sha256: r.sha256, state: r.state.rawValue, attempts: r.attempts,
                createdAt: r.createdAt, updatedAt: r.updatedAt, jti: r.jti, seq: r.seq, lastError: r.lastError,
                nextAttemptAt: r.nextAttemptAt, sentAt: r.sentAt, appliedAt: r.appliedAt, verifiedAt: r.verifiedAt)
        }
        var result = DeviceStatus.Result(
            device: id, firstSeen: device.firstSeen, lastSeen: device.lastSeen, issuedSeq: device.issuedSeq,
            reportedSeq: device.inventory?.seq, keys: device.inventory?.keys, maxMessage: device.inventory?.maxMessage,
            inventory: creds, rotations: rotations, history: view.history)
        if withIssued {
            let issued = view.issued
            result.clientCertificate = ClientIdentityStatus.of(
                inventory: device.inventory, issued: { issued }, policies: context.clientCertPolicies.map(\.policy),
                now: context.now)
            result.issuedCertificates = issued.map(IssuedCertificateEntry.init)
            if context.clientCertPolicies.contains(where: \.policy.learnsIdentity) {
                result.learnedIdentity = try tx.learnedIdentity(device: id).map(DeviceStatus.LearnedIdentityEntry.init)
            }
        }
        return result
    }

    /// Counts by state for each target and for the fleet. `in_sync`: devices that held the target when first seen
    /// and never needed a rotation. Fleet-wide figures add the targets up ((device, target) pairs).
    static func fleetStatus(context: Context, tx: any StoreTransaction) throws -> FleetStatus.Result {
        let devices = try tx.deviceCount()
        let counts = try tx.rotationCounts()
        var fleet: [String: Int] = Dictionary(uniqueKeysWithValues: fleetStates.map { ($0, 0) })
        var perTarget: [String: FleetStatus.Result.Target] = [:]
        for target in context.targets {
            var states: [String: Int] = Dictionary(uniqueKeysWithValues: fleetStates.map { ($0, 0) })
            for (state, count) in counts[target.name] ?? [:] { states[state, default: 0] += count }
            states["in_sync"] = max(0, devices - (counts[target.name] ?? [:]).values.reduce(0, +))
            for (state, count) in states { fleet[state, default: 0] += count }
            perTarget[target.name] = FleetStatus.Result.Target(tag: target.tag, sha256: target.sha256, states: states)
        }
        var signing = FleetStatus.Result.Signing(kid: context.signerKid)
        if let next = context.nextKid {
            let trusting = try tx.deviceCount(trustingKey: next)
            let share = devices == 0 ? 0 : Double(trusting) / Double(devices)
            var states: [String: Int] = Dictionary(
                uniqueKeysWithValues: RotationState.allCases.map { ($0.rawValue, 0) })
            for (state, count) in counts[RotationTarget.signingKey.description] ?? [:] {
                states[state, default: 0] += count
            }
            signing.next = FleetStatus.Result.NextKey(
                kid: next, devicesTrusting: trusting, share: share, threshold: context.keyRotationThreshold,
                ready: share >= context.keyRotationThreshold, states: states)
        }
        // Campaign rotations, all campaigns together (per campaign: campaign.status). Answered without the engine's
        // campaign state, so that it stays a plain read.
        var campaignStates: [String: Int] = Dictionary(
            uniqueKeysWithValues: RotationState.allCases.map { ($0.rawValue, 0) })
        for (target, byState) in counts where RotationTarget(target).campaignID != nil {
            for (state, count) in byState { campaignStates[state, default: 0] += count }
        }
        var result = FleetStatus.Result(
            devices: devices, states: fleet, targets: perTarget, dropped: context.drops.snapshot,
            campaignStates: campaignStates, signing: signing,
            expiry: try expiryBuckets(tx: tx, targets: context.targets, now: context.now),
            expiringWithoutSuccessor: try expiringWithoutSuccessor(
                tx: tx, targets: context.targets, renewal: context.renewal, now: context.now))
        if !context.clientCertPolicies.isEmpty {
            let issued = try tx.issuedCounts()
            var clientCerts: [String: FleetStatus.Result.ClientCerts] = [:]
            for (policy, issuer) in context.clientCertPolicies {
                var states = Dictionary(uniqueKeysWithValues: RotationState.allCases.map { ($0.rawValue, 0) })
                states.merge(counts[RotationTarget.clientCert(policy.name).description] ?? [:], uniquingKeysWith: +)
                var certificates = Dictionary(
                    uniqueKeysWithValues: IssuedCertificate.State.allCases.map { ($0.rawValue, 0) })
                certificates.merge(issued[issuer] ?? [:], uniquingKeysWith: +)
                clientCerts[policy.name] = .init(states: states, issuer: issuer, certificates: certificates)
            }
            result.clientCerts = clientCerts
        }
        return result
    }

    static let fleetStates = RotationState.allCases.map(\.rawValue) + ["in_sync"]
}
