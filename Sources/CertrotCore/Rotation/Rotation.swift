/// The state of one rotation: one device, one target.
///
/// `pending` → `sent` (the broker acknowledged every part) → `applied` (the device's ack) → `verified` (a later
/// inventory shows the target digest in the target tag; the only success). Failures: `rejected` (never re-sent
/// unchanged), `failed`, `timed_out` — the last two are retried with backoff until the attempts run out.
/// `cancelled`: the rotation will not be sent (its campaign was aborted, or a newer campaign took over the tag).
public enum RotationState: String, Sendable, Codable, CaseIterable {
    case pending, sent, applied, verified, rejected, failed
    case timedOut = "timed_out"
    case cancelled
}

/// Exponential backoff for `failed` and `timed_out` attempts.
public struct RetryPolicy: Sendable, Equatable, Codable {
    public var base: Int64
    public var factor: Double
    public var cap: Int64
    /// Attempts in all, the first included.
    public var attempts: Int

    public init(base: Int64 = 30, factor: Double = 2, cap: Int64 = 3600, attempts: Int = 5) {
        self.base = base
        self.factor = factor
        self.cap = cap
        self.attempts = attempts
    }

    /// Seconds to wait after the `attempt`-th attempt (from 1) failed.
    public func delay(afterAttempt attempt: Int) -> Int64 {
        var delay = Double(base)
        for _ in 1..<max(attempt, 1) { delay *= factor }
        return min(cap, Int64(min(delay, Double(Int64.max / 2))))
    }
}

public struct Rotation: Sendable, Equatable {
    public var device: String
    public var target: RotationTarget
    /// Digest the target wants in the tag.
    public var sha256: String
    public var state: RotationState
    public var attempts: Int = 0
    /// The outstanding bundle, once issued.
    public var jti: String?
    public var seq: Int64?
    public var lastError: String?
    /// When the next attempt is due: a retry (`failed`, `timed_out`), a new try to sign (`pending` with no bundle),
    /// or a redelivery of the outstanding bundle (`pending` with a bundle, `sent`; see ``inventoryArrived``).
    public var nextAttemptAt: Int64?
    public var createdAt: Int64
    public var updatedAt: Int64
    public var issuedAt: Int64?
    public var sentAt: Int64?
    public var appliedAt: Int64?
    public var verifiedAt: Int64?
    /// Parts re-sent for the current bundle after `incomplete` acks.
    public var resends: Int = 0
    /// In a cluster: the replica that issued (or last re-sent) the outstanding bundle and tracks its delivery.
    public var issuedBy: String?

    public init(device: String, target: RotationTarget, sha256: String, state: RotationState = .pending, now: Int64) {
        self.device = device
        self.target = target
        self.sha256 = sha256
        self.state = state
        self.createdAt = now
        self.updatedAt = now
    }

    /// True while a bundle is out and its fate unknown.
    public var isInFlight: Bool {
        (state == .pending && jti != nil) || state == .sent
    }

    /// True when nothing more will happen unless a new inventory shows the target, the device loses a verified
    /// credential, or the target changes.
    public var isSettled: Bool {
        switch state {
        case .verified, .rejected, .cancelled: true
        case .failed, .timedOut: nextAttemptAt == nil
        default: false
        }
    }

    /// Waiting to have a bundle issued.
    public var awaitsBundle: Bool { state == .pending && jti == nil }

    /// The digest of a rotation whose credential is not known yet: a client certificate before it is issued (its
    /// bundle is the `keygen` op, and the device's CSR is awaited).
    public static let digestUnknown = ""

    /// A client-certificate rotation in its first phase: `keygen` sent or to send, the CSR not yet taken.
    public var awaitsCSR: Bool { sha256 == Self.digestUnknown }
}

/// Settings the state machine needs.
public struct RotationPolicy: Sendable, Equatable {
    public var retry: RetryPolicy
    /// Seconds from the broker's PUBACK (or issue, if it never came) to `timed_out`.
    public var ackTimeout: Int64
    /// `incomplete` acks answered with re-sent parts before the attempt counts as failed.
    public var maxResends: Int

