import CertrotCore
import CertrotServer
import CertrotTestSupport
import Crypto
import Foundation
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The HTTP API (docs/openapi.yaml) of a real daemon, over a real socket, with a fleet rotating through mosquitto.
@Suite(.serialized) struct HTTPAPITests {
    static let token = "t0k3n-for-the-tests-" + UUID().uuidString
    static var tokenSHA256: String { Hex.sha256(Array(token.utf8)) }

    struct Reply {
        var status: Int
        var json: [String: Any]
    }

    static func request(
        _ method: String, _ url: String, body: Any? = nil, token: String? = nil, rawAuthorization: String? = nil
    ) async throws -> Reply {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.timeoutInterval = 30
        if let body {
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let rawAuthorization { request.setValue(rawAuthorization, forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        let json = (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
        return Reply(status: (response as? HTTPURLResponse)?.statusCode ?? 0, json: json)
    }

    /// A daemon with the API on `host` and one token ("alice"), and `devices` devices verified on it.
    static func daemon(
        host: String = "127.0.0.1", devices: Int = 20, http extra: String = ""
    ) async throws -> (Harness, base: String) {
        let harness = try Harness()
        let port = try Broker.freePort()
        try harness.startDaemon(
            configPath: harness.writeConfig(
                extra:
                    "http: {host: \(host), port: \(port), tokens: [{name: alice, sha256: \(tokenSHA256)}]\(extra)}"))
        _ = try harness.startFleet(harness.fleetOptions(devices: devices))
        try await harness.waitForFleet { ($0["verified"] ?? 0) == devices }
        let base = "http://127.0.0.1:\(port)/api/v1"
        // Listening: 200 on loopback, 401 off it (reads need the token there).
        _ = try await harness.eventually(
            { try await request("GET", base + "/fleet") }, until: { [200, 401].contains($0.status) })
        return (harness, base)
    }

    @Test func readsAreOpenOnLoopback_writesNeedTheToken_andAreAuditedUnderItsName() async throws {
        let (harness, base) = try await Self.daemon()
        // The same typed method as JSON-RPC: the same figures.
        let fleet = try await Self.request("GET", base + "/fleet")
        #expect(fleet.status == 200)
        let rpc = try await harness.rpc().result("fleet.status")
        #expect(fleet.json["devices"] as? Int == 20 && rpc["devices"] as? Int == 20)
        #expect((fleet.json["states"] as? [String: Int]) == (rpc["states"] as? [String: Int]))

        let page = try await Self.request("GET", base + "/devices?limit=5")
        #expect(page.status == 200)
        let items = page.json["devices"] as? [[String: Any]] ?? []
        #expect(items.count == 5, "\(page.json)")
        let first = try #require(items.first?["device"] as? String)
        let device = try await Self.request("GET", base + "/devices/\(first)")
        #expect(device.status == 200 && device.json["device"] as? String == first)
        let unknown = try await Self.request("GET", base + "/devices/nobody-here")
        #expect(unknown.status == 404 && unknown.json["code"] as? Int == -32004, "\(unknown)")
        let bad = try await Self.request("GET", base + "/devices?limit=0")
        #expect(bad.status == 400 && bad.json["code"] as? Int == -32602, "\(bad)")

        // Writes: refused without the token, with another token, or with a malformed header; the token passes.
        let create: [String: Any] = [
            "name": "http-1", "targets": [["tag": 43, "credential": "new-ca"]], "select": ["all": true],
            "start": Int(Date().timeIntervalSince1970) + 3600,
        ]
        for (token, raw) in [(nil, nil), ("not-the-token", nil), (nil, "Basic YWxpY2U6eA==")] as [(String?, String?)] {
            let refused = try await Self.request(
                "POST", base + "/campaigns", body: create, token: token, rawAuthorization: raw)
            #expect(refused.status == 401 && refused.json["code"] as? Int == -32010, "\(refused)")
        }
        let none = try await Self.request("GET", base + "/campaigns")
        #expect(none.status == 200 && (none.json["campaigns"] as? [Any])?.isEmpty == true, "\(none)")
        let created = try await Self.request("POST", base + "/campaigns", body: create, token: Self.token)
        #expect(created.status == 201, "\(created)")
        let id = try #require(created.json["id"] as? String)
        let status = try await Self.request("GET", base + "/campaigns/\(id)")
        #expect(status.status == 200 && status.json["id"] as? String == id)
        #expect(status.json["state"] as? String == "scheduled", "\(status)")
        let notPaused = try await Self.request("POST", base + "/campaigns/\(id)/resume", token: Self.token)
        #expect(notPaused.status == 409 && notPaused.json["code"] as? Int == -32021, "\(notPaused)")
        let paused = try await Self.request(
            "POST", base + "/campaigns/\(id)/pause", body: ["reason": "looking"], token: Self.token)
        #expect(paused.status == 200 && paused.json["state"] as? String == "paused", "\(paused)")
        let again = try await Self.request("POST", base + "/campaigns/\(id)/pause", token: Self.token)
        #expect(again.status == 409 && again.json["code"] as? Int == -32021, "\(again)")
        let refused = try await Self.request(
            "POST", base + "/campaigns",
            body: ["name": "x", "targets": [["tag": 43, "chain": "junk"]], "select": ["all": true]],
            token: Self.token)
        #expect(refused.status == 422 || refused.status == 400, "\(refused)")
        let undecodable = try await Self.request(
            "POST", base + "/campaigns", body: ["name": 7, "select": ["all": true]], token: Self.token)
        #expect(undecodable.status == 400 && undecodable.json["code"] as? Int == -32602, "\(undecodable)")
        let missing = try await Self.request("POST", base + "/campaigns/no-such/abort", token: Self.token)
        #expect(missing.status == 404 && missing.json["code"] as? Int == -32005, "\(missing)")

        // The audit log names the token's holder for what it did over HTTP.
        let audit = try await Self.request("GET", base + "/audit?limit=100")
        #expect(audit.status == 200)
        let requests = (audit.json["records"] as? [[String: Any]] ?? []).filter {
            $0["kind"] as? String == "operator.request"
        }
        // A record's body is its canonical JSON text.
        func body(_ record: [String: Any]) -> [String: Any] {
            (record["body"] as? String).flatMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            } ?? [:]
        }
        let byAlice = requests.filter { body($0)["operator"] as? String == "alice" }
        #expect(
            Set(byAlice.compactMap { $0["subject"] as? String }).isSuperset(of: ["campaign.create", "campaign.pause"]),
            "\(requests)")
        #expect(byAlice.count == requests.count && byAlice.allSatisfy { body($0)["via"] as? String == "http" })
        await harness.stop()
    }

    /// `certrot config token NAME` prints a fresh token and the entry for it, whose digest is the token's SHA-256;
    /// the daemon takes a token so made.
    @Test func configToken_printsATokenAndTheEntryWithItsDigest() throws {
        let first = try run(certrotBinary(), ["config", "token", "bob"])
        let second = try run(certrotBinary(), ["config", "token", "bob"])
        #expect(first.status == 0, "\(first.output)")
        func parse(_ output: String) -> (token: String, sha256: String)? {
            let lines = output.split(separator: "\n").map(String.init)
            guard let token = lines.first(where: { $0.hasPrefix("token: ") })?.dropFirst(7),
                let entry = lines.first(where: { $0.hasPrefix("http.tokens entry: ") }),
                let range = entry.range(of: "sha256: ")
            else { return nil }
            return (String(token), String(entry[range.upperBound...].prefix(64)))
        }
        let a = try #require(parse(first.output), "\(first.output)")
        let b = try #require(parse(second.output))
        #expect(a.sha256 == Hex.sha256(Array(a.token.utf8)) && a.token.count == 43)
        #expect(a.token != b.token, "each token is new")
        #expect(first.output.contains("- {name: bob, sha256: \(a.sha256)}"))
        #expect(try run(certrotBinary(), ["config", "token", ""]).status != 0)
    }

    /// Off loopback every request needs the token, reads included. The listener is on every address here, and the
    /// test reaches it on 127.0.0.1: the traffic stays on this machine.
    @Test func offLoopback_readsNeedTheTokenToo() async throws {
        let (harness, base) = try await Self.daemon(host: "0.0.0.0", devices: 5)
        let open = try await Self.request("GET", base + "/fleet")
        #expect(open.status == 401 && open.json["code"] as? Int == -32010, "\(open)")
        let withToken = try await Self.request("GET", base + "/fleet", token: Self.token)
        #expect(withToken.status == 200 && withToken.json["devices"] as? Int == 5)
        // The console is not served off loopback: a page shows what a read returns, and carries no token.
        let (_, page) = try await URLSession.shared.data(
            from: URL(string: base.replacingOccurrences(of: "/api/v1", with: "/"))!)
        #expect((page as? HTTPURLResponse)?.statusCode == 403)
        // /metrics and the probes stay open, as before.
        let (_, metrics) = try await URLSession.shared.data(
            from: URL(string: base.replacingOccurrences(of: "/api/v1", with: "/healthz"))!)
        #expect((metrics as? HTTPURLResponse)?.statusCode == 200)
        await harness.stop()
    }

    /// The router ignores empty path segments, so `//api/v1/fleet` is `/api/v1/fleet`: it must be authenticated as
    /// that operation is (red-team #32, finding 1: it answered 200 with full data and no token off loopback).
    @Test func pathsSpelledWithEmptySegments_needTheTokenAsTheOperationDoes() async throws {
        let (harness, base) = try await Self.daemon(host: "0.0.0.0", devices: 3)
        let port = Int32(try #require(URL(string: base)?.port))
        let device = try #require(
            (try await Self.request("GET", base + "/devices", token: Self.token).json["devices"] as? [[String: Any]])?
                .first?["device"] as? String)
        let paths = [
            "//api/v1/fleet", "//api/v1/devices", "//api/v1/devices/\(device)", "//api/v1/audit", "///api/v1/fleet",
            "/api//v1/fleet", "/api/v1//fleet", "//api/v1/fleet/risk", "//api/v1/campaigns",
        ]
        for path in paths {
            let open = try RawHTTP.exchange(port: port, RawHTTP.request("GET", path))
            #expect(open.status == 401, "GET \(path) without a token: \(open.status) \(open.text.prefix(200))")
            let allowed = try RawHTTP.exchange(
                port: port, RawHTTP.request("GET", path, headers: [("Authorization", "Bearer \(Self.token)")]))
            #expect(allowed.status == 200, "GET \(path) with the token: \(allowed.status)")
        }
        let body = Array(#"{"name":"x","target":"t","selector":{"all":true}}"#.utf8)
        for path in ["//api/v1/campaigns", "//api/v1/devices/\(device)/retry", "//api/v1/campaigns/c/abort"] {
            let write = try RawHTTP.exchange(
                port: port,
                RawHTTP.request(
                    "POST", path, headers: [("Content-Type", "application/json"), ("Content-Length", "\(body.count)")],
                    body: body))
            #expect(write.status == 401, "POST \(path) without a token: \(write.status) \(write.text.prefix(200))")
        }
        await harness.stop()
    }

    /// A request body is read only once the caller is known, and never past the limit of an RPC request (64 KiB):
    /// red-team #32, finding 2 (one 36 MB POST without a token took the daemon from 62 to 653 MB). Each request here
    /// announces 36 MB and sends none of it, or sends its body in chunks: the answer comes before the body.
    @Test func anOversizedBody_isRefusedBeforeItIsRead() async throws {
        let (harness, base) = try await Self.daemon(devices: 3)
        let port = Int32(try #require(URL(string: base)?.port))
        let big = [("Content-Type", "application/json"), ("Content-Length", "36000000")]
        // No token: refused on the head alone.
        let anonymous = try RawHTTP.exchange(port: port, RawHTTP.request("POST", "/api/v1/campaigns", headers: big))
        #expect(anonymous.status == 401, "\(anonymous.head)")
        let doubled = try RawHTTP.exchange(port: port, RawHTTP.request("POST", "//api/v1/campaigns", headers: big))
        #expect(doubled.status == 401, "\(doubled.head)")
        // With the token: too large, by the announced length, before a byte of it.
        let authorized = big + [("Authorization", "Bearer \(Self.token)")]
        let announced = try RawHTTP.exchange(
            port: port, RawHTTP.request("POST", "/api/v1/campaigns", headers: authorized))
        #expect(announced.status == 413 && announced.text.contains("65536"), "\(announced.head) \(announced.text)")
        // A chunked body with no length: counted while read, refused once it passes the limit, while the rest is
        // still unsent.
        let fd = try RawHTTP.connected(port: port, timeout: 15)
        defer { close(fd) }
        try RawHTTP.send(
            fd,
            RawHTTP.request(
                "POST", "/api/v1/campaigns",
                headers: [
                    ("Content-Type", "application/json"), ("Transfer-Encoding", "chunked"),
                    ("Authorization", "Bearer \(Self.token)"),
                ]))
        let chunk = Array("10000\r\n".utf8) + [UInt8](repeating: 0x20, count: 65_536) + Array("\r\n".utf8)
        try RawHTTP.send(fd, chunk + chunk)
        let chunked = RawHTTP.read(fd)
        #expect(chunked.status == 413, "\(chunked.head)")
        // A body within the limit still works, and the daemon still answers.
        let fleet = try await Self.request("GET", base + "/fleet")
        #expect(fleet.status == 200)
        await harness.stop()
    }

    /// DNS rebinding (red-team #32, finding 6): on a loopback listener reads need no token, so a request whose `Host`
    /// names another site (a page whose name resolves to 127.0.0.1) is refused, for the API and the console alike.
    @Test func onLoopback_aRequestNamingAnotherHost_isRefused() async throws {
        let (harness, base) = try await Self.daemon(devices: 2)
        let port = Int32(try #require(URL(string: base)?.port))
        for path in ["/api/v1/fleet", "/api/v1/audit", "/", "/devices"] {
            for host in ["rebind.attacker.example", "rebind.attacker.example:\(port)", "127.0.0.1.rebind.example"] {
                let rebound = try RawHTTP.exchange(port: port, RawHTTP.request("GET", path, host: host))
                #expect(rebound.status == 421, "GET \(path) Host: \(host) → \(rebound.status)")
            }
            for host in ["127.0.0.1:\(port)", "localhost:\(port)", "[::1]:\(port)", "LOCALHOST", "127.0.0.2"] {
                let allowed = try RawHTTP.exchange(port: port, RawHTTP.request("GET", path, host: host))
                #expect(allowed.status == 200, "GET \(path) Host: \(host) → \(allowed.status)")
                #expect(allowed.head.lowercased().contains("x-content-type-options: nosniff"), "\(allowed.head)")
            }
        }
        // Metrics and the probes take any Host: they hold nothing a read of another site could use.
        let probe = try RawHTTP.exchange(port: port, RawHTTP.request("GET", "/healthz", host: "elsewhere.example"))
        #expect(probe.status == 200)
        await harness.stop()
    }

    /// What counts as loopback: address literals in 127.0.0.0/8 and ::1, and `localhost`; a name
    /// that merely starts with `127.` does not (red-team #32, finding 9).
    @Test func loopback_isDecidedByAddress_notByHowTheNameStarts() {
        for host in ["127.0.0.1", "127.255.0.9", "::1", "[::1]", "localhost"] {
            #expect(Loopback.contains(host), "\(host)")
        }
        for host in ["127.example.com", "127.0.0.1.example", "0.0.0.0", "::", "10.0.0.1", "", "1270.0.0.1"] {
            #expect(!Loopback.contains(host), "\(host)")
        }
    }

    /// Half-sent requests hold no descriptor for ever (red-team #32, finding 4: 20,000 of them exhausted the daemon's
    /// descriptors and /healthz timed out): at most `http.maxConnections` are served at once, and one that has not
    /// sent a whole request within `http.idleTimeout` is closed, after which the listener serves again.
    @Test func halfSentConnections_areCapped_andClosedAfterTheIdleTimeout() async throws {
        let (harness, base) = try await Self.daemon(devices: 2, http: ", idleTimeout: 2s, maxConnections: 8")
        let port = Int32(try #require(URL(string: base)?.port))
        var held: [Int32] = []
        defer { for fd in held { close(fd) } }
        for _ in 0..<8 {
            let fd = try RawHTTP.connected(port: port, timeout: 15)
            try RawHTTP.send(fd, Array("GET /healthz HTTP/1.1\r\nHo".utf8))
            held.append(fd)
        }
        // Every one of them is closed by the daemon (end of stream), not left open.
        for fd in held {
            var byte: UInt8 = 0
            #expect(recv(fd, &byte, 1, 0) == 0, "a half-sent request's connection was not closed")
        }
        // And the listener serves again.
        let health = try RawHTTP.exchange(port: port, RawHTTP.request("GET", "/healthz"))
        #expect(health.status == 200)
        await harness.stop()
    }

    /// The console's links open the device they name, whatever its ID holds (red-team #32, finding 9: `a%41` opened
    /// `aA`, `..` the fleet page, `x?y=1` the device `x`), and an ID with a bidirectional override is shown escaped.
    @Test func consoleLinks_openTheirOwnDevice_andABidiOverrideIsShownEscaped() async throws {
        let (harness, base) = try await Self.daemon(devices: 1)
        let port = Int32(try #require(URL(string: base)?.port))
        let peer = try await Peer(harness)
        let ids = ["a%41", "..", "x?y=1", "bidi\u{202E}tfel"]
        for id in ids {
            try peer.client.publish(
                topic: Topics.inventory(id),
                payload: Inventory(seq: 0, maxMessage: 2048, creds: [], keys: nil).encoded(), retain: false)
        }
        let rpc = try harness.rpc()
        for id in ids {
            var known = false
            for _ in 0..<50 where !known {
                known = (try? await rpc.result("device.status", params: ["device": id], timeout: 2)) != nil
                if !known { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(known, "\(id) was not recorded")
        }
        for id in ids {
            // The search for the exact ID sends the browser to the console's own link.
            let query = id.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? id
            let search = try RawHTTP.exchange(port: port, RawHTTP.request("GET", "/devices?q=" + query))
            let location = search.head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("location:") }
                .map { $0.dropFirst("location:".count).trimmingCharacters(in: .whitespaces) }
            #expect(search.status == 303, "\(id): \(search.head)")
            let page = try RawHTTP.exchange(port: port, RawHTTP.request("GET", try #require(location)))
            let attribute = "data-device=\"\(id.replacingOccurrences(of: "\"", with: "&quot;"))\""
            #expect(page.status == 200 && page.text.contains(attribute), "\(id) → \(location ?? "-"): \(page.status)")
        }
        let bidi = try RawHTTP.exchange(port: port, RawHTTP.request("GET", "/device?id=bidi%E2%80%AEtfel"))
        let heading = bidi.text.split(separator: "\n").first { $0.contains("<h1>") } ?? ""
        #expect(heading.contains("\\u{202E}") && !heading.unicodeScalars.contains("\u{202E}"), "\(heading)")
        await harness.stop()
    }

    /// Runs a program on a thread of its own: the daemon under test shares this process's few pool threads.
    static func runOffThePool(
        _ executable: String, _ arguments: [String]
    ) async throws -> (status: Int32, output: String) {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try run(executable, arguments) }) }.start()
        }
    }

    /// schemathesis (PyPI) against docs/openapi.yaml on a running daemon: every operation, generated inputs (a
    /// fixed number of examples), with the token: no 5xx, and every response conforms to the document.
    @Test func schemathesis_everyOperation_noServerError_responsesConform() async throws {
        let (harness, base) = try await Self.daemon(devices: 10)
        // A campaign for the stateful phase to find (GET /campaigns links to its status, pause, resume, abort).
        let created = try await Self.request(
            "POST", base + "/campaigns",
            body: [
                "name": "st", "targets": [["tag": 43, "credential": "new-ca"]], "select": ["all": true],
                "start": Int(Date().timeIntervalSince1970) + 3600,
            ], token: Self.token)
        #expect(created.status == 201, "\(created)")
        let examples = ProcessInfo.processInfo.environment["CERTROT_SCHEMATHESIS_EXAMPLES"] ?? "25"
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let schema = root.appendingPathComponent("docs/openapi.yaml").path
        let url = base.replacingOccurrences(of: "/api/v1", with: "")
        let run = try await Self.runOffThePool(
            "/usr/bin/env",
            [
                "schemathesis", "run", schema, "--url", url, "-H", "Authorization: Bearer \(Self.token)",
                "--max-examples", examples, "--seed", "1",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                    + "response_schema_conformance,response_headers_conformance",
                "--phases", "examples,coverage,fuzzing,stateful", "--generation-deterministic", "--workers", "1",
            ])
        // The whole report, for a look after a failure.
        try? run.output.write(
            toFile: FileManager.default.temporaryDirectory.appendingPathComponent("certrot-schemathesis.txt").path,
            atomically: true, encoding: .utf8)
        #expect(
            run.status == 0,
            "schemathesis (pip install schemathesis==4.32.5; scripts/bootstrap does):\n\(run.output.suffix(6000))")
        await harness.stop()
    }
}
