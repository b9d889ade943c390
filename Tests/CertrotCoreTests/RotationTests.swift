import CertrotCore
import Testing

@Suite struct RotationStateTests {
    let policy = RotationPolicy(
        retry: RetryPolicy(base: 30, factor: 2, cap: 3600, attempts: 3), ackTimeout: 600, maxResends: 2)

    func issued(at now: Int64 = 1000) -> Rotation {
        var rotation = Rotation(device: "d", target: "ca", sha256: "s", now: now)
        rotation.issued(jti: "j1", seq: 1, now: now)
        return rotation
    }

    @Test func pending_issued_sent_applied_verified() {
        var r = Rotation(device: "d", target: "ca", sha256: "s", now: 1000)
        #expect(r.awaitsBundle)
        r.issued(jti: "j1", seq: 1, now: 1000)
        #expect(r.state == .pending && r.isInFlight && r.attempts == 1)
        r.delivered(now: 1001)
        #expect(r.state == .sent && r.sentAt == 1001)
        #expect(r.acknowledged(Ack(jti: "j1", status: .applied), policy: policy, now: 1002) == nil)
        #expect(r.state == .applied && r.appliedAt == 1002)
        r.inventoryArrived(holdsTarget: true, reportedSeq: 1, fresh: true, policy: policy, now: 1003)
        #expect(r.state == .verified && r.isSettled)
    }

    @Test func ackForAnotherJTI_changesNothing() {
        var r = issued()
        let before = r
        #expect(r.acknowledged(Ack(jti: "other", status: .applied), policy: policy, now: 1001) == nil)
        #expect(r == before)
    }

    @Test func duplicateApplied_isIdempotent() {
        var r = issued()
        _ = r.acknowledged(Ack(jti: "j1", status: .applied), policy: policy, now: 1001)
        let after = r
        _ = r.acknowledged(Ack(jti: "j1", status: .applied), policy: policy, now: 1005)
        #expect(r == after)
    }

    @Test func rejected_isTerminal_andNeverRetried() {
        var r = issued()
        _ = r.acknowledged(Ack(jti: "j1", status: .rejected, reason: "bad kid"), policy: policy, now: 1001)
        #expect(r.state == .rejected && r.isSettled && r.nextAttemptAt == nil)
        #expect(r.lastError?.contains("bad kid") == true)
        #expect(r.tick(policy: policy, now: 999_999) == nil)
        #expect(r.state == .rejected)
    }

    @Test func failed_isRetriedWithExponentialBackoff_untilAttemptsRunOut() {
        var r = issued()
        _ = r.acknowledged(Ack(jti: "j1", status: .failed, code: 518), policy: policy, now: 1000)
        #expect(r.state == .failed && r.nextAttemptAt == 1030)
        #expect(r.tick(policy: policy, now: 1029) == nil)
        #expect(r.tick(policy: policy, now: 1030) == .issueBundle)
        #expect(r.awaitsBundle)
        r.issued(jti: "j2", seq: 2, now: 1030)
        _ = r.acknowledged(Ack(jti: "j2", status: .failed), policy: policy, now: 1030)
        #expect(r.nextAttemptAt == 1090)
        _ = r.tick(policy: policy, now: 1090)
        r.issued(jti: "j3", seq: 3, now: 1090)
        _ = r.acknowledged(Ack(jti: "j3", status: .failed), policy: policy, now: 1090)
        #expect(r.state == .failed && r.nextAttemptAt == nil && r.isSettled && r.attempts == 3)
    }

    @Test func backoff_isCapped() {
        let retry = RetryPolicy(base: 30, factor: 2, cap: 3600, attempts: 20)
        #expect(retry.delay(afterAttempt: 1) == 30)
        #expect(retry.delay(afterAttempt: 4) == 240)
        #expect(retry.delay(afterAttempt: 12) == 3600)
        #expect(retry.delay(afterAttempt: 200) == 3600)
    }

    @Test func noAck_timesOut_andRetries() {
        var r = issued(at: 1000)
        r.delivered(now: 1000)
        #expect(r.tick(policy: policy, now: 1599) == nil && r.state == .sent)
        _ = r.tick(policy: policy, now: 1600)
        #expect(r.state == .timedOut && r.nextAttemptAt == 1630)
    }

