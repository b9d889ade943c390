import CertrotCore
import CertrotSimulator
import CertrotTestSupport
import Foundation
import GRDB
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The store on a small tmpfs that fills up. Needs root (mount); CI runs as root.
@Suite(.serialized, .enabled(if: getuid() == 0, "mounting a tmpfs needs root"))
struct DiskFullTests {
    @Test func fullDisk_noBundleIsSentThatIsNotRecorded_theDropIsCounted_andARestartRecovers() async throws {
        let harness = try Harness()
        let mountPoint = harness.path("full")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        #expect(try run("/bin/mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", mountPoint]).status == 0)
        defer { _ = try? run("/bin/umount", ["-l", mountPoint]) }
        let httpPort = try Broker.freePort()
        let config = try harness.writeConfig(extra: "http: {host: 127.0.0.1, port: \(httpPort)}")
        let yaml = try String(contentsOfFile: config, encoding: .utf8)
            .replacingOccurrences(
                of: "store: sqlite:\(harness.path("certrot.db"))", with: "store: sqlite:\(mountPoint)/certrot.db")
        try yaml.write(toFile: config, atomically: true, encoding: .utf8)
        try harness.startDaemon(configPath: config)
        _ = try harness.startFleet(harness.fleetOptions(devices: 20))
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 20 }

        // Fill the disk to the last byte.
        _ = try run("/bin/sh", ["-c", "dd if=/dev/zero of=\(mountPoint)/filler bs=4k 2>/dev/null; sync"])
        var late = harness.fleetOptions(devices: 300)
        late.idPrefix = "late-"
        let lateFleet = try harness.startFleet(late)
        var dropped: [String: Int] = [:]
        for _ in 0..<300 {
            dropped = (try await harness.rpc().result("fleet.status")["dropped"] as? [String: Int]) ?? [:]
            if dropped["store_error", default: 0] > 0 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(dropped["store_error", default: 0] > 0, "the daemon must say that it could not store")
        // A burst of lost writes makes the daemon not ready (a load balancer or operator stops relying on it).
        var readiness = 0
        for _ in 0..<300 {
            let url = URL(string: "http://127.0.0.1:\(httpPort)/readyz")!
            readiness = ((try? await URLSession.shared.data(from: url))?.1 as? HTTPURLResponse)?.statusCode ?? 0
            if readiness == 503 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(readiness == 503)
        try await Task.sleep(for: .seconds(2))
        await harness.stopDaemon()

        // Every bundle a device applied is in the store: nothing was sent that could not be recorded.
        let db = try DatabaseQueue(path: "\(mountPoint)/certrot.db")
        var unrecorded = 0
        for device in lateFleet.snapshot() {
            for seq in device.appliedSeqs {
                let found = try await db.read {
                    try Int.fetchOne(
                        $0, sql: "SELECT COUNT(*) FROM bundles WHERE device = ? AND seq = ?",
                        arguments: [device.id, seq])
                }
                if found != 1 { unrecorded += 1 }
            }
        }
        #expect(unrecorded == 0)
        try db.close()

        // Space back, daemon restarted: the retained inventories come again and every device ends verified.
        try FileManager.default.removeItem(atPath: "\(mountPoint)/filler")
        try harness.startDaemon(configPath: config)
        try await harness.waitForFleet(timeout: 90) { ($0["verified"] ?? 0) == 320 }
        await harness.stop()
    }
}
