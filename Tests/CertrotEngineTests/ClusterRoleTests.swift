import CertrotServer
import Testing

/// A replica's role decisions alone: leadership changes, the take-over, and the catch-up window.
@Suite struct ClusterRoleTests {
    func role() -> ClusterRole { ClusterRole(.init(replica: "r1", group: "certrot", deadAfter: 5)) }

    @Test func leadership_isCheckedOnceASecond_andReportsChangesOnly() {
        var role = role()
        var due = [role.leadershipCheckDue(now: 100), role.leadershipCheckDue(now: 100.5)]
        let first = role.leadership(false)
        due.append(role.leadershipCheckDue(now: 101))
        #expect(due == [true, false, true])
        #expect(first == .following, "the first check reports the role")
        let same = role.leadership(false)
        let takeOverWhileFollowing = role.takeOver()
        let lead = role.leadership(true)
        let leading = role.isLeader
        let takeOvers = [role.takeOver(), role.takeOver()]
        let follow = role.leadership(false)
        #expect(same == nil && !takeOverWhileFollowing)
        #expect(lead == .leading && leading)
        #expect(takeOvers == [true, false], "becoming the leader takes over on the next tick, once")
        #expect(follow == .following && !role.isLeader)
    }

    @Test func catchUp_subscribesOnce_andEndsTenSecondsAfterTheLastReason() {
        var role = role()
        let steps = [
            role.catchUp(now: 0, triggered: false), role.catchUp(now: 0, triggered: true),
            role.catchUp(now: 5, triggered: true),  // already subscribed; the window moves
            role.catchUp(now: 14.9, triggered: false), role.catchUp(now: 15, triggered: false),
        ]
        #expect(steps == [nil, .subscribe, nil, nil, .unsubscribe])
        #expect(role.catchingUpUntil == nil)
    }

    @Test func staleReplicas_areLookedForOncePerSecond() {
        var role = role()
        let due = [role.staleCheckDue(now: 10), role.staleCheckDue(now: 10), role.staleCheckDue(now: 11)]
        #expect(due == [true, false, true])
    }

    @Test func inboundSubscriptions_areShared() {
        #expect(role().inboundFilters == ["$share/certrot/+/certs/inventory", "$share/certrot/+/certs/ack"])
    }
}
