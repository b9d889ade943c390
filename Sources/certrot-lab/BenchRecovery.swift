import ArgumentParser
import CertrotCore
import CertrotMQTT
import CertrotTestSupport
import Foundation
import Logging
import Synchronization

extension Bench {
    // MARK: 6. Recovery

    /// Another campaign, paced to last about ten seconds; the daemon SIGKILLed once half its members are verified,
    /// then restarted: the seconds from the restart to the first bundle on a `+/certs` topic (nil after a minute),
    /// and the restarted daemon's own account of its start (``StartupTimes``, logged at notice).
    func recovery(
        _ rpc: RPCClient, broker: Broker, daemon: inout ChildProcess, restart: () throws -> ChildProcess,
        log: () -> String, logger: Logger
    ) async throws -> (seconds: Double?, steps: String?) {
        let next = try CertificateFactory.rootCA(commonName: "Bench CA next", days: 900)
        // Paced to last about ten seconds whatever the fleet size, so that half-way is a moment to hit.
        let secondID = try await createCampaign(
            rpc, name: "bench-2", chain: next.pem, rate: max(10, Double(devices) / 10))
        let halfWay = Date()
        while true {
            let status = try? await rpc.result("campaign.status", params: ["id": secondID], timeout: 10)
            if ((status?["states"] as? [String: Int])?["verified"] ?? 0) >= devices / 2 { break }
            guard Date().timeIntervalSince(halfWay) < timeout else {
                throw ValidationError("second campaign not half-way within \(Int(timeout)) s: \(status ?? [:])")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        daemon.signal(SIGKILL)
        while daemon.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        // Watch the bundle topics, then restart: the first bundle that reaches the broker ends the clock.
        let firstBundle = AsyncStream<Void>.makeStream()
        let watcherBox = Mutex<MQTTClient?>(nil)
        let watcher = try MQTTClient(
            options: MQTTOptions(host: broker.host, port: broker.port, clientID: "bench-watch"), logger: logger
        ) { event in
            switch event {
            case .connected: _ = try? watcherBox.withLock { try $0?.subscribe(["+/certs"], qos: 0) }
            case .subscribed: firstBundle.continuation.yield()
            case .message: firstBundle.continuation.finish()
            default: break
            }
        }
        watcherBox.withLock { $0 = watcher }
        try watcher.start()
        defer { watcher.stop() }
        var iterator = firstBundle.stream.makeAsyncIterator()
        _ = await iterator.next()  // subscribed
        let restarted = Date()
        daemon = try restart()
        let giveUp = Task {
            try await Task.sleep(for: .seconds(60))
            firstBundle.continuation.finish()
        }
        while await iterator.next() != nil {}
        giveUp.cancel()
        let elapsed = Date().timeIntervalSince(restarted)
        let recovery = elapsed < 60 ? elapsed : nil
        // The daemon's own account of where the time went, once it has logged its first bundle part and the store's
        // integrity check beside the start has passed (the account without it after 5 s).
        for attempt in 0..<50 {
            let text = (try? String(contentsOfFile: log(), encoding: .utf8)) ?? ""
            let lines = text.split(separator: "\n").filter {
                $0.contains("started (seconds after exec)") || $0.contains("first bundle part published")
                    || $0.contains("store integrity check")
            }
            if lines.count == 3 || (lines.count == 2 && attempt == 49) {
                let steps = lines.map { line in
                    line.range(of: "] ").map { String(line[$0.upperBound...]) } ?? String(line)
                }
                .joined(separator: "; ")
                return (recovery, steps)
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return (recovery, nil)
    }
}