    public init(retry: RetryPolicy = RetryPolicy(), ackTimeout: Int64 = 600, maxResends: Int = 5) {
        self.retry = retry
        self.ackTimeout = ackTimeout
        self.maxResends = maxResends
    }
}

public enum RotationEffect: Sendable, Equatable {
    /// Issue (sign and publish) a new bundle for this rotation.
    case issueBundle
    /// Re-send these parts of the current bundle.
    case resend(parts: [Int])
    /// Re-send every part of the current bundle (same `jti` and `seq`): the device is back without it.
    case redeliver
}

extension Rotation {
    /// A bundle was signed and its parts handed to the broker.
    public mutating func issued(jti: String, seq: Int64, now: Int64) {
        precondition(awaitsBundle, "a bundle is issued only for a pending rotation without one")
        self.jti = jti
        self.seq = seq
        attempts += 1
        issuedAt = now
        sentAt = nil
        appliedAt = nil
        resends = 0
        nextAttemptAt = nil
        updatedAt = now
    }

    /// The broker acknowledged every part.
    public mutating func delivered(now: Int64) {
        guard state == .pending, jti != nil else { return }
        state = .sent
        sentAt = now
        updatedAt = now
    }

    /// An ack for this rotation's outstanding `jti` (the caller matched it). Duplicates change nothing.
    public mutating func acknowledged(_ ack: Ack, policy: RotationPolicy, now: Int64) -> RotationEffect? {
        guard ack.jti == jti else { return nil }
        switch (state, ack.status) {
        case (.verified, _), (.applied, .applied), (.rejected, .rejected):
            return nil
        case (.pending, .applied), (.sent, .applied), (.failed, .applied), (.timedOut, .applied):
            state = .applied
            appliedAt = now
            nextAttemptAt = nil
            if sentAt == nil { sentAt = now }
        case (.pending, .rejected), (.sent, .rejected), (.failed, .rejected), (.timedOut, .rejected):
            state = .rejected
            nextAttemptAt = nil
            lastError = Self.describe(ack, prefix: "rejected by device")
        case (.pending, .failed), (.sent, .failed):
            scheduleRetry(as: .failed, error: Self.describe(ack, prefix: "write failed"), policy: policy, now: now)
        case (.pending, .incomplete), (.sent, .incomplete):
            guard resends < policy.maxResends else {
                scheduleRetry(
                    as: .failed, error: "parts still missing after \(resends) re-sends", policy: policy, now: now)
                return nil
            }
            resends += 1
            // The ack timeout runs from the last transmission; the device has the bundle in part, so a redelivery
            // scheduled by an earlier inventory is moot.
            if state == .sent { sentAt = now }
            nextAttemptAt = nil
            updatedAt = now
            return .resend(parts: ack.missing ?? [])
        default:
            return nil
        }
        updatedAt = now
        return nil
    }

