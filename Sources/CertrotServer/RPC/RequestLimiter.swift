import CertrotCore
import CertrotMQTT
import Foundation
import Synchronization

/// A rate limit on JSON-RPC requests, applied on the RPC connection's thread before a request is queued: per
/// requester and for all together. MQTT does not tell a subscriber who published, so a requester is its reply
/// topic (the Response Topic, else `reply_to`): what it must name to get an answer at all. A flood that varies its
/// reply topic still meets the total limit, and a request without a reply topic shares one bucket.
final class RequestLimiter: Sendable {
    private struct State {
        var requesters: [String: TokenBucket] = [:]
        var total: TokenBucket
    }

    private let state: Mutex<State>
    private let rate: Double
    private let burst: Double
    /// Requesters remembered; when full the table starts over (each requester then starts with a full burst).
    private let capacity = 10_000

    init(rate: Double, burst: Double, totalRate: Double) {
        self.rate = rate
        self.burst = burst
        state = Mutex(
            State(total: TokenBucket(rate: totalRate, now: Self.now(), capacity: max(burst, totalRate), full: true)))
    }

    /// True when `message` may be handled now; false when its requester, or all requesters together, are over
    /// their rate.
    func admit(_ message: MQTTMessage) -> Bool {
        let requester = Self.requester(of: message)
        let now = Self.now()
        return state.withLock { state in
            state.total.refill(now: now)
            var bucket = state.requesters[requester] ?? TokenBucket(rate: rate, now: now, capacity: burst, full: true)
            bucket.refill(now: now)
            guard bucket.available >= 1, state.total.available >= 1 else {
                state.requesters[requester] = bucket
                return false
            }
            bucket.take(1)
            state.total.take(1)
            if state.requesters.count >= capacity, state.requesters[requester] == nil { state.requesters = [:] }
            state.requesters[requester] = bucket
            return true
        }
    }

    static func requester(of message: MQTTMessage) -> String {
        if let topic = message.responseTopic { return topic }
        if RPC.isJSONText(message.payload), message.payload.count <= RPC.maxRequestBytes,
            let object = try? JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any],
            let replyTo = object["reply_to"] as? String
        {
            return replyTo
        }
        return ""
    }

    private static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
}
