import CertrotCore
import CertrotMQTT
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Testing

@Suite(.serialized) struct RotationEndToEndTests {
    @Test func fleetOf200_isRotatedToVerified_includingOfflineRejectingFailingAndIncompleteDevices() async throws {
        let harness = try Harness()
        try harness.startDaemon()
        var options = harness.fleetOptions(devices: 200)
        let rejecting = options.deviceID(1)
        let failing = options.deviceID(2)
        let losing = options.deviceID(3)
        options.behaviours[rejecting] = DeviceBehaviour(rejects: true)
        options.behaviours[failing] = DeviceBehaviour(failsOnce: true)
        options.behaviours[losing] = DeviceBehaviour(losesPartOnce: true)
        let offline = (10...29).map(options.deviceID)
        for id in offline { options.behaviours[id] = DeviceBehaviour(offlineAtFirst: true) }
        // Two roots make a two-part bundle at 2,048 bytes, so a part can go missing.
        let backup = try CertificateFactory.rootCA(commonName: "Backup CA", days: 900)
        try CertificateFactory.chain([harness.newCA, backup]).write(
            toFile: harness.path("new-ca.pem"), atomically: true, encoding: .utf8)
        await harness.stopDaemon()
        try harness.startDaemon()
        let fleet = try harness.startFleet(options)

        // The offline devices are not known until they come online.
        let early = try await harness.waitForFleet { ($0["verified"] ?? 0) >= 170 }
        #expect((early["devices"] as? Int ?? 0) <= 200)

        let status = try await harness.waitForFleet { ($0["verified"] ?? 0) == 199 && ($0["rejected"] ?? 0) == 1 }
        #expect(status["devices"] as? Int == 200)
        let target =
            ((status["targets"] as? [String: Any])?["broker-ca"] as? [String: Any])?["states"] as? [String: Int]
        #expect(target?["verified"] == 199)

        // Every device but the rejecting one holds the new chain; none got a packet over its maxMessage.
        let chain = try PEM.normalizeChain(try String(contentsOfFile: harness.path("new-ca.pem"), encoding: .utf8))
        let devices = fleet.snapshot()
        for device in devices where device.id != rejecting {
            #expect(device.digest(tag: 42) == chain.sha256, "\(device.id)")
            #expect(
                device.appliedSeqs == device.appliedSeqs.sorted()
                    && Set(device.appliedSeqs).count == device.appliedSeqs.count)
        }
        #expect(fleet.stats.oversizeMessages == 0)
        #expect(fleet.stats.acks["incomplete", default: 0] >= 1)
        #expect(fleet.stats.acks["failed", default: 0] >= 1)

        let rpc = try harness.rpc()
        let failed = try await rpc.result("device.status", params: ["device": failing])
        let failedRotation = (failed["rotations"] as? [[String: Any]])?.first
        #expect(failedRotation?["state"] as? String == "verified")
        #expect(failedRotation?["attempts"] as? Int == 2)
        #expect(((failed["history"] as? [[String: Any]]) ?? []).contains { $0["state"] as? String == "failed" })

        let rejected = try await rpc.result("device.status", params: ["device": rejecting])
        let rejectedRotation = (rejected["rotations"] as? [[String: Any]])?.first
        #expect(rejectedRotation?["state"] as? String == "rejected")
        #expect((rejectedRotation?["lastError"] as? String)?.contains("simulated rejection") == true)
        #expect(rejectedRotation?["attempts"] as? Int == 1)
        let inventory = rejected["inventory"] as? [[String: Any]]
        #expect(inventory?.first?["name"] as? String == "old-ca")
        #expect(inventory?.first?["notAfter"] as? Int != nil)

