import CertrotCore
import CertrotServer
import CertrotTestSupport
import Foundation
import Testing

/// The threads a status read passes through ask Linux for a shorter scheduling slice (``StatusSlice``): seen from
/// outside, in `/proc/PID/task/*/sched`, of a `certrot serve` on PostgreSQL.
@Suite(.serialized) struct StatusSliceTests {
    /// The requested slices (ns) of `pid`'s threads, from `se.slice` (Linux 6.6+), by thread id.
    func slices(of pid: pid_t) -> [String: Int] {
        let tasks = "/proc/\(pid)/task"
        var result: [String: Int] = [:]
        for task in (try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? [] {
            guard let text = try? String(contentsOfFile: "\(tasks)/\(task)/sched", encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") where line.hasPrefix("se.slice") {
                if let value = line.split(separator: ":").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) })
                {
                    result[task] = value
                }
            }
        }
        return result
    }

    /// How many threads of a `certrot serve` on PostgreSQL (with `extra` config) ask for `microseconds`.
    func threadsAsking(_ microseconds: Int, config extra: String) async throws -> Int {
        let harness = try Harness(store: .postgres)
        let daemon = try ChildProcess(
            executable: certrotBinary(), arguments: ["serve", "--config", try harness.writeConfig(extra: extra)],
            outputPath: harness.path("daemon.log"))
        // Until a status read has been answered: by then every thread on its path has started.
        var answered = false
        for _ in 0..<100 where !answered {
            answered = (try? await harness.rpc().result("fleet.status", timeout: 2)) != nil
            if !answered { try? await Task.sleep(for: .milliseconds(200)) }
        }
        let count = slices(of: daemon.pid).values.filter { $0 == microseconds * 1000 }.count
        daemon.terminate()
        await harness.stop()
        try #require(answered, "the daemon did not answer fleet.status")
        return count
    }

    @Test func theStatusReadThreads_askForTheConfiguredSlice_andNoneWhenItIsZero() async throws {
        let kernelShowsSlices = !slices(of: getpid()).isEmpty
        try #require(kernelShowsSlices, "this kernel shows no se.slice (Linux 6.6 or newer needed)")
        // The RPC connection's network thread, the reads' thread and the store's reading event loop.
        #expect(try await threadsAsking(250, config: "statusSliceMicroseconds: 250") == 3)
        #expect(try await threadsAsking(StatusSlice.defaultMicroseconds, config: "") == 3)
        #expect(try await threadsAsking(StatusSlice.defaultMicroseconds, config: "statusSliceMicroseconds: 0") == 0)
    }

    @Test func aSliceOutOfRange_isAConfigError() throws {
        let harness = try Harness()
        for bad in ["50", "200000", "-1"] {
            let config = try harness.writeConfig(extra: "statusSliceMicroseconds: \(bad)")
            #expect(throws: CertrotError.self, "statusSliceMicroseconds: \(bad)") {
                try DaemonSettings.resolve(try CertrotConfig.load(path: config))
            }
        }
    }
}
