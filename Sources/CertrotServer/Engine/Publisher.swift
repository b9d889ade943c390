import CertrotMQTT

/// Where the engine's publishes and subscriptions go: libmosquitto in the daemon (``MQTTClient``), a recording
/// publisher in `EngineHarness`. A publish returns the message id whose PUBACK comes back to the engine as
/// `.published(mid:reasonCode:)`.
package protocol Publisher: AnyObject, Sendable {
    func publish(
        topic: String, payload: [UInt8], qos: Int32, retain: Bool, responseTopic: String?, correlationData: [UInt8]?
    ) throws -> Int32
    @discardableResult func subscribe(_ filters: [String], qos: Int32) throws -> Int32
    func unsubscribe(_ filters: [String]) throws
}

extension MQTTClient: Publisher {}
