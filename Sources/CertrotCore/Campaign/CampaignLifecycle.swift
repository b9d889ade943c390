import Foundation

/// What the server carries out after a campaign changed state: the core decides, the server acts on the store.
public enum CampaignAction: Sendable, Equatable {
    /// Every member not yet sent a bundle is cancelled: waiting members settle `cancelled`, and the campaign's
    /// rotations with no bundle out are cancelled. Bundles in flight are not recalled (their acks still count).
    case cancelUnsent(reason: String)
    /// Members held back while the campaign was paused or scheduled are issued their bundles once it runs.
    case issueHeld
    /// The current wave's waiting members are admitted, within the campaign's rate and the publish backlog.
    case admitWaiting
}

/// An operator asked for a transition the campaign's state does not allow.
public struct CampaignStateError: Error, Equatable, Sendable {
    public var message: String

    public init(message: String) {
        self.message = message
    }
}

/// The campaign lifecycle (docs/operations.md, "Campaigns"): scheduled → running ⇄ paused → completed, or
/// aborted from any state but a final one. Tested alone (CampaignLifecycleTests), like ``Rotation``.
extension Campaign {
    /// A new campaign whose policy starts it later waits, scheduled.
    public mutating func schedule(now: Int64) {
        if let start = policy.start, start > now, state == .running { state = .scheduled }
    }

    /// Time passes: a scheduled campaign starts at its start time, and one past its deadline is aborted.
    public mutating func tick(now: Int64) -> [CampaignAction] {
        guard !state.isFinal else { return [] }
        if state == .scheduled, now >= policy.start ?? 0 {
            state = .running
            reason = nil
        }
        if let deadline = policy.deadline, now >= deadline {
            return end(.aborted, reason: "deadline \(deadline) passed", now: now)
        }
        return []
    }

    /// Wave logic for a running campaign, from its members' counts per wave: pauses on the error threshold, or on
    /// a wave settled below the success threshold (unless accepted), or after a wave for a person to confirm;
    /// moves on to the next wave; completes after the last one (a continuous campaign never completes). Asks for
    /// admissions while the campaign runs inside one of its windows.
    public mutating func advance(counts: [Int: WaveCounts], now: Int64) -> [CampaignAction] {
        guard state == .running else { return [] }
        moveWaves(counts: counts, now: now)
        return state == .running && policy.windows.isOpen(at: now) ? [.admitWaiting] : []
    }

    private mutating func moveWaves(counts: [Int: WaveCounts], now: Int64) {
        let wave = currentWave
        let counted = counts[wave] ?? WaveCounts()
        let executed = counted.executed - executedBaseline[wave]
        let errors = counted.errors - errorBaseline[wave]
        if executed >= max(1, policy.minExecuted), Double(errors) > policy.errorThreshold * Double(executed) {
            state = .paused
            reason =
                "wave \(wave + 1) of \(waveCount): \(errors) of \(executed) devices sent a bundle were "
                + "rejected, failed or timed out (\(Self.percent(errors, executed)) > error threshold "
                + "\(Self.percent(policy.errorThreshold)))"
            return
        }
        let eligible = counted.size - counted.cancelled
        let allAdmitted = counted.waiting == 0
        let succeeded = allAdmitted && Double(counted.verified) >= policy.successThreshold * Double(eligible)
        let settled = allAdmitted && counted.settled >= counted.size
        guard succeeded || (settled && accepted[wave]) else {
            if settled {
                state = .paused
                reason =
                    "wave \(wave + 1) of \(waveCount) settled with \(counted.verified) of \(eligible) "
                    + "verified (\(Self.percent(counted.verified, eligible)) < success threshold "
                    + "\(Self.percent(policy.successThreshold))); resume to accept it and go on"
            }
            return
        }
        if wave + 1 >= waveCount {
            guard !policy.continuous else { return }
            state = .completed
            finishedAt = now
            reason = nil
        } else if policy.pauseAfterWave {
            state = .paused
            awaitingConfirmation = true
            reason = "wave \(wave + 1) of \(waveCount) completed; resume to start wave \(wave + 2)"
        } else {
            currentWave += 1
        }
    }

    /// An operator pauses a running or scheduled campaign: nothing more is admitted, and bundles not yet issued
    /// are held.
    public mutating func pause(reason: String) throws(CampaignStateError) {
        guard state == .running || state == .scheduled else {
            throw CampaignStateError(
                message: "campaign \(id) is \(state.rawValue); only a running or scheduled campaign can be paused")
        }
        state = .paused
        self.reason = reason
    }

    /// An operator resumes a paused campaign. After a pause for confirmation the next wave starts; after a
    /// threshold pause the operator accepts what happened so far: the error threshold applies to what comes next
    /// (from `counts`, the current wave's members now), and a settled wave below the success threshold may
    /// complete. A campaign whose start is still ahead goes back to scheduled.
    public mutating func resume(
        currentWave counts: WaveCounts, now: Int64
    ) throws(CampaignStateError)
        -> [CampaignAction]
    {
        guard state == .paused else {
            throw CampaignStateError(
                message: "campaign \(id) is \(state.rawValue); only a paused campaign can be resumed")
        }
        let wave = currentWave
        if awaitingConfirmation {
            awaitingConfirmation = false
            currentWave = min(wave + 1, waveCount - 1)
        } else {
            errorBaseline[wave] = counts.errors
            executedBaseline[wave] = counts.executed
            accepted[wave] = true
        }
        state = policy.start.map { now < $0 } == true ? .scheduled : .running
        reason = nil
        return [.issueHeld]
    }

    /// Ends the campaign: members not yet sent a bundle are cancelled.
    public mutating func abort(reason: String, now: Int64) throws(CampaignStateError) -> [CampaignAction] {
        guard !state.isFinal else { throw CampaignStateError(message: "campaign \(id) is already \(state.rawValue)") }
        return end(.aborted, reason: reason, now: now)
    }

    private mutating func end(_ final: CampaignState, reason: String, now: Int64) -> [CampaignAction] {
        state = final
        self.reason = reason
        finishedAt = now
        return final == .aborted ? [.cancelUnsent(reason: reason)] : []
    }

    static func percent(_ part: Int, _ whole: Int) -> String {
        percent(whole == 0 ? 0 : Double(part) / Double(whole))
    }

    static func percent(_ fraction: Double) -> String {
        String(format: "%.1f%%", fraction * 100)
    }
}
