import CertrotServer
import Foundation
import Testing

/// `/readyz`'s judgement of the store (Observability.notReadyReason).
@Suite struct ReadinessTests {
    /// A store that fails and is back at the next write (a replica's sessions cut off and reopened within a tick)
    /// keeps the replica not ready for the hold, so that a probe between two writes still sees it (CI, #35: the
    /// cluster test's probe missed a 250 ms outage).
    @Test func aFailedStoreWrite_keepsTheDaemonNotReady_forTheHold_thenReady() async throws {
        let observability = Observability(storeRecoveryHold: 0.5)
        observability.brokerConnected(true)
        #expect(observability.notReadyReason == nil)
        observability.storeWrite(ok: false, error: "connection reset")
        #expect(observability.notReadyReason?.contains("not writable") == true)
        observability.storeWrite(ok: true)
        let held = try #require(observability.notReadyReason, "ready at once after a failed write")
        #expect(held.contains("the store failed"), "\(held)")
        #expect(held.contains("connection reset"), "\(held)")
        try await Task.sleep(for: .milliseconds(700))
        #expect(observability.notReadyReason == nil)
    }
}
