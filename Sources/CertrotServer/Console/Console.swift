import CertrotCore
import Crypto
import Foundation
import Hummingbird
import Logging
import Mustache

/// The operator console at `/` (docs/operations.md, "The console"): the fleet, the stranded risk, campaigns with
/// their waves live, devices. Pages are rendered here from the same JSON-RPC methods the HTTP API calls
/// (``LocalRPC``); the campaign page polls `/api/v1/campaigns/{id}` and sends pause, resume and abort there with the
/// token the operator typed (a header, never a cookie). Served on a loopback listener only: a page carries the data
/// a read returns, and a browser cannot send a bearer token with a navigation.
struct Console: Sendable {
    let rpc: LocalRPC
    let library: MustacheLibrary
    let logger: Logger

    init(rpc: LocalRPC, logger: Logger) throws {
        var library = MustacheLibrary()
        for (name, text) in ConsoleTemplates.all { try library.register(text, named: name) }
        self.rpc = rpc
        self.library = library
        self.logger = logger
    }

    func register(on router: RouterGroup<BasicRequestContext>, enabled: Bool) {
        let pages: [(String, @Sendable (Request, BasicRequestContext) async -> Response)] = [
            ("/", { _, _ in await fleet() }),
            ("/risk", { _, _ in await risk() }),
            ("/campaigns", { _, _ in await campaigns() }),
            ("/campaigns/:id", { _, context in await campaign(Self.parameter(context, "id")) }),
            ("/devices", { request, _ in await devices(query: request.uri.queryParameters.get("q") ?? "") }),
            ("/devices/:id", { _, context in await device(Self.parameter(context, "id")) }),
            // The console's own links to a device: the ID in the query, where no path rule (`..`, `%41`) applies.
            ("/device", { request, _ in await device(request.uri.queryParameters.get("id") ?? "") }),
        ]
        router.get("/console/campaign.js") { _, _ -> Response in
            var headers = HTTPFields()
            headers[.contentType] = "text/javascript; charset=utf-8"
            headers[.cacheControl] = "no-cache"
            return Response(
                status: .ok, headers: headers,
                body: .init(byteBuffer: ByteBuffer(string: ConsoleTemplates.campaignScript)))
        }
        for (path, page) in pages {
            router.get(RouterPath(path)) { request, context -> Response in
                guard enabled else {
                    return Self.text(
                        .forbidden,
                        "The console is served on a loopback listener only (http.host 127.0.0.1): reach it through an "
                            + "SSH tunnel, or a proxy that authenticates. The API (/api/v1/) takes a token here.\n")
                }
                return await page(request, context)
            }
        }
    }

    /// The console's link to a device's page: its ID percent-encoded in the query (every byte but the unreserved
    /// ones), so that an ID such as `a%41`, `..` or `x?y=1` opens its own page (red-team #32, finding 9).
    static func deviceHref(_ id: String) -> String {
        var unreserved = CharacterSet.alphanumerics.intersection(
            CharacterSet(charactersIn: Unicode.Scalar(0)...Unicode.Scalar(127)))
        unreserved.insert(charactersIn: "-._~")
        return "/device?id=" + (id.addingPercentEncoding(withAllowedCharacters: unreserved) ?? "")
    }

    /// The Subresource Integrity of `/console/campaign.js`, in the page that loads it: the pages allow scripts from
    /// their own origin only (`script-src 'self'`, no inline script), and every response carries `nosniff`, so no
    /// other body the daemon serves runs as a script.
    static let campaignScriptIntegrity =
        "sha256-" + Data(SHA256.hash(data: Data(ConsoleTemplates.campaignScript.utf8))).base64EncodedString()

    static func parameter(_ context: BasicRequestContext, _ name: String) -> String {
        let raw = context.parameters.get(name) ?? ""
        return raw.removingPercentEncoding ?? raw
    }

    // MARK: Calls and responses

    enum Outcome {
        case ok([String: Any])
        case failed(Response)
    }

    func read(_ method: String, _ params: [String: Any] = [:]) async -> Outcome {
        switch await rpc.call(method, params: params, token: nil) {
        case .result(let data):
            return .ok((try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:])
        case .error(let code, let message, _):
            return .failed(Self.text(.init(code: HTTPProblem.status(code: code)), message + "\n"))
        case .unavailable(let message):
            return .failed(Self.text(.serviceUnavailable, message + "\n"))
        }
    }