    @Test func timedOutDevice_thatComesBack_isRetriedAtOnce() {
        var r = issued(at: 1000)
        _ = r.tick(policy: policy, now: 1600)
        #expect(r.state == .timedOut)
        r.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: true, policy: policy, now: 1601)
        #expect(r.nextAttemptAt == 1601)
        #expect(r.tick(policy: policy, now: 1601) == .issueBundle)
    }

    @Test func lateAppliedAck_afterTimeout_isRecorded() {
        var r = issued(at: 1000)
        _ = r.tick(policy: policy, now: 1600)
        _ = r.acknowledged(Ack(jti: "j1", status: .applied), policy: policy, now: 1605)
        #expect(r.state == .applied && r.nextAttemptAt == nil)
    }

    @Test func incomplete_resendsMissingParts_thenFailsAfterTheLimit() {
        var r = issued()
        r.delivered(now: 1000)
        #expect(
            r.acknowledged(Ack(jti: "j1", status: .incomplete, missing: [2]), policy: policy, now: 1001)
                == .resend(parts: [2]))
        #expect(
            r.acknowledged(Ack(jti: "j1", status: .incomplete, missing: [2, 3]), policy: policy, now: 1002)
                == .resend(parts: [2, 3]))
        #expect(r.state == .sent)
        _ = r.acknowledged(Ack(jti: "j1", status: .incomplete, missing: [2]), policy: policy, now: 1003)
        #expect(r.state == .failed && r.nextAttemptAt != nil)
    }

    @Test func deviceBackWithoutTheBundle_getsTheSameBundleAgain_aBoundedNumberOfTimes() {
        var r = issued()
        r.delivered(now: 1001)
        // Within the grace: the inventory may have crossed the bundle on its way; a redelivery is scheduled for
        // retry.base after it went out.
        #expect(r.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: true, policy: policy, now: 1002) == nil)
        #expect(r.nextAttemptAt == 1031)
        // A retained copy says nothing of the device being online now.
        #expect(r.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: false, policy: policy, now: 1010) == nil)
        #expect(
            r.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: true, policy: policy, now: 1010) == .redeliver
        )
        #expect(r.state == .sent && r.jti == "j1" && r.sentAt == 1010 && r.resends == 1 && r.attempts == 1)
        #expect(r.nextAttemptAt == nil, "sent again now: the scheduled redelivery is this one")
        #expect(
            r.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: true, policy: policy, now: 1020) == .redeliver
        )
        // maxResends (2) reached: the ack timeout decides from here.
        #expect(r.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: true, policy: policy, now: 1030) == nil)
        #expect(r.tick(policy: policy, now: 1020 + 600) == nil && r.state == .timedOut)
        // An inventory at or above the bundle's seq is the device having applied it, not missing it.
        var applied = issued()
        #expect(
            applied.inventoryArrived(holdsTarget: false, reportedSeq: 1, fresh: true, policy: policy, now: 1010) == nil)
        // Not yet PUBACKed: re-sent too, its timer from the issue.
        var pending = issued()
        #expect(
            pending.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: true, policy: policy, now: 1005)
                == .redeliver)
        #expect(pending.state == .pending && pending.issuedAt == 1005)
    }

    @Test func anInventoryWithinTheGrace_schedulesARedelivery_thatAnAckCancels() {
        var r = issued()
        r.delivered(now: 1001)
        #expect(r.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: true, policy: policy, now: 1002) == nil)
        #expect(r.state == .sent && r.nextAttemptAt == 1031)
        // Another such inventory does not put it off.
        #expect(r.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: true, policy: policy, now: 1002) == nil)
        #expect(r.nextAttemptAt == 1031)
        #expect(r.tick(policy: policy, now: 1030) == nil)
        #expect(r.tick(policy: policy, now: 1031) == .redeliver)
        #expect(r.state == .sent && r.jti == "j1" && r.sentAt == 1031 && r.resends == 1 && r.nextAttemptAt == nil)
        #expect(r.tick(policy: policy, now: 1032) == nil)
        // The ack timeout runs from the redelivery.
        #expect(r.tick(policy: policy, now: 1031 + 599) == nil && r.state == .sent)
        #expect(r.tick(policy: policy, now: 1031 + 600) == nil && r.state == .timedOut)

        var acked = issued()
        acked.delivered(now: 1001)
        _ = acked.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: true, policy: policy, now: 1002)
        _ = acked.acknowledged(Ack(jti: "j1", status: .applied), policy: policy, now: 1003)
        #expect(acked.state == .applied && acked.nextAttemptAt == nil)
        #expect(acked.tick(policy: policy, now: 1031) == nil)

        // An incomplete ack: the device has the bundle in part; its missing parts go, not the whole bundle.
        var partial = issued()
        partial.delivered(now: 1001)
        _ = partial.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: true, policy: policy, now: 1002)
        _ = partial.acknowledged(Ack(jti: "j1", status: .incomplete, missing: [2]), policy: policy, now: 1003)
        #expect(partial.nextAttemptAt == nil && partial.tick(policy: policy, now: 1031) == nil)

        // With no re-send left, nothing is scheduled: the ack timeout decides.
        var spent = issued()
        spent.delivered(now: 1001)
        spent.resends = policy.maxResends
        _ = spent.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: true, policy: policy, now: 1002)
        #expect(spent.nextAttemptAt == nil)
    }

    @Test func appliedButInventoryLacksTarget_fails() {
        var r = issued()
        _ = r.acknowledged(Ack(jti: "j1", status: .applied), policy: policy, now: 1001)
        r.inventoryArrived(holdsTarget: false, reportedSeq: 0, fresh: true, policy: policy, now: 1002)
        #expect(r.state == .applied)  // an older inventory: not yet conclusive
        r.inventoryArrived(holdsTarget: false, reportedSeq: 1, fresh: true, policy: policy, now: 1003)
        #expect(r.state == .failed)
    }

    @Test func inventoryShowingTarget_verifiesFromAnyState() {
        for state in RotationState.allCases {
            var r = issued()
            r.state = state
            r.inventoryArrived(holdsTarget: true, reportedSeq: 1, fresh: false, policy: policy, now: 2000)
            #expect(r.state == .verified)
        }
    }
}
