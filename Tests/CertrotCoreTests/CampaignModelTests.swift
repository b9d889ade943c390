import CertrotCore
import Foundation
import Testing

@Suite struct CampaignModelTests {
    func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
    }

    @Test func waves_areCumulative_roundedUp_andCompletedWithTheRest() {
        #expect(
            WaveSpec.cumulativeSizes([.percent(1), .percent(10), .percent(50), .percent(100)], total: 1000) == [
                10, 100, 500, 1000,
            ])
        #expect(WaveSpec.cumulativeSizes([.percent(1), .percent(10)], total: 1000) == [10, 100, 1000])
        #expect(WaveSpec.cumulativeSizes([.count(4), .percent(100)], total: 40) == [4, 40])
        // 1% of 50 is half a device: rounded up to one, so the canary is never empty when there are devices.
        #expect(WaveSpec.cumulativeSizes([.percent(1), .percent(100)], total: 50) == [1, 50])
        // Counts beyond the fleet are capped, and a wave never shrinks.
        #expect(WaveSpec.cumulativeSizes([.count(100), .count(20)], total: 30) == [30, 30])
        #expect(WaveSpec.cumulativeSizes([.percent(100)], total: 0) == [0])
    }

    @Test func waveParsing_takesSharesAndCounts_andRefusesTheRest() throws {
        #expect(try WaveSpec.parse(["1%", 10, "100%"]) == [.percent(1), .count(10), .percent(100)])
        #expect(try WaveSpec.parse(nil) == [.percent(100)])
        for bad: Any in [["0%"], ["101%"], [0], ["ten"], [], "10%", [true]] {
            #expect(throws: Refusal.self) { try WaveSpec.parse(bad) }
        }
    }

    @Test func selection_matchesEachForm() {
        let inventory = Inventory(
            seq: 1, creds: [.init(tag: 42, type: 0, sha256: String(repeating: "a", count: 64), notAfter: 1000)])
        let expiry: (Int64) -> Int64? = { $0 == 42 ? 1000 : nil }
        #expect(CampaignSelection.all.matches(device: "x", inventory: nil, now: 0, expiry: expiry))
        #expect(CampaignSelection.devices(["a", "b"]).matches(device: "b", inventory: nil, now: 0, expiry: expiry))
        #expect(!CampaignSelection.devices(["a", "b"]).matches(device: "c", inventory: nil, now: 0, expiry: expiry))
        #expect(CampaignSelection.prefix("nrf-").matches(device: "nrf-1", inventory: nil, now: 0, expiry: expiry))
        #expect(
            CampaignSelection.pattern("nrf-*-eu?").matches(
                device: "nrf-123-eu1", inventory: nil, now: 0, expiry: expiry))
        #expect(
            !CampaignSelection.pattern("nrf-*-eu?").matches(
                device: "nrf-123-eu12", inventory: nil, now: 0, expiry: expiry))
        #expect(CampaignSelection.pattern("*").matches(device: "anything", inventory: nil, now: 0, expiry: expiry))
        #expect(
            CampaignSelection.holding(String(repeating: "a", count: 64)).matches(
                device: "x", inventory: inventory, now: 0, expiry: expiry))
        #expect(
            !CampaignSelection.holding(String(repeating: "b", count: 64)).matches(
                device: "x", inventory: inventory, now: 0, expiry: expiry))
        #expect(
            CampaignSelection.expiringBefore(tag: 42, before: 1001).matches(
                device: "x", inventory: inventory, now: 0, expiry: expiry))
        #expect(
            !CampaignSelection.expiringBefore(tag: 42, before: 1000).matches(
                device: "x", inventory: inventory, now: 0, expiry: expiry))
        #expect(
            !CampaignSelection.expiringBefore(tag: 7, before: 9999).matches(
                device: "x", inventory: inventory, now: 0, expiry: expiry))
        #expect(
            CampaignSelection.expiringWithin(tag: 42, seconds: 100).matches(
                device: "x", inventory: inventory, now: 950, expiry: expiry))
        #expect(
            !CampaignSelection.expiringWithin(tag: 42, seconds: 100).matches(
                device: "x", inventory: inventory, now: 800, expiry: expiry))
    }

    @Test func selectionParsing_takesOneFormOnly() throws {
        #expect(try CampaignSelection.parse(json(#"{"all":true}"#)) == .all)
        #expect(
            try CampaignSelection.parse(json(#"{"tag":42,"expiringBefore":5}"#)) == .expiringBefore(tag: 42, before: 5))
        for bad in [
            #"{"all":1}"#, #"{"all":true,"prefix":"a"}"#, #"{"prefix":"a","holding":"b"}"#, #"{"devices":["a/b"]}"#,
            #"{"tag":42}"#, #"{"colour":"red"}"#, #"{}"#,
        ] {
            #expect(throws: Refusal.self, "\(bad)") { try CampaignSelection.parse(json(bad)) }
        }
    }

    @Test func requestParsing_appliesDefaults_andRefusesWrongTypes() throws {
        let base = #""name":"n","targets":[{"tag":42,"chain":"PEM"}],"select":{"all":true}"#
        let request = try CampaignRequest.parse(json("{\(base)}"), now: 100)
        #expect(
            request.policy.successThreshold == 0.95 && request.policy.errorThreshold == 0.05
                && request.policy.minExecuted == 10)
        #expect(request.policy.waves == [.percent(100)] && request.policy.rate == nil && !request.policy.continuous)
        #expect(request.minRemainingValidity == 30 * 86400)
        #expect(request.targets.first?.strategy == .replace && request.targets.first?.type == 0)
        let full = try CampaignRequest.parse(
            json(
                "{\(base),\"rate\":2.5,\"continuous\":true,\"pauseAfterWave\":true,\"deadline\":200,\"minExecuted\":0}"),
            now: 100)
        #expect(
            full.policy.rate == 2.5 && full.policy.continuous && full.policy.pauseAfterWave
                && full.policy.deadline == 200 && full.policy.minExecuted == 0)
        for extra in [
            #""continuous":1"#, #""rate":0"#, #""successThreshold":1.5"#, #""deadline":50"#, #""minExecuted":-1"#,
            #""ackTimeout":"1h""#, #""typo":true"#, #""endpointChain":"""#,
        ] {
            #expect(throws: Refusal.self, "\(extra)") {
                try CampaignRequest.parse(json("{\(base),\(extra)}"), now: 100)
            }
        }
        #expect(throws: Refusal.self) {
            try CampaignRequest.parse(
                json(#"{"name":"n","targets":[{"tag":42,"chain":"a"},{"tag":42,"chain":"b"}],"select":{"all":true}}"#),
                now: 0)
        }
    }

    @Test func memberState_isTheFailureOrTheLeastAdvancedStep() {
        func rotation(_ state: RotationState, retry: Int64? = nil) -> Rotation {
            var r = Rotation(device: "d", target: "t", sha256: "s", state: state, now: 0)
            r.nextAttemptAt = retry
            return r
        }
        #expect(MemberState.aggregate([rotation(.verified), rotation(.verified)]) == (.verified, true))
        #expect(MemberState.aggregate([rotation(.verified), rotation(.sent)]) == (.sent, false))
        #expect(MemberState.aggregate([rotation(.applied), rotation(.rejected)]) == (.rejected, true))
        #expect(MemberState.aggregate([rotation(.failed, retry: 10)]) == (.failed, false))
        #expect(MemberState.aggregate([rotation(.timedOut)]) == (.timedOut, true))
        #expect(MemberState.aggregate([rotation(.cancelled), rotation(.verified)]) == (.cancelled, true))
        let member = CampaignMember(
            campaign: "c", device: "d", wave: 0, state: .rejected, settled: true,
            reason: "rejected by device (code -22): bad chain", updatedAt: 0)
        #expect(member.code == -22)
    }

    @Test func tokenBucket_startsWithOneToken_andRefillsAtTheRate() {
        var bucket = TokenBucket(rate: 10, now: 0)
        #expect(bucket.available == 1)
        bucket.take(1)
        bucket.refill(now: 0.25)
        #expect(bucket.available == 2)
        bucket.refill(now: 100)
        #expect(bucket.available == 5, "capacity is half a second's worth")
        bucket.take(5)
        bucket.refill(now: 100.05)
        #expect(bucket.available == 0)
    }

    @Test func rotationTargetNames_roundTrip() {
        let campaign = Campaign(id: "cmp-abc", name: "n", now: 0, targets: [], select: .all, origin: "rpc")
        #expect(campaign.rotationTarget(2) == .campaign(id: "cmp-abc", index: 2))
        #expect(campaign.rotationTarget(2).description == "cmp-abc.2")
        #expect(campaign.rotationTargetPrefix == "cmp-abc.")
    }

    @Test func cancel_stopsOnlyWhatHasNoBundleOut() {
        var waiting = Rotation(device: "d", target: "t", sha256: "s", now: 0)
        waiting.cancel(reason: "aborted", now: 1)
        #expect(waiting.state == .cancelled && waiting.isSettled)
        var inFlight = Rotation(device: "d", target: "t", sha256: "s", now: 0)
        inFlight.issued(jti: "j", seq: 1, now: 0)
        inFlight.cancel(reason: "aborted", now: 1)
        #expect(inFlight.state == .pending && inFlight.jti == "j")
    }
}
