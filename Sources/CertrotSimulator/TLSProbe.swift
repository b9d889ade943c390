import CertrotMQTT
import Foundation
import Logging
import Synchronization

/// A simulated device's `activate`: an MQTT connection over TLS with the certificate and key of the new sec tag,
/// to a listener that requires client certificates. True when the broker accepts it (CONNACK).
enum TLSProbe {
    static func connects(
        id: String, to listener: FleetOptions.IdentityListener, certificate: String, key: String, logger: Logger,
        timeout: Double = 5
    ) -> Bool {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("certrot-probe-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let certFile = dir.appendingPathComponent("cert.pem").path
            let keyFile = dir.appendingPathComponent("key.pem").path
            try certificate.write(toFile: certFile, atomically: true, encoding: .utf8)
            try key.write(toFile: keyFile, atomically: true, encoding: .utf8)
            var options = MQTTOptions(
                host: listener.host, port: listener.port, clientID: "\(id)-activate", protocolVersion: .v311)
            options.tls = MQTTTLSOptions(caFile: listener.caFile, certFile: certFile, keyFile: keyFile)
            let outcome = Mutex<Bool?>(nil)
            let done = DispatchSemaphore(value: 0)
            let client = try MQTTClient(options: options, logger: logger) { event in
                let result: Bool? =
                    switch event {
                    case .connected: true
                    case .connectionRefused, .disconnected: false
                    default: nil
                    }
                guard let result else { return }
                let first = outcome.withLock { value -> Bool in
                    defer { if value == nil { value = result } }
                    return value == nil
                }
                if first { done.signal() }
            }
            try client.start()
            let answered = done.wait(timeout: .now() + timeout) == .success
            client.stop()
            return answered && outcome.withLock { $0 } == true
        } catch {
            logger.warning("activation probe failed", metadata: ["device": "\(id)", "error": "\(error)"])
            return false
        }
    }
}
