import CertrotCore
import Testing

/// The campaign lifecycle alone, the way RotationTests test `Rotation`: every transition and the actions it asks
/// the server to carry out.
@Suite struct CampaignLifecycleTests {
    private func campaign(waves: Int = 1, _ configure: (inout RolloutPolicy) -> Void = { _ in }) -> Campaign {
        var policy = RolloutPolicy()
        policy.minExecuted = 1
        configure(&policy)
        var campaign = Campaign(
            id: "cmp-1", name: "n", now: 100, targets: [], select: .all, policy: policy, origin: "rpc")
        campaign.setWaveCount(waves)
        campaign.schedule(now: 100)
        return campaign
    }

    /// Counts of one wave: `states` members in each state, `settled` of them settled.
    private func counts(_ states: [MemberState: Int], settled: Int? = nil) -> WaveCounts {
        var counts = WaveCounts()
        counts.states = states
        counts.settled =
            settled ?? states.filter { [.verified, .rejected, .cancelled].contains($0.key) }.map(\.value).reduce(0, +)
        return counts
    }

    @Test func scheduled_startsAtItsStartTime() {
        var c = campaign { $0.start = 200 }
        #expect(c.state == .scheduled)
        let early = c.tick(now: 199)
        #expect(early.isEmpty && c.state == .scheduled)
        let onTime = c.tick(now: 200)
        #expect(onTime.isEmpty && c.state == .running && c.reason == nil)
        #expect(campaign { $0.start = 50 }.state == .running, "a start in the past starts at once")
    }

    @Test func deadline_abortsAndCancelsWhatWasNotSent() {
        var c = campaign { $0.deadline = 300 }
        let before = c.tick(now: 299)
        let at = c.tick(now: 300)
        #expect(before.isEmpty)
        #expect(at == [.cancelUnsent(reason: "deadline 300 passed")])
        #expect(c.state == .aborted && c.finishedAt == 300)
        let after = c.tick(now: 400)
        #expect(after.isEmpty, "a final campaign does not change")
    }

    @Test func advance_admitsOnlyInsideAWindow_andOnlyWhileRunning() throws {
        var c = campaign(waves: 2)
        let open = c.advance(counts: [0: counts([.waiting: 5])], now: 100)
        #expect(open == [.admitWaiting])
        var closed = campaign(waves: 2) {
            $0.windows = [MaintenanceWindow(days: [], start: "00:00", end: "00:01", zone: nil)]
        }
        let outside = closed.advance(counts: [0: counts([.waiting: 5])], now: 3600)
        #expect(outside.isEmpty && closed.state == .running)
        try c.pause(reason: "x")
        let paused = c.advance(counts: [0: counts([.waiting: 5])], now: 100)
        #expect(paused.isEmpty)
    }

    @Test func waves_moveOnWhenTheSuccessThresholdIsMet_andTheLastCompletes() {
        var c = campaign(waves: 2)
        _ = c.advance(counts: [0: counts([.verified: 19, .sent: 1])], now: 110)
        #expect(c.currentWave == 1 && c.state == .running, "19 of 20 is 95 %")
        _ = c.advance(counts: [1: counts([.verified: 10])], now: 120)
        #expect(c.state == .completed && c.finishedAt == 120 && c.reason == nil)
    }

    @Test func aContinuousCampaign_neverCompletes() {
        var c = campaign { $0.continuous = true }
        let actions = c.advance(counts: [0: counts([.verified: 10])], now: 110)
        #expect(actions == [.admitWaiting])
        #expect(c.state == .running)
    }

    @Test func errorThreshold_pauses_andResumeAcceptsWhatHappened() throws {
        var c = campaign(waves: 2) { $0.errorThreshold = 0.1 }
        let failing = counts([.verified: 8, .failed: 2], settled: 10)
        let paused = c.advance(counts: [0: failing], now: 110)
        #expect(paused.isEmpty && c.state == .paused)
        #expect(c.reason?.contains("2 of 10 devices sent a bundle were rejected, failed or timed out") == true)
        #expect(c.reason?.contains("(20.0% > error threshold 10.0%)") == true)
        let resumed = try c.resume(currentWave: failing, now: 120)
        #expect(resumed == [.issueHeld])
        #expect(c.state == .running && c.reason == nil && c.accepted[0])
        #expect(c.errorBaseline[0] == 2 && c.executedBaseline[0] == 10)
        // The accepted errors no longer count; the settled wave below the success threshold completes.
        _ = c.advance(counts: [0: failing], now: 130)
        #expect(c.state == .running && c.currentWave == 1)
    }

    @Test func aWaveSettledBelowTheSuccessThreshold_pausesUntilAccepted() throws {
        var c = campaign(waves: 2) { $0.errorThreshold = 1 }
        let settledShort = counts([.verified: 5, .rejected: 5])
        _ = c.advance(counts: [0: settledShort], now: 110)
        #expect(c.state == .paused && c.reason?.contains("settled with 5 of 10 verified") == true)
        _ = try c.resume(currentWave: settledShort, now: 120)
        _ = c.advance(counts: [0: settledShort], now: 130)
        #expect(c.currentWave == 1)
    }

    @Test func pauseAfterWave_waitsForConfirmation_thenStartsTheNextWave() throws {
        var c = campaign(waves: 3) { $0.pauseAfterWave = true }
        _ = c.advance(counts: [0: counts([.verified: 4])], now: 110)
        #expect(c.state == .paused && c.awaitingConfirmation && c.currentWave == 0)
        #expect(c.reason == "wave 1 of 3 completed; resume to start wave 2")
        _ = try c.resume(currentWave: WaveCounts(), now: 120)
        #expect(c.state == .running && !c.awaitingConfirmation && c.currentWave == 1)
        #expect(!c.accepted[0], "confirmation is not acceptance of failures")
    }

    @Test func operatorTransitions_checkTheState() throws {
        var c = campaign()
        #expect(throws: CampaignStateError.self) { _ = try c.resume(currentWave: WaveCounts(), now: 100) }
        try c.pause(reason: "by hand")
        #expect(c.state == .paused && c.reason == "by hand")
        #expect(throws: CampaignStateError.self) { try c.pause(reason: "again") }
        let aborted = try c.abort(reason: "stop", now: 150)
        #expect(aborted == [.cancelUnsent(reason: "stop")])
        #expect(c.state == .aborted && c.finishedAt == 150)
        #expect(throws: CampaignStateError(message: "campaign cmp-1 is already aborted")) {
            _ = try c.abort(reason: "again", now: 160)
        }
        #expect(throws: CampaignStateError.self) { try c.pause(reason: "after the end") }
    }

    @Test func resumingBeforeTheStart_goesBackToScheduled() throws {
        var c = campaign { $0.start = 500 }
        try c.pause(reason: "hold")
        _ = try c.resume(currentWave: WaveCounts(), now: 200)
        #expect(c.state == .scheduled)
        _ = c.tick(now: 500)
        #expect(c.state == .running)
    }
}