    /// A new inventory from the device. `holdsTarget`: the target tag holds the target digest. `fresh`: published
    /// while the daemon was connected (not a retained copy), so the device is online now.
    ///
    /// Returns ``RotationEffect/redeliver`` when a fresh inventory shows the device back without the outstanding
    /// bundle — it reconnected after the bundle went out, and a clean MQTT session (the device's, or a cluster
    /// replica's across a broker restart) lost it: the same bundle is sent again, at most `maxResends` times, rather
    /// than waiting for the ack timeout and a new bundle.
    @discardableResult
    public mutating func inventoryArrived(
        holdsTarget: Bool, reportedSeq: Int64, fresh: Bool, policy: RotationPolicy, now: Int64
    ) -> RotationEffect? {
        if holdsTarget {
            guard state != .verified else { return nil }
            state = .verified
            verifiedAt = now
            nextAttemptAt = nil
            lastError = nil
            updatedAt = now
            return nil
        }
        if fresh, isInFlight, let seq, reportedSeq < seq, resends < policy.maxResends, let since = sentAt ?? issuedAt {
            guard now - since >= Self.redeliveryGrace else {
                // Out for less than the grace: the inventory may have crossed the bundle on its way, or the bundle
                // may have reached the broker before the device had subscribed again (after a broker restart, say)
                // and been dropped. An ack settles it; without one the bundle is sent again `retry.base` after it
                // went out (``tick(policy:now:)``: time for a modem to write and reconnect), not only after the
                // ack timeout.
                if nextAttemptAt == nil {
                    nextAttemptAt = since.saturatingAdd(max(Self.redeliveryGrace, policy.retry.base))
                    updatedAt = now
                }
                return nil
            }
            redeliver(now: now)
            return .redeliver
        }
        switch state {
        case .applied where !awaitsCSR && (seq.map { reportedSeq >= $0 } ?? false):
            scheduleRetry(
                as: .failed, error: "device applied the bundle but its inventory does not show the target digest",
                policy: policy, now: now)
        case .timedOut where fresh && nextAttemptAt != nil:
            // The device is back: retry now rather than at the end of the backoff.
            nextAttemptAt = now
            updatedAt = now
        default:
            break
        }
        return nil
    }

    /// Seconds a bundle has been out before an inventory without it counts as the device being back without it
    /// (an inventory published just before the bundle arrived is not a reason to send it again at once).
    public static let redeliveryGrace: Int64 = 2

    /// The outstanding bundle goes out again whole: one re-send more, its ack timer restarted, no redelivery left
    /// scheduled.
    private mutating func redeliver(now: Int64) {
        resends += 1
        if state == .sent { sentAt = now } else { issuedAt = now }
        nextAttemptAt = nil
        updatedAt = now
    }

    /// Time passes: ack timeouts fire, due retries start, and a scheduled redelivery goes out.
    public mutating func tick(policy: RotationPolicy, now: Int64) -> RotationEffect? {
        if isInFlight, let since = sentAt ?? issuedAt, now - since >= policy.ackTimeout {
            scheduleRetry(as: .timedOut, error: "no ack within \(policy.ackTimeout) s", policy: policy, now: now)
        }
        if state == .applied, awaitsCSR, let applied = appliedAt, now - applied >= policy.ackTimeout {
            scheduleRetry(
                as: .timedOut, error: "keygen applied but no CSR within \(policy.ackTimeout) s", policy: policy,
                now: now)
        }
        if isInFlight, let due = nextAttemptAt, due <= now {
            // A redelivery scheduled by an inventory that came within the grace (``inventoryArrived``): no ack since.
            guard resends < policy.maxResends else {
                nextAttemptAt = nil
                updatedAt = now
                return nil
            }
            redeliver(now: now)
            return .redeliver
        }
        if awaitsBundle, let due = nextAttemptAt, due <= now {
            // Waited (``wait(error:retryAt:now:)``): for the signing key, or for an issuance budget; try again.
            nextAttemptAt = nil
            updatedAt = now
            return .issueBundle
        }
        if state == .failed || state == .timedOut, let due = nextAttemptAt, due <= now {
            state = .pending
            jti = nil
            nextAttemptAt = nil
            updatedAt = now
            return .issueBundle
        }
        return nil
    }

    /// No bundle can serve this rotation (its parts would not fit the device's `maxMessage`, the device's seq is
    /// at its maximum): `failed`, with no retry.
    public mutating func cannotBeServed(error: String, now: Int64) {
        state = .failed
        lastError = error
        nextAttemptAt = nil
        updatedAt = now
    }

    /// The device's CSR was taken and its certificate issued (and stored) with this digest: the rotation starts its
    /// second phase, a bundle writing the certificate and activating its tag. The attempt count carries on.
    public mutating func certificateIssued(sha256: String, now: Int64) {
        precondition(awaitsCSR && sha256 != Self.digestUnknown)
        self.sha256 = sha256
        state = .pending
        jti = nil
        seq = nil
        issuedAt = nil
        sentAt = nil
        appliedAt = nil
        resends = 0
        nextAttemptAt = nil
        lastError = nil
        updatedAt = now
    }