    func page(_ template: String, title: String, _ context: [String: Any]) -> Response {
        var context = context
        context["title"] = title
        context["generated"] = Self.time(Int64(Date().timeIntervalSince1970))
        guard let html = library.render(context, withTemplate: template) else {
            logger.error("console: no template \(template)")
            return Self.text(.internalServerError, "internal error\n")
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        headers[.contentSecurityPolicy] =
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    // MARK: Pages

    func fleet() async -> Response {
        let status: [String: Any]
        switch await read(FleetStatus.name) {
        case .ok(let value): status = value
        case .failed(let response): return response
        }
        let list: [String: Any]
        switch await read(CampaignList.name) {
        case .ok(let value): list = value
        case .failed(let response): return response
        }
        let risk: [String: Any]
        switch await read(FleetRisk.name, ["limit": 0]) {
        case .ok(let value): risk = value
        case .failed(let response): return response
        }
        let targets = (status["targets"] as? [String: [String: Any]] ?? [:]).sorted { $0.key < $1.key }
        let expiry = (status["expiry"] as? [String: Any])?["targets"] as? [String: [String: Int]] ?? [:]
        let clientCerts = (status["clientCerts"] as? [String: [String: Any]] ?? [:]).sorted { $0.key < $1.key }
        let campaigns = (list["campaigns"] as? [[String: Any]] ?? []).reversed().map(Self.campaignRow)
        let stranded = (risk["targets"] as? [String: [String: Any]] ?? [:]).values.reduce(0) {
            $0 + ($1["atRisk"] as? Int ?? 0)
        }
        let kid = (status["signing"] as? [String: Any])?["kid"] as? String ?? ""
        return page(
            "fleet", title: "Fleet",
            [
                "devices": status["devices"] as? Int ?? 0, "stranded": stranded, "kid": kid,
                "kidShort": String(kid.prefix(8)) + (kid.count > 8 ? "…" : ""),
                "running": campaigns.filter { $0["state"] as? String == "running" }.count,
                "campaigns": campaigns,
                "targets": targets.map { name, target in
                    [
                        "name": name, "id": Self.id(name), "tag": target["tag"] as? Int ?? 0,
                        "chart": Self.stacked(
                            "\(name): devices by rotation state", target["states"] as? [String: Int] ?? [:],
                            order: Self.stateOrder),
                    ] as [String: Any]
                },
                "hasClientCerts": !clientCerts.isEmpty,
                "clientCerts": clientCerts.map { name, policy in
                    [
                        "name": name, "id": Self.id(name), "issuer": policy["issuer"] as? String ?? "",
                        "chart": Self.stacked(
                            "\(name): rotations by state", policy["states"] as? [String: Int] ?? [:],
                            order: Self.stateOrder),
                        "certificates": Self.stacked(
                            "\(name): issued certificates by state", policy["certificates"] as? [String: Int] ?? [:],
                            order: ["issued", "active", "revoked"]),
                    ] as [String: Any]
                },
                "expiry": expiry.sorted { $0.key < $1.key }.map { name, buckets in
                    let order = [
                        ("expired", "expired"), ("< 7 d", "lt7d"), ("< 30 d", "lt30d"), ("< 90 d", "lt90d"),
                        ("later", "later"),
                    ]
                    return [
                        "name": name, "id": "x-" + Self.id(name),
                        "chart": Self.bars(
                            "\(name): devices by days left on the chain they hold",
                            order.map { ($0.0, buckets[$0.1] ?? 0, $0.1 == "expired" || $0.1 == "lt7d") }),
                    ] as [String: Any]
                },
            ])
    }

    func risk() async -> Response {
        let risk: [String: Any]
        switch await read(FleetRisk.name, ["limit": 200]) {
        case .ok(let value): risk = value
        case .failed(let response): return response
        }
        let now = risk["now"] as? Int64 ?? Int64(Date().timeIntervalSince1970)
        let targets = (risk["targets"] as? [String: [String: Any]] ?? [:]).sorted { $0.key < $1.key }
        return page(
            "risk", title: "Stranded risk",
            [
                "targets": targets.map { name, target in
                    let byWeek = target["byWeek"] as? [Int] ?? []
                    let shown = min(max(byWeek.count, 8), 26)
                    var bars: [(String, Int, Bool)] = [("exp", target["expired"] as? Int ?? 0, true)]
                    for week in 0..<shown {
                        bars.append(("w\(week + 1)", week < byWeek.count ? byWeek[week] : 0, week < 4))
                    }
                    let beyond = byWeek.dropFirst(shown).reduce(0, +) + (target["later"] as? Int ?? 0)
                    bars.append(("later", beyond, false))
                    return [
                        "name": name, "id": Self.id(name), "atRisk": target["atRisk"] as? Int ?? 0,
                        "expired": target["expired"] as? Int ?? 0,
                        "chart": Self.bars("\(name): devices at risk by week until their chain expires", bars),
                    ] as [String: Any]
                },
                "devices": (risk["devices"] as? [[String: Any]] ?? []).map { entry in
                    let notAfter = Self.int(entry["notAfter"])
                    let lastSeen = Self.int(entry["lastSeen"])
                    return [
                        "device": VisibleText.escaped(entry["device"] as? String ?? ""),
                        "deviceHref": Self.deviceHref(entry["device"] as? String ?? ""),
                        "target": entry["target"] as? String ?? "",
                        "expires": Self.time(notAfter), "daysLeft": (notAfter - now) / 86400,
                        "lastSeen": Self.time(lastSeen), "daysAway": (now - lastSeen) / 86400,
                    ] as [String: Any]
                },
            ])
    }

    func campaigns() async -> Response {
        switch await read(CampaignList.name) {
        case .ok(let list):
            let rows = (list["campaigns"] as? [[String: Any]] ?? []).reversed().map(Self.campaignRow)
            return page("campaigns", title: "Campaigns", ["campaigns": rows])
        case .failed(let response): return response
        }
    }

    func campaign(_ id: String) async -> Response {
        let status: [String: Any]
        switch await read(CampaignStatus.name, ["id": id]) {
        case .ok(let value): status = value
        case .failed(let response): return response
        }
        let waves = (status["waves"] as? [[String: Any]] ?? []).map { wave -> [String: Any] in
            let size = wave["size"] as? Int ?? 0
            let states = wave["states"] as? [String: Int] ?? [:]
            let verified = states["verified", default: 0]
            let sent = states["pending", default: 0] + states["sent", default: 0] + states["applied", default: 0]
            let failed = states["failed", default: 0] + states["rejected", default: 0] + states["timed_out", default: 0]
            func pct(_ n: Int) -> String { size > 0 ? String(format: "%.2f", 100 * Double(n) / Double(size)) : "0" }
            return [
                "number": (wave["index"] as? Int ?? 0) + 1, "size": size, "state": wave["state"] as? String ?? "",
                "verified": verified, "sent": sent, "failed": failed, "verifiedPct": pct(verified),
                "sentPct": pct(sent), "failedPct": pct(failed),
            ]
        }
        var byReason: [String: (count: Int, example: String)] = [:]
        for failure in status["failures"] as? [[String: Any]] ?? [] {
            let reason =
                (failure["reason"] as? String).map { String($0.prefix(120)) } ?? failure["state"] as? String ?? "?"
            let device = failure["device"] as? String ?? ""
            byReason[reason, default: (0, device)].count += 1
        }
        let eta = (status["eta"] as? Int).map { $0 == 0 ? "finished" : "about \($0) s to go" } ?? "no rate yet"
        return page(
            "campaign", title: status["name"] as? String ?? id,
            [
                "id": id, "name": status["name"] as? String ?? id, "state": status["state"] as? String ?? "",
                "kind": status["kind"] as? String ?? "", "total": status["total"] as? Int ?? 0, "eta": eta,
                "waves": waves,
                "failures": byReason.sorted { ($1.value.count, $0.key) < ($0.value.count, $1.key) }.map {
                    [
                        "reason": VisibleText.escaped($0.key), "count": $0.value.count,
                        "example": VisibleText.escaped($0.value.example),
                        "exampleHref": Self.deviceHref($0.value.example),
                    ] as [String: Any]
                },
            ])
    }

    func devices(query: String) async -> Response {
        let q = String(query.trimmingCharacters(in: .whitespaces).prefix(128))
        guard !q.isEmpty else { return page("devices", title: "Devices", ["q": "", "searched": false]) }
        if case .ok = await read(DeviceStatus.name, ["device": q]) {
            var headers = HTTPFields()
            headers[.location] = Self.deviceHref(q)
            return Response(status: .seeOther, headers: headers)
        }
        var results: [[String: Any]] = []
        var more = false
        switch await read(DeviceList.name, ["prefix": q, "limit": 100]) {
        case .ok(let list):
            results = (list["devices"] as? [[String: Any]] ?? []).map {
                let id = $0["device"] as? String ?? ""
                return [
                    "device": VisibleText.escaped(id), "deviceHref": Self.deviceHref(id),
                    "lastSeen": Self.time(Self.int($0["lastSeen"])),
                ]
            }
            more = list["next"] is String
        case .failed(let response): return response
        }
        return page(
            "devices", title: "Devices",
            ["q": q, "searched": true, "results": results, "count": results.count, "more": more])
    }

    func device(_ id: String) async -> Response {
        let status: [String: Any]
        switch await read(DeviceStatus.name, ["device": id]) {
        case .ok(let value): status = value
        case .failed(let response): return response
        }
        let issued = status["issuedCertificates"] as? [[String: Any]] ?? []
        return page(
            "device", title: VisibleText.escaped(id),
            [
                "device": id, "shown": VisibleText.escaped(id), "firstSeen": Self.time(Self.int(status["firstSeen"])),
                "lastSeen": Self.time(Self.int(status["lastSeen"])), "issuedSeq": Self.int(status["issuedSeq"]),
                "reportedSeq": status["reportedSeq"].map { "\($0)" } ?? "—",
                "inventory": (status["inventory"] as? [[String: Any]] ?? []).map { cred in
                    [
                        "tag": Self.int(cred["tag"]), "type": Self.int(cred["type"]),
                        "name": cred["name"] as? String ?? "unknown",
                        "expires": cred["notAfter"].map { Self.time(Self.int($0)) } ?? "—",
                        "sha": String((cred["sha256"] as? String ?? "").prefix(16)) + "…",
                    ] as [String: Any]
                },
                "rotations": (status["rotations"] as? [[String: Any]] ?? []).map { r in
                    [
                        "target": r["target"] as? String ?? "", "state": r["state"] as? String ?? "",
                        "attempts": Self.int(r["attempts"]), "updated": Self.time(Self.int(r["updatedAt"])),
                        "lastError": VisibleText.escaped(r["lastError"] as? String ?? ""),
                    ] as [String: Any]
                },
                "hasIssued": !issued.isEmpty,
                "issued": issued.map { c in
                    [
                        "policy": c["policy"] as? String ?? "", "serial": c["serial"] as? String ?? "",
                        "tag": Self.int(c["tag"]), "state": c["state"] as? String ?? "",
                        "until": Self.time(Self.int(c["notAfter"])),
                    ] as [String: Any]
                },
                "history": (status["history"] as? [[String: Any]] ?? []).reversed().map { h in
                    [
                        "when": Self.time(Self.int(h["at"])), "target": h["target"] as? String ?? "",
                        "state": h["state"] as? String ?? "", "detail": h["detail"] as? String ?? "",
                    ] as [String: Any]
                },
            ])
    }

    // MARK: Pieces

    /// States in the order the charts show them: done, moving, failed, waiting.
    static let stateOrder = [
        "in_sync", "verified", "applied", "sent", "pending", "timed_out", "failed", "rejected", "waiting", "cancelled",
    ]

    static func campaignRow(_ c: [String: Any]) -> [String: Any] {
        [
            "id": c["id"] as? String ?? "", "name": c["name"] as? String ?? "", "state": c["state"] as? String ?? "",
            "origin": c["origin"] as? String ?? "", "total": c["total"] as? Int ?? 0,
            "created": time(int(c["createdAt"])),
        ]
    }

    /// A stacked bar's context (``ConsoleTemplates/stacked``): the states in `order` first, then any other.
    static func stacked(_ label: String, _ counts: [String: Int], order: [String]) -> [String: Any] {
        let states = order + counts.keys.filter { !order.contains($0) }.sorted()
        let total = counts.values.reduce(0, +)
        var x = 0.0
        var segments: [[String: Any]] = []
        for state in states {
            guard let count = counts[state], count > 0 else { continue }
            let width = total > 0 ? 100 * Double(count) / Double(total) : 0
            segments.append(["state": state, "count": count, "x": format(x), "width": format(width)])
            x += width
        }
        return ["label": label, "total": total, "segments": segments]
    }

    /// A bar chart's context (``ConsoleTemplates/bars``): bars 22 wide, 8 apart, the tallest 46 high.
    static func bars(_ label: String, _ values: [(name: String, value: Int, hot: Bool)]) -> [String: Any] {
        let top = max(values.map(\.value).max() ?? 0, 1)
        var bars: [[String: Any]] = []
        for (index, bar) in values.enumerated() {
            let height = bar.value == 0 ? 0.5 : max(1, 46 * Double(bar.value) / Double(top))
            let x = 4 + Double(index) * 30
            bars.append([
                "name": bar.name, "value": bar.value, "hot": bar.hot && bar.value > 0, "x": format(x),
                "y": format(54 - height), "height": format(height), "barWidth": 22, "labelX": format(x + 11),
                "valueY": format(54 - height - 1.5),
            ])
        }
        return ["label": label, "width": 4 + values.count * 30, "bars": bars]
    }

    static func format(_ value: Double) -> String { String(format: "%.2f", value) }

    static func int(_ value: Any?) -> Int64 {
        (value as? NSNumber)?.int64Value ?? 0
    }

    /// An element id from a name.
    static func id(_ name: String) -> String {
        String(name.map { $0.isLetter || $0.isNumber ? $0 : "-" })
    }

    static func time(_ seconds: Int64) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm 'UTC'"
        return formatter.string(from: Date(timeIntervalSince1970: Double(seconds)))
    }
}
