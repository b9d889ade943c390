import CertrotCore
import CertrotTestSupport
import Foundation
import Testing

/// Peers' words in every logged field (red-team #32, finding 5): an ack's and a CSR's `jti` on a device's own topic,
/// a device ID, a campaign's name over MQTT RPC, each carrying a newline and a bidirectional override, are logged
/// escaped on the line that logs them and never start a line of their own.
@Suite struct LogForgeryTests {
    @Test func controlCharactersInEveryPeerField_areLoggedEscaped_andForgeNoLine() async throws {
        let harness = try Harness()
        let (serve, log) = try await harness.serveProcess(config: try harness.writeConfig(), logLevel: "debug")
        defer { serve.terminate() }
        let rpc = try harness.rpc()
        let forged = "\nFORGED critical certrot : \u{202E}x"
        let peer = try await Peer(harness)
        try peer.client.publish(
            topic: Topics.ack("dev-1"), payload: Ack(jti: "a" + forged, status: .applied).encoded())
        try peer.client.publish(
            topic: Topics.csr("dev-1"), payload: CSRMessage(jti: "b" + forged, tag: 7, keygen: "x").encoded())
        _ = try? await rpc.call("device.status", params: ["device": "d" + forged], timeout: 5)
        _ = try? await rpc.call(
            "campaign.create", params: ["name": "c" + forged, "target": "nothing", "select": ["all": true]],
            timeout: 5)
        var text = ""
        for _ in 0..<50 where text.components(separatedBy: "FORGED").count < 3 {
            try await Task.sleep(for: .milliseconds(100))
            text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        }
        #expect(text.contains(#"\nFORGED critical certrot : \u{202E}x"#), "logged, escaped:\n\(text.suffix(3000))")
        let lines = text.split(separator: "\n")
        #expect(!lines.contains { $0.hasPrefix("FORGED") }, "a forged line:\n\(text.suffix(3000))")
        #expect(!text.unicodeScalars.contains("\u{202E}"))
        await harness.stop()
    }
}
