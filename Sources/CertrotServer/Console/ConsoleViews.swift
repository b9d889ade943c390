import Mustache

// What each console page shows, typed: swift-mustache reads a struct's stored properties by name (through Mirror),
// as it reads a dictionary's keys. A value a template shows is never optional: an optional that is nil would let
// the lookup fall through to the enclosing context's member of the same name.

/// A page's context: its title and time beside the page's own members (`{{title}}`, `{{generated}}` in the head
/// and foot).
struct PageContext<Body>: MustacheParent {
    let title: String
    let generated: String
    let body: Body

    func child(named name: String) -> Any? {
        switch name {
        case "title": return title
        case "generated": return generated
        default:
            guard let value = Mirror(reflecting: body).children.first(where: { $0.label == name })?.value else {
                return nil
            }
            let mirror = Mirror(reflecting: value)
            return mirror.displayStyle == .optional ? mirror.children.first?.value : value
        }
    }
}

/// A stacked bar of counts by state and its legend (``ConsoleTemplates/stacked``): the states in `order` first,
/// then any other, alphabetically.
struct Stacked {
    struct Segment {
        let state: String
        let count: Int
        let x: String
        let width: String
    }

    let label: String
    let total: Int
    let segments: [Segment]

    init(_ label: String, _ counts: [String: Int], order: [String]) {
        let states = order + counts.keys.filter { !order.contains($0) }.sorted()
        let total = counts.values.reduce(0, +)
        var x = 0.0
        var segments: [Segment] = []
        for state in states {
            guard let count = counts[state], count > 0 else { continue }
            let width = total > 0 ? 100 * Double(count) / Double(total) : 0
            segments.append(
                Segment(state: state, count: count, x: Console.format(x), width: Console.format(width)))
            x += width
        }
        self.label = label
        self.total = total
        self.segments = segments
    }
}

/// A bar chart (``ConsoleTemplates/bars``): bars 22 wide, 8 apart, the tallest 46 high.
struct Bars {
    struct Bar {
        let name: String
        let value: Int
        let hot: Bool
        let x: String
        let y: String
        let height: String
        let barWidth = 22
        let labelX: String
        let valueY: String
    }

    let label: String
    let width: Int
    let bars: [Bar]

    init(_ label: String, _ values: [(name: String, value: Int, hot: Bool)]) {
        let top = max(values.map(\.value).max() ?? 0, 1)
        self.label = label
        width = 4 + values.count * 30
        bars = values.enumerated().map { index, bar in
            let height = bar.value == 0 ? 0.5 : max(1, 46 * Double(bar.value) / Double(top))
            let x = 4 + Double(index) * 30
            return Bar(
                name: bar.name, value: bar.value, hot: bar.hot && bar.value > 0, x: Console.format(x),
                y: Console.format(54 - height), height: Console.format(height), labelX: Console.format(x + 11),
                valueY: Console.format(54 - height - 1.5))
        }
    }
}

/// A campaign in the fleet's and the campaigns page's tables.
struct CampaignRow {
    let id: String
    let name: String
    let state: String
    let origin: String
    let total: Int
    let created: String

    init(_ c: CampaignList.Result.Summary) {
        id = c.id
        name = c.name
        state = c.state
        origin = c.origin
        total = c.total
        created = Console.time(c.createdAt)
    }
}

struct FleetPage {
    struct Target {
        let name: String
        let id: String
        let tag: Int64
        let chart: Stacked
    }

    struct ClientCerts {
        let name: String
        let id: String
        let issuer: String
        let chart: Stacked
        let certificates: Stacked
    }

    struct Expiry {
        let name: String
        let id: String
        let chart: Bars
    }

    let devices: Int
    let running: Int
    let stranded: Int
    let kid: String
    let kidShort: String
    let targets: [Target]
    let hasClientCerts: Bool
    let clientCerts: [ClientCerts]
    let expiry: [Expiry]
    let campaigns: [CampaignRow]
}

struct RiskPage {
    struct Target {
        let name: String
        let id: String
        let atRisk: Int
        let expired: Int
        let chart: Bars
    }

    struct Device {
        let device: String
        let deviceHref: String
        let target: String
        let expires: String
        let daysLeft: Int64
        let lastSeen: String
        let daysAway: Int64
    }

    let targets: [Target]
    let devices: [Device]
}

struct CampaignsPage {
    let campaigns: [CampaignRow]
}

struct CampaignPage {
    /// A wave's progress bar: verified, in flight (pending, sent, applied) and failed (failed, rejected, timed out).
    struct Wave {
        let number: Int
        let size: Int
        let state: String
        let verified: Int
        let sent: Int
        let failed: Int
        let verifiedPct: String
        let sentPct: String
        let failedPct: String

        init(_ wave: CampaignStatus.Result.Wave) {
            let states = wave.states
            number = wave.index + 1
            size = wave.size
            state = wave.state
            verified = states["verified", default: 0]
            sent = states["pending", default: 0] + states["sent", default: 0] + states["applied", default: 0]
            failed = states["failed", default: 0] + states["rejected", default: 0] + states["timed_out", default: 0]
            let size = wave.size
            func pct(_ n: Int) -> String { size > 0 ? String(format: "%.2f", 100 * Double(n) / Double(size)) : "0" }
            verifiedPct = pct(verified)
            sentPct = pct(sent)
            failedPct = pct(failed)
        }
    }

    struct Failure {
        let reason: String
        let count: Int
        let example: String
        let exampleHref: String
    }

    let id: String
    let name: String
    let state: String
    let kind: String
    let total: Int
    let eta: String
    let waves: [Wave]
    let failures: [Failure]
}

struct DevicesPage {
    struct Result {
        let device: String
        let deviceHref: String
        let lastSeen: String
    }

    let q: String
    var searched = false
    var results: [Result] = []
    var count = 0
    var more = false
}

struct DevicePage {
    struct Credential {
        let tag: Int64
        let type: Int
        let name: String
        let expires: String
        let sha: String
    }

    struct Rotation {
        let target: String
        let state: String
        let attempts: Int
        let updated: String
        let lastError: String
    }

    struct Issued {
        let policy: String
        let serial: String
        let tag: Int64
        let state: String
        let until: String
    }

    struct History {
        let when: String
        let target: String
        let state: String
        let detail: String
    }

    let device: String
    let shown: String
    let firstSeen: String
    let lastSeen: String
    let issuedSeq: Int64
    let reportedSeq: String
    let inventory: [Credential]
    let rotations: [Rotation]
    let hasIssued: Bool
    let issued: [Issued]
    let history: [History]
}
