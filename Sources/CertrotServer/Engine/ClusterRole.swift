import CertrotCore

/// One replica's place in a cluster of daemons on one PostgreSQL (docs/scaling.md), as decisions the engine
/// carries out: when to check the leadership and what changed, when the leader takes over, and when it also
/// reads retained inventories without sharing them (a broker delivers no retained message through a shared
/// subscription, and a dead replica's unhandled messages are gone with its clean session).
package struct ClusterRole {
    package enum Change: Equatable { case leading, following }
    package enum CatchUp: Equatable { case subscribe, unsubscribe }

    let settings: DaemonSettings.ClusterSettings
    /// A replica leads only once it holds the leadership.
    package private(set) var isLeader = false
    private var checkedAt = -Double.infinity
    private var reported = false
    private var takeOverPending = false
    private var staleCheckAt: Int64 = .min
    /// While set (monotonic seconds), the leader also subscribes to retained inventories without sharing them.
    package private(set) var catchingUpUntil: Double?
    /// How long a catch-up lasts after the last reason for one.
    static let catchUpSeconds = 10.0

    package init(_ settings: DaemonSettings.ClusterSettings) {
        self.settings = settings
    }

    /// Inbound subscriptions: shared among the replicas, each message to one of them.
    package var inboundFilters: [String] { shared([Topics.inventoryFilter, Topics.ackFilter]) }

    /// `filters` as subscriptions shared by the replicas.
    package func shared(_ filters: [String]) -> [String] { filters.map { "$share/\(settings.group)/\($0)" } }

    /// Once a second (monotonic `now`): time to send a heartbeat and ask the store for the leadership.
    package mutating func leadershipCheckDue(now: Double) -> Bool {
        guard now - checkedAt >= 1 else { return false }
        checkedAt = now
        return true
    }

    /// What the store said: the change, if any (on the first check, the role either way). Becoming the leader
    /// makes the next tick take over.
    package mutating func leadership(_ leading: Bool) -> Change? {
        guard leading != isLeader || !reported else { return nil }
        reported = true
        isLeader = leading
        if leading { takeOverPending = true }
        return leading ? .leading : .following
    }

    /// True once after becoming the leader: reload the campaigns and catch up.
    package mutating func takeOver() -> Bool {
        defer { takeOverPending = false }
        return takeOverPending
    }

    /// Once per wall-clock second: look for replicas that stopped reporting.
    package mutating func staleCheckDue(now: Int64) -> Bool {
        guard now != staleCheckAt else { return false }
        staleCheckAt = now
        return true
    }

    /// `triggered`: a reason to catch up now (leadership taken, a replica found dead). Returns what to do with
    /// the unshared inventory subscription.
    package mutating func catchUp(now: Double, triggered: Bool) -> CatchUp? {
        if triggered {
            defer { catchingUpUntil = now + Self.catchUpSeconds }
            return catchingUpUntil == nil ? .subscribe : nil
        }
        guard let until = catchingUpUntil, now >= until else { return nil }
        catchingUpUntil = nil
        return .unsubscribe
    }
}
