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
        let pages: [(String, @Sendable (Request, BasicRequestContext) async throws(Failure) -> Response)] = [
            ("/", { _, _ throws(Failure) in try await fleet() }),
            ("/risk", { _, _ throws(Failure) in try await risk() }),
            ("/campaigns", { _, _ throws(Failure) in try await campaigns() }),
            ("/campaigns/:id", { _, context throws(Failure) in try await campaign(Self.parameter(context, "id")) }),
            (
                "/devices",
                { request, _ throws(Failure) in
                    try await devices(query: request.uri.queryParameters.get("q") ?? "")
                }
            ),
            ("/devices/:id", { _, context throws(Failure) in try await device(Self.parameter(context, "id")) }),
            // The console's own links to a device: the ID in the query, where no path rule (`..`, `%41`) applies.
            (
                "/device",
                { request, _ throws(Failure) in try await device(request.uri.queryParameters.get("id") ?? "") }
            ),
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
                do throws(Failure) {
                    return try await page(request, context)
                } catch {
                    return error.response
                }
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

    /// A read that failed: the response that says so (the RPC error's status and message).
    struct Failure: Error {
        let response: Response
    }

    /// Calls `method` as the HTTP API would and decodes its typed result.
    func read<M: RPCMethod>(_ method: M.Type, _ params: [String: Any] = [:]) async throws(Failure) -> M.Result {
        switch await rpc.call(M.name, params: params, token: nil) {
        case .result(let data):
            do {
                return try JSONDecoder().decode(M.Result.self, from: data)
            } catch {
                logger.error("console: \(M.name) answered what its result type does not decode: \(error)")
                throw Failure(response: Self.text(.internalServerError, "internal error\n"))
            }
        case .error(let code, let message, _):
            throw Failure(response: Self.text(.init(code: HTTPProblem.status(code: code)), message + "\n"))
        case .unavailable(let message):
            throw Failure(response: Self.text(.serviceUnavailable, message + "\n"))
        }
    }

    func page<Body>(_ template: String, title: String, _ body: Body) -> Response {
        let context = PageContext(title: title, generated: Self.time(Int64(Date().timeIntervalSince1970)), body: body)
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

    func fleet() async throws(Failure) -> Response {
        let status = try await read(FleetStatus.self)
        let campaigns = try await read(CampaignList.self).campaigns.reversed().map(CampaignRow.init)
        let risk = try await read(FleetRisk.self, ["limit": 0])
        let kid = status.signing.kid
        let buckets = [
            ("expired", "expired"), ("< 7 d", "lt7d"), ("< 30 d", "lt30d"), ("< 90 d", "lt90d"), ("later", "later"),
        ]
        return page(
            "fleet", title: "Fleet",
            FleetPage(
                devices: status.devices, running: campaigns.filter { $0.state == "running" }.count,
                stranded: risk.targets.values.reduce(0) { $0 + $1.atRisk }, kid: kid,
                kidShort: String(kid.prefix(8)) + (kid.count > 8 ? "…" : ""),
                targets: status.targets.sorted { $0.key < $1.key }.map { name, target in
                    FleetPage.Target(
                        name: name, id: Self.id(name), tag: target.tag,
                        chart: Stacked("\(name): devices by rotation state", target.states, order: Self.stateOrder))
                },
                hasClientCerts: !(status.clientCerts ?? [:]).isEmpty,
                clientCerts: (status.clientCerts ?? [:]).sorted { $0.key < $1.key }.map { name, policy in
                    FleetPage.ClientCerts(
                        name: name, id: Self.id(name), issuer: policy.issuer,
                        chart: Stacked("\(name): rotations by state", policy.states, order: Self.stateOrder),
                        certificates: Stacked(
                            "\(name): issued certificates by state", policy.certificates,
                            order: ["issued", "active", "revoked"]))
                },
                expiry: status.expiry.targets.sorted { $0.key < $1.key }.map { name, counts in
                    let byKey = [
                        "expired": counts.expired, "lt7d": counts.lt7d, "lt30d": counts.lt30d, "lt90d": counts.lt90d,
                        "later": counts.later,
                    ]
                    return FleetPage.Expiry(
                        name: name, id: "x-" + Self.id(name),
                        chart: Bars(
                            "\(name): devices by days left on the chain they hold",
                            buckets.map { ($0.0, byKey[$0.1] ?? 0, $0.1 == "expired" || $0.1 == "lt7d") }))
                },
                campaigns: campaigns))
    }

    func risk() async throws(Failure) -> Response {
        let risk = try await read(FleetRisk.self, ["limit": 200])
        let now = risk.now
        return page(
            "risk", title: "Stranded risk",
            RiskPage(
                targets: risk.targets.sorted { $0.key < $1.key }.map { name, target in
                    let shown = min(max(target.byWeek.count, 8), 26)
                    var bars: [(String, Int, Bool)] = [("exp", target.expired, true)]
                    for week in 0..<shown {
                        bars.append(("w\(week + 1)", week < target.byWeek.count ? target.byWeek[week] : 0, week < 4))
                    }
                    bars.append(("later", target.byWeek.dropFirst(shown).reduce(0, +) + target.later, false))
                    return RiskPage.Target(
                        name: name, id: Self.id(name), atRisk: target.atRisk, expired: target.expired,
                        chart: Bars("\(name): devices at risk by week until their chain expires", bars))
                },
                devices: risk.devices.map { entry in
                    RiskPage.Device(
                        device: VisibleText.escaped(entry.device), deviceHref: Self.deviceHref(entry.device),
                        target: entry.target, expires: Self.time(entry.notAfter),
                        daysLeft: (entry.notAfter - now) / 86400,
                        lastSeen: Self.time(entry.lastSeen), daysAway: (now - entry.lastSeen) / 86400)
                }))
    }

    func campaigns() async throws(Failure) -> Response {
        let rows = try await read(CampaignList.self).campaigns.reversed().map(CampaignRow.init)
        return page("campaigns", title: "Campaigns", CampaignsPage(campaigns: rows))
    }

    func campaign(_ id: String) async throws(Failure) -> Response {
        let status = try await read(CampaignStatus.self, ["id": id])
        var byReason: [String: (count: Int, example: String)] = [:]
        for failure in status.failures {
            let reason = failure.reason.map { String($0.prefix(120)) } ?? failure.state
            byReason[reason, default: (0, failure.device)].count += 1
        }
        return page(
            "campaign", title: status.name,
            CampaignPage(
                id: id, name: status.name, state: status.state, kind: status.kind, total: status.total,
                eta: status.eta.map { $0 == 0 ? "finished" : "about \($0) s to go" } ?? "no rate yet",
                waves: status.waves.map(CampaignPage.Wave.init),
                failures: byReason.sorted { ($1.value.count, $0.key) < ($0.value.count, $1.key) }.map {
                    CampaignPage.Failure(
                        reason: VisibleText.escaped($0.key), count: $0.value.count,
                        example: VisibleText.escaped($0.value.example), exampleHref: Self.deviceHref($0.value.example))
                }))
    }

    func devices(query: String) async throws(Failure) -> Response {
        let q = String(query.trimmingCharacters(in: .whitespaces).prefix(128))
        guard !q.isEmpty else { return page("devices", title: "Devices", DevicesPage(q: "")) }
        if (try? await read(DeviceStatus.self, ["device": q])) != nil {
            var headers = HTTPFields()
            headers[.location] = Self.deviceHref(q)
            return Response(status: .seeOther, headers: headers)
        }
        let list = try await read(DeviceList.self, ["prefix": q, "limit": 100])
        let results = list.devices.map {
            DevicesPage.Result(
                device: VisibleText.escaped($0.device), deviceHref: Self.deviceHref($0.device),
                lastSeen: Self.time($0.lastSeen))
        }
        return page(
            "devices", title: "Devices",
            DevicesPage(q: q, searched: true, results: results, count: results.count, more: list.next != nil))
    }

    func device(_ id: String) async throws(Failure) -> Response {
        let status = try await read(DeviceStatus.self, ["device": id])
        let issued = status.issuedCertificates ?? []
        return page(
            "device", title: VisibleText.escaped(id),
            DevicePage(
                device: id, shown: VisibleText.escaped(id), firstSeen: Self.time(status.firstSeen),
                lastSeen: Self.time(status.lastSeen), issuedSeq: status.issuedSeq,
                reportedSeq: status.reportedSeq.map { "\($0)" } ?? "—",
                inventory: status.inventory.map { cred in
                    DevicePage.Credential(
                        tag: cred.tag, type: cred.type, name: cred.name ?? "unknown",
                        expires: cred.notAfter.map(Self.time) ?? "—", sha: String(cred.sha256.prefix(16)) + "…")
                },
                rotations: status.rotations.map { r in
                    DevicePage.Rotation(
                        target: r.target, state: r.state, attempts: r.attempts, updated: Self.time(r.updatedAt),
                        lastError: VisibleText.escaped(r.lastError ?? ""))
                },
                hasIssued: !issued.isEmpty,
                issued: issued.map { c in
                    DevicePage.Issued(
                        policy: c.policy, serial: c.serial, tag: c.tag, state: c.state, until: Self.time(c.notAfter))
                },
                history: status.history.reversed().map { h in
                    DevicePage.History(
                        when: Self.time(h.at), target: h.target, state: h.state, detail: h.detail ?? "")
                }))
    }

    // MARK: Pieces

    /// States in the order the charts show them: done, moving, failed, waiting.
    static let stateOrder = [
        "in_sync", "verified", "applied", "sent", "pending", "timed_out", "failed", "rejected", "waiting", "cancelled",
    ]

    static func format(_ value: Double) -> String { String(format: "%.2f", value) }

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