    /// The device's CSR failed a check (docs/protocol.md §11): `failed`, retried with a new `keygen` after the
    /// backoff while attempts remain. Nothing was issued; the keygen bundle's ack, which follows, is stale.
    public mutating func csrRefused(error: String, policy: RotationPolicy, now: Int64) {
        scheduleRetry(as: .failed, error: error, policy: policy, now: now)
        jti = nil  // the keygen's own ack, which follows its CSR, must not revive the rotation
    }

    /// The bundle could not be signed (the signing key's token is unavailable): the rotation stays `pending` with
    /// no bundle, no attempt counted, and asks again at `retryAt`. Nothing was issued, so nothing is lost.
    public mutating func waitForSigner(error: String, retryAt: Int64, now: Int64) {
        wait(error: error, retryAt: retryAt, now: now)
    }

    /// A rotation awaiting its bundle waits until `retryAt` (the signing key's token is unavailable, an issuance
    /// budget is spent): no attempt is counted.
    public mutating func wait(error: String, retryAt: Int64, now: Int64) {
        guard awaitsBundle else { return }
        lastError = error
        nextAttemptAt = retryAt
        updatedAt = now
    }

    /// Drops the outstanding bundle (never acknowledged) so that a new one is issued; counts as no attempt.
    public mutating func abandonBundle(now: Int64) {
        guard isInFlight else { return }
        state = .pending
        jti = nil
        seq = nil
        issuedAt = nil
        sentAt = nil
        nextAttemptAt = nil
        attempts = max(0, attempts - 1)
        updatedAt = now
    }

    /// True when `cancel` would stop it: nothing is out, only a bundle still to issue or a retry still to come.
    public var isCancellable: Bool {
        awaitsBundle || ((state == .failed || state == .timedOut) && nextAttemptAt != nil)
    }

    /// Stops a rotation that has no bundle out (in-flight bundles are not recalled; their acks still count).
    public mutating func cancel(reason: String, now: Int64) {
        guard isCancellable else { return }
        state = .cancelled
        nextAttemptAt = nil
        lastError = reason
        updatedAt = now
    }

    /// Restarts the rotation for a new target digest (or a device that lost a verified credential).
    public mutating func restart(sha256: String, now: Int64) {
        self = Rotation(device: device, target: target, sha256: sha256, now: now)
    }

    /// A `verified` device's inventory no longer shows the target: rotate again, but not sooner than
    /// `minInterval` after the last bundle. A device that flaps between holding and not holding the credential
    /// gets at most one bundle per interval; the rotation waits as `failed` with its next attempt set.
    public mutating func credentialLost(now: Int64, minInterval: Int64) {
        let lastIssued = issuedAt
        restart(sha256: sha256, now: now)
        guard let lastIssued, now.saturatingSubtract(lastIssued) < minInterval else { return }
        state = .failed
        nextAttemptAt = lastIssued.saturatingAdd(minInterval)
        issuedAt = lastIssued  // no bundle is out (no jti): kept only so that the next loss is measured from it
        lastError = "the device lost the credential within \(minInterval) s of its last bundle; the next bundle waits"
    }

    private mutating func scheduleRetry(as failure: RotationState, error: String, policy: RotationPolicy, now: Int64) {
        state = failure
        lastError = error
        updatedAt = now
        nextAttemptAt =
            attempts < policy.retry.attempts ? now.saturatingAdd(policy.retry.delay(afterAttempt: attempts)) : nil
    }

    private static func describe(_ ack: Ack, prefix: String) -> String {
        var text = prefix
        if let code = ack.code { text += " (code \(code))" }
        if let reason = ack.reason { text += ": \(reason.prefix(200))" }
        return text
    }
}
