import CertrotCore
import Foundation
import Logging

/// Something to publish once the transaction that decided it has committed.
package struct Outbound {
    package enum Kind: Equatable {
        /// First transmission of a part: its PUBACK counts towards `sent`.
        case part(jti: String)
        /// A re-sent part or an RPC reply.
        case other
        /// The reply to a request made inside the daemon (the HTTP API): handed to ``LocalCalls``, never published.
        case local(UUID)
    }

    package var topic: String
    package var payload: [UInt8]
    package var kind: Kind
    package var responseTopic: String?
    package var correlationData: [UInt8]?
    package var retain = false
    /// JSON-RPC replies go out ahead of queued bundle parts (an operator's status call must not wait for a
    /// campaign's backlog).
    package var urgent = false

    package init(
        topic: String, payload: [UInt8], kind: Kind, responseTopic: String? = nil, correlationData: [UInt8]? = nil,
        retain: Bool = false, urgent: Bool = false
    ) {
        self.topic = topic
        self.payload = payload
        self.kind = kind
        self.responseTopic = responseTopic
        self.correlationData = correlationData
        self.retain = retain
        self.urgent = urgent
    }
}

/// Delivery to the broker: publishes in order behind a window of at most `maxInflight` publishes awaiting
/// their PUBACK, replies ahead of the queue, and tells when every first-transmission part of a bundle has been
/// acknowledged by the broker (its rotations are then `sent`). In memory only: after a restart the engine re-sends
/// undelivered bundles from the store.
package final class Delivery {
    let maxInflight: Int
    /// What each publish awaiting its PUBACK is, and the device a bundle part goes to.
    private var inflight: [Int32: (kind: Outbound.Kind, device: String?)] = [:]
    /// Per jti: first-transmission parts queued or in flight.
    private var undelivered: [String: Int] = [:]
    private var backlog: [Outbound] = []
    private var backlogHead = 0
    private var urgent: [Outbound] = []
    private let logger: Logger
    var partPublished: () -> Void = {}
    /// Where replies to requests made inside the daemon (the HTTP API) go instead of the broker.
    package let localCalls = LocalCalls()

    package init(maxInflight: Int, logger: Logger) {
        self.maxInflight = maxInflight
        self.logger = logger
    }

    /// Publishes queued behind the in-flight window: campaign admission holds back while this is large, so that a
    /// bundle does not wait in the queue long enough to time out before it reaches the broker.
    package var queued: Int { backlog.count - backlogHead }
    /// Publishes handed to the broker and not yet acknowledged.
    package var inFlight: Int { inflight.count }

    package func enqueue(_ item: Outbound) {
        if case .part(let jti) = item.kind { undelivered[jti, default: 0] += 1 }
        if item.urgent {
            urgent.append(item)
        } else {
            backlog.append(item)
        }
    }

    /// Publishes replies first (outside the window: there are few, and each is waited for by someone) through
    /// `replies` (the RPC connection, when there is one, else `client`), then the backlog while fewer than
    /// `maxInflight` publishes await their PUBACK.
    package func flush(client: any Publisher, replies: ((Outbound) -> Bool)? = nil) {
        while let item = urgent.first,
            (item.kind.isLocal ? localCalls.finish(item) : replies?(item) ?? publish(item, with: client))
        {
            urgent.removeFirst()
        }
        while backlogHead < backlog.count, inflight.count < maxInflight, publish(backlog[backlogHead], with: client) {
            backlogHead += 1
        }
        if backlogHead > 4096, backlogHead * 2 > backlog.count {
            backlog.removeFirst(backlogHead)
            backlogHead = 0
        }
    }

    /// The device a bundle part awaiting this PUBACK goes to (nil for anything else): what a batch with the
    /// PUBACK locks and reads ahead.
    package func device(mid: Int32) -> String? { inflight[mid]?.device }

    /// A PUBACK: returns the jti of a bundle whose first-transmission parts have now all reached the broker.
    package func published(mid: Int32, reasonCode: Int32) -> String? {
        guard let kind = inflight.removeValue(forKey: mid)?.kind, case .part(let jti) = kind else { return nil }
        if reasonCode >= 0x80 {
            logger.error("broker refused a bundle part", metadata: ["jti": "\(jti)", "reason": "\(reasonCode)"])
            return nil
        }
        guard let remaining = undelivered[jti] else { return nil }
        if remaining > 1 {
            undelivered[jti] = remaining - 1
            return nil
        }
        undelivered[jti] = nil
        return jti
    }

    /// Hands one item to libmosquitto; false (logged) when it could not take it now.
    private func publish(_ item: Outbound, with client: any Publisher) -> Bool {
        do {
            let mid = try client.publish(
                topic: item.topic, payload: item.payload, qos: 1, retain: item.retain,
                responseTopic: item.responseTopic, correlationData: item.correlationData)
            var device: String?
            if case .part = item.kind, case .bundle(let to) = Topics.classify(item.topic) { device = to }
            inflight[mid] = (item.kind, device)
            if case .part = item.kind { partPublished() }
            return true
        } catch {
            logger.warning("publish failed; will retry", metadata: ["topic": "\(item.topic)", "error": "\(error)"])
            return false
        }
    }
}