        // Rejected is final: nothing more is sent to that device.
        let partsBefore = fleet.stats.partsReceived
        try await Task.sleep(for: .seconds(2.5))
        #expect(fleet.stats.partsReceived == partsBefore)
        await harness.stop()
    }

    @Test func deviceThatLosesItsCredential_afterVerification_isRotatedAgainWithAHigherSeq() async throws {
        let harness = try Harness()
        try harness.startDaemon()
        let fleet = try harness.startFleet(harness.fleetOptions(devices: 3))
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 3 }
        // dev-00001 is factory-reset: its store holds the old CA again and its seq is back to 0.
        let oldDigest = try PEM.normalizeChain(harness.oldCA.pem).sha256
        let reset = Inventory(seq: 0, creds: [.init(tag: 42, type: 0, sha256: oldDigest)])
        let publisher = try await HostileInputTests.Publisher(harness, id: "reset-tool")
        try publisher.send("dev-00001/certs/inventory", reset.encoded())
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, fleet.snapshot().first?.appliedSeqs.count != 2 {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(fleet.snapshot().first?.appliedSeqs == [1, 2])
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 3 }
        let status = try await harness.rpc().result("device.status", params: ["device": "dev-00001"])
        let history = (status["history"] as? [[String: Any]]) ?? []
        #expect(history.filter { $0["state"] as? String == "verified" }.count == 2)
        // An ack for the first, superseded bundle is stale: dropped, counted, and changes nothing.
        let firstJTI = history.compactMap { $0["jti"] as? String }.first ?? ""
        try publisher.send("dev-00001/certs/ack", #"{"jti":"\#(firstJTI)","status":"failed","code":1}"#)
        let dropped =
            try await harness.eventually({
                (try await harness.rpc().result("fleet.status")["dropped"] as? [String: Int]) ?? [:]
            }) { $0["stale_ack"] != nil } ?? [:]
        #expect(dropped["stale_ack"] == 1)
        let after = try await harness.rpc().result("device.status", params: ["device": "dev-00001"])
        #expect((after["rotations"] as? [[String: Any]])?.first?["state"] as? String == "verified")
        publisher.client.stop()
        await harness.stop()
    }

    @Test func bundle_verifiesWithOpenSSL_outsideTheDaemonsSigningCode() async throws {
        let harness = try Harness()
        try harness.startDaemon()
        // A plain MQTT client listens on the device's topic, as a wiretap.
        let (stream, input) = AsyncStream.makeStream(of: MQTTEvent.self)
        let tap = try MQTTClient(
            options: MQTTOptions(host: harness.broker.host, port: harness.broker.port, clientID: "tap"),
            logger: harness.logger
        ) { input.yield($0) }
        try tap.start()
        var parts: [BundlePart] = []
        var fleet: SimulatedFleet?
        for await event in stream {
            switch event {
            case .connected: try tap.subscribe(["dev-00001/certs"])
            case .subscribed: fleet = try harness.startFleet(harness.fleetOptions(devices: 1))
            case .message(let message): parts.append(try BundlePart.parse(message.payload))
            default: break
            }
            if let first = parts.first, parts.count == first.parts { break }
        }
        tap.stop()
        let jws = parts.sorted { $0.part < $1.part }.map(\.data).joined()
        let pieces = jws.split(separator: ".").map(String.init)
        #expect(pieces.count == 3)

        // Verify with the openssl CLI: signing input, DER-encoded signature, the exported public key.
        try Array(pieces[0] + "." + pieces[1]).map { UInt8($0.asciiValue!) }.write(to: harness.path("input"))
        let raw = Base64URL.decode(pieces[2])!
        #expect(raw.count == 64)
        try derSignature(raw).write(to: harness.path("sig.der"))
        try harness.key.publicKey.pem.write(toFile: harness.path("pub.pem"), atomically: true, encoding: .utf8)
        let result = try run(
            "/usr/bin/openssl",
            [
                "dgst", "-sha256", "-verify", harness.path("pub.pem"), "-signature", harness.path("sig.der"),
                harness.path("input"),
            ])
        #expect(result.status == 0, "openssl: \(result.output)")
        #expect(result.output.contains("Verified OK"))

        // The header and the claims say what docs/protocol.md says, and the pem is the exact normal form.
        let header = try JSONSerialization.jsonObject(with: Data(Base64URL.decode(pieces[0])!)) as? [String: Any]
        #expect(header?["alg"] as? String == "ES256" && header?["typ"] as? String == "certrot-bundle+jwt")
        #expect(header?["kid"] as? String == harness.key.kid)
        let claims = try JSONSerialization.jsonObject(with: Data(Base64URL.decode(pieces[1])!)) as? [String: Any]
        #expect(claims?["sub"] as? String == "dev-00001" && claims?["iss"] as? String == "certrot")
        let exp = claims?["exp"] as? Int ?? 0
        let iat = claims?["iat"] as? Int ?? 0
        #expect(exp - iat == 7 * 24 * 3600)
        let op = (claims?["ops"] as? [[String: Any]])?.first
        #expect(op?["pem"] as? String == harness.newChain.pem)
        #expect(op?["sha256"] as? String == harness.newChain.sha256)
        _ = fleet
        await harness.stop()
    }
}

func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    while process.isRunning { usleep(10_000) }
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// ECDSA r‖s (64 bytes) → DER SEQUENCE { INTEGER r, INTEGER s }, as openssl wants it.
func derSignature(_ raw: [UInt8]) -> [UInt8] {
    func integer(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var value = Array(bytes.drop { $0 == 0 })
        if value.isEmpty { value = [0] }
        if value[0] & 0x80 != 0 { value.insert(0, at: 0) }
        return [0x02, UInt8(value.count)] + value
    }
    let body = integer(raw[0..<32]) + integer(raw[32..<64])
    return [0x30, UInt8(body.count)] + body
}

extension Array where Element == UInt8 {
    func write(to path: String) throws {
        try Data(self).write(to: URL(fileURLWithPath: path))
    }
}
