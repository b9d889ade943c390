import CertrotCore
import CertrotTestSupport
import Foundation
import Testing
import X509

/// Runs `body` and returns the refusal it throws, or nil (recording an issue) when it does not throw.
private func refusal<T>(_ body: () throws(Refusal) -> T, sourceLocation: SourceLocation = #_sourceLocation) -> Refusal?
{
    do {
        _ = try body()
        Issue.record("expected a refusal", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

private func refusal(
    _ body: () async throws(Refusal) -> Void, sourceLocation: SourceLocation = #_sourceLocation
) async -> Refusal? {
    do {
        try await body()
        Issue.record("expected a refusal", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

/// Now, in whole seconds (certificate times have second precision).
private func wholeSecondsNow() -> Date { Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down)) }

private func subject(_ issued: CertificateFactory.Issued) -> String { String(describing: issued.certificate.subject) }

/// Root CAs concatenated until the chain's normal form is larger than `bytes`.
private func chainLargerThan(_ bytes: Int, prefix: String) throws -> String {
    var text = ""
    var index = 0
    while text.utf8.count <= bytes {
        text += try CertificateFactory.rootCA(commonName: "\(prefix) \(index)").pem
        index += 1
    }
    return text
}

@Suite struct CampaignPreflightTests {
    static let what = "targets[0] (tag 42)"
    static let day: Int64 = 86400

    func check(
        _ pem: String, type: Int = 0, now: Date = Date(), minDays: Int64 = 30
    ) throws(Refusal) -> CertificateChain {
        try Preflight.checkChain(
            pem, type: type, profile: .nrf91, now: now, minRemainingValidity: minDays * Self.day, what: Self.what)
    }

    // MARK: checkChain

    @Test func goodChain_passes_andIsReturnedInNormalForm() throws {
        let a = try CertificateFactory.rootCA(commonName: "Preflight Good A")
        let b = try CertificateFactory.rootCA(commonName: "Preflight Good B")
        let chain = try check(CertificateFactory.chain([a, b]))
        #expect(chain.certificates.count == 2)
        #expect(chain.pem == a.pem + b.pem)
        #expect(PEM.isNormalized(chain.bytes))
    }

    @Test func crlfAndIndentedInput_isNormalised() throws {
        let ca = try CertificateFactory.rootCA(commonName: "Preflight CRLF")
        let messy =
            "subject=CN = Preflight CRLF\r\n"
            + ca.pem.split(separator: "\n").map { "  " + $0 }.joined(separator: "\r\n") + "\r\n"
        #expect(messy.contains("\r\n"))
        let chain = try check(messy)
        #expect(chain.pem == ca.pem)
        #expect(!chain.pem.contains("\r"))
        #expect(PEM.isNormalized(chain.bytes))
    }

    @Test func unparsable_isRefused_withTheParserMessage() throws {
        let refused = refusal { () throws(Refusal) in try check("this is not a certificate") }
        #expect(refused?.reason == "unparsable")
        #expect(refused?.message.contains(Self.what) == true)
        #expect(refused?.message.contains("no PEM block found") == true)
        #expect(refused?.details["what"] == .string(Self.what))

        let ca = try CertificateFactory.rootCA(commonName: "Preflight Truncated")
        let truncated = String(ca.pem.dropLast(30))
        let second = refusal { () throws(Refusal) in try check(truncated) }
        #expect(second?.reason == "unparsable")
        #expect(second?.message.contains("no END line") == true)
    }

    @Test func notYetValid_isRefused_namingTheCertificate() throws {
        let now = wholeSecondsNow()
        let future = try CertificateFactory.rootCA(
            commonName: "Preflight Future", notBefore: now.addingTimeInterval(2 * 86400),
            notAfter: now.addingTimeInterval(400 * 86400))
        let good = try CertificateFactory.rootCA(commonName: "Preflight Present")
        let refused = refusal { () throws(Refusal) in try check(good.pem + future.pem, now: now) }
        #expect(refused?.reason == "not_yet_valid")
        #expect(refused?.message.contains(subject(future)) == true)
        #expect(refused?.message.contains("certificate 1") == true)
        #expect(refused?.message.contains(Self.what) == true)
        #expect(refused?.details["index"] == .int(1))
        #expect(refused?.details["certificate"] == .string(subject(future)))
        #expect(refused?.details["notBefore"] == .int(Int64(now.timeIntervalSince1970) + 2 * Self.day))
    }

    @Test func expired_isRefused_withTheDate() throws {
        let now = try Date("2026-06-01T00:00:00Z", strategy: .iso8601)
        let old = try CertificateFactory.rootCA(
            commonName: "Preflight Expired", notBefore: Date("2025-01-01T00:00:00Z", strategy: .iso8601),
            notAfter: Date("2026-05-15T12:00:00Z", strategy: .iso8601))
        let refused = refusal { () throws(Refusal) in try check(old.pem, now: now) }
        #expect(refused?.reason == "expired")
        #expect(refused?.message.contains("expired on 2026-05-15T12:00:00Z") == true)
        #expect(refused?.message.contains(subject(old)) == true)
        #expect(refused?.details["notAfter"] == .int(1_778_846_400))
    }

    @Test func expiresSoon_isRefused_sayingDaysLeftAndDaysRequired() throws {
        let now = wholeSecondsNow()
        let soon = try CertificateFactory.rootCA(
            commonName: "Preflight Soon", notBefore: now.addingTimeInterval(-86400),
            notAfter: now.addingTimeInterval(10 * 86400))
        let refused = refusal { () throws(Refusal) in try check(soon.pem, now: now, minDays: 30) }
        #expect(refused?.reason == "expires_soon")
        #expect(refused?.message.contains("10 days from now") == true)
        #expect(refused?.message.contains("at least 30 days") == true)
        #expect(refused?.message.contains(Date.ISO8601FormatStyle().format(now.addingTimeInterval(10 * 86400))) == true)
        #expect(refused?.details["remaining"] == .int(10 * Self.day))
        #expect(refused?.details["required"] == .int(30 * Self.day))

        // The same certificate passes when less is required.
        #expect(throws: Never.self) { try check(soon.pem, now: now, minDays: 9) }
    }

    @Test func notCA_isRefused_forAnEndEntity_andForNoBasicConstraints() throws {
        let root = try CertificateFactory.rootCA(commonName: "Preflight Root For Leaf")
        let endEntity = try CertificateFactory.rootCA(commonName: "Preflight Not CA", isCA: false)
        let refused = refusal { () throws(Refusal) in try check(root.pem + endEntity.pem) }
        #expect(refused?.reason == "not_ca")
        #expect(refused?.message.contains(subject(endEntity)) == true)
        #expect(refused?.message.contains("not a CA certificate") == true)
        #expect(refused?.details["index"] == .int(1))

        let leaf = try CertificateFactory.leaf(dnsName: "mqtt.example.test", issuer: root)
        #expect(refusal { () throws(Refusal) in try check(leaf.pem) }?.reason == "not_ca")

        let bare = try CertificateFactory.selfSignedWithoutBasicConstraints(commonName: "Preflight Bare")
        let second = refusal { () throws(Refusal) in try check(bare.pem) }
        #expect(second?.reason == "not_ca")
        #expect(second?.message.contains("no BasicConstraints") == true)
    }

    @Test func tooLarge_isRefused_sayingBytesOver() throws {
        let text = try chainLargerThan(4096, prefix: "Preflight Large")
        let size = try PEM.normalizeChain(text).bytes.count
        let refused = refusal { () throws(Refusal) in try check(text) }
        #expect(refused?.reason == "too_large")
        #expect(refused?.message.contains("is \(size) bytes") == true)
        #expect(refused?.message.contains("at most 4096 bytes") == true)
        #expect(refused?.message.contains("(\(size - 4096) bytes over)") == true)
        #expect(refused?.details["size"] == .int(Int64(size)))
        #expect(refused?.details["limit"] == .int(4096))
        #expect(refused?.details["over"] == .int(Int64(size - 4096)))
        #expect(refused?.details["what"] == .string(Self.what))

        // A larger profile takes it.
        let big = DeviceProfile(name: "big", maxMessage: 2048, maxCredential: 16384)
        #expect(throws: Never.self) {
            try Preflight.checkChain(text, type: 0, profile: big, now: Date(), minRemainingValidity: 0, what: Self.what)
        }
    }

    @Test func unsupportedType_isRefused() throws {
        let ca = try CertificateFactory.rootCA(commonName: "Preflight Type")
        let refused = refusal { () throws(Refusal) in try check(ca.pem, type: 1) }
        #expect(refused?.reason == "unsupported_type")
        #expect(refused?.message.contains("type 1") == true)
        #expect(refused?.details["type"] == .int(1))
    }

    @Test func refusalJSON_isSerializable_andCarriesTheReason() throws {
        let refusal = Refusal("too_large", "x", details: ["size": .int(5000), "what": .string("t")])
        let json = refusal.json
        #expect(JSONSerialization.isValidJSONObject(json))
        let data = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        #expect(String(decoding: data, as: UTF8.self) == #"{"reason":"too_large","size":5000,"what":"t"}"#)
    }

    // MARK: overlap

    @Test func overlap_keepsStillValidOldRoots_dropsExpiredNotYetValidAndDuplicates() throws {
        let now = Date()
        let new = try CertificateFactory.rootCA(commonName: "Overlap New")
        let old = try CertificateFactory.rootCA(commonName: "Overlap Old")
        let expired = try CertificateFactory.rootCA(
            commonName: "Overlap Expired", notBefore: now.addingTimeInterval(-400 * 86400),
            notAfter: now.addingTimeInterval(-86400))
        let future = try CertificateFactory.rootCA(
            commonName: "Overlap Future", notBefore: now.addingTimeInterval(86400))
        let newChain = try PEM.normalizeChain(new.pem)
        let current = try PEM.normalizeChain(CertificateFactory.chain([expired, new, old, future, old]))

        let merged = Preflight.overlap(new: newChain, current: current, now: now)
        #expect(merged.certificates.map { String(describing: $0.subject) } == [subject(new), subject(old)])
        #expect(merged.pem == new.pem + old.pem)
    }

    @Test func overlap_isInNormalForm() throws {
        let new = try CertificateFactory.rootCA(commonName: "Overlap Normal New")
        let old = try CertificateFactory.rootCA(commonName: "Overlap Normal Old")
        let messyOld = old.pem.replacingOccurrences(of: "\n", with: "\r\n")
        let merged = Preflight.overlap(
            new: try PEM.normalizeChain(new.pem), current: try PEM.normalizeChain(messyOld), now: Date())
        #expect(try PEM.normalizeChain(merged.pem).pem == merged.pem)
        #expect(PEM.isNormalized(merged.bytes))
        #expect(merged.certificates.count == 2)
        #expect(merged.sha256 == Hex.sha256(Array((new.pem + old.pem).utf8)))
    }

    @Test func overlapWithNothingStillValid_isTheNewChain() throws {
        let now = Date()
        let new = try PEM.normalizeChain(CertificateFactory.rootCA(commonName: "Overlap Only New").pem)
        let expired = try PEM.normalizeChain(
            CertificateFactory.rootCA(
                commonName: "Overlap Only Expired", notBefore: now.addingTimeInterval(-200 * 86400),
                notAfter: now.addingTimeInterval(-1)
            ).pem)
        let merged = Preflight.overlap(new: new, current: expired, now: now)
        #expect(merged.pem == new.pem)
        #expect(merged.certificates.count == 1)
    }

    @Test func checkOverlapSize_saysByHowManyBytes() throws {
        let chain = try PEM.normalizeChain(chainLargerThan(4096, prefix: "Overlap Large"))
        let held = String(repeating: "ab", count: 32)
        let over = chain.bytes.count - 4096
        let refused = refusal { () throws(Refusal) in
            try Preflight.checkOverlapSize(chain, held: held, profile: .nrf91, what: Self.what)
        }
        #expect(refused?.reason == "overlap_too_large")
        #expect(
            refused?.message
                == "overlap of \(Self.what) with the chain held now (sha256 abababababab…) is \(chain.bytes.count) "
                + "bytes; profile nrf91 allows 4096 (\(over) over)")
        #expect(refused?.details["over"] == .int(Int64(over)))
        #expect(refused?.details["size"] == .int(Int64(chain.bytes.count)))
        #expect(refused?.details["limit"] == .int(4096))
        #expect(refused?.details["held"] == .string(held))

        let small = try PEM.normalizeChain(CertificateFactory.rootCA(commonName: "Overlap Small").pem)
        #expect(throws: Never.self) {
            try Preflight.checkOverlapSize(small, held: held, profile: .nrf91, what: Self.what)
        }
    }

    // MARK: checkEndpoint

    @Test func endpoint_issuedByTheNewRoot_verifies() async throws {
        let root = try CertificateFactory.rootCA(commonName: "Endpoint New Root")
        let other = try CertificateFactory.rootCA(commonName: "Endpoint Other Root")
        let leaf = try CertificateFactory.leaf(dnsName: "mqtt.example.test", issuer: root)
        // Hostnames are not checked, only the chain.
        try await Preflight.checkEndpoint(
            leaf.pem, roots: [other.certificate, root.certificate], now: Date(), limit: 4096, what: "endpoint")
    }

    @Test func endpoint_notChainingToTheRoots_isRefused() async throws {
        let root = try CertificateFactory.rootCA(commonName: "Endpoint Real Root")
        let unrelated = try CertificateFactory.rootCA(commonName: "Endpoint Unrelated Root")
        let leaf = try CertificateFactory.leaf(dnsName: "mqtt.example.test", issuer: root)
        let refused = await refusal { () async throws(Refusal) in
            try await Preflight.checkEndpoint(
                leaf.pem, roots: [unrelated.certificate], now: Date(), limit: 4096, what: "endpoint")
        }
        #expect(refused?.reason == "endpoint_unverified")
        #expect(refused?.message.contains(subject(leaf)) == true)
        #expect(refused?.message.contains(subject(unrelated)) == true)
        #expect(refused?.message.contains("does not chain to any of the roots") == true)
        #expect(refused?.details["certificate"] == .string(subject(leaf)))
    }

    @Test func endpoint_isVerifiedAtTheGivenTime() async throws {
        let root = try CertificateFactory.rootCA(commonName: "Endpoint Time Root", days: 3650)
        let leaf = try CertificateFactory.leaf(dnsName: "mqtt.example.test", issuer: root, days: 90)
        try await Preflight.checkEndpoint(leaf.pem, roots: [root.certificate], now: Date(), limit: 4096, what: "e")
        let refused = await refusal { () async throws(Refusal) in
            try await Preflight.checkEndpoint(
                leaf.pem, roots: [root.certificate], now: Date().addingTimeInterval(100 * 86400), limit: 4096,
                what: "e")
        }
        #expect(refused?.reason == "endpoint_unverified")
        // The verifier's own reason is included when it gives one.
        #expect(refused?.message.lowercased().contains("expired") == true)
    }

    @Test func endpoint_withIntermediate_verifies_andNeedsTheIntermediate() async throws {
        let root = try CertificateFactory.rootCA(commonName: "Endpoint Chain Root")
        let intermediate = try CertificateFactory.intermediate(commonName: "Endpoint Chain Intermediate", issuer: root)
        let leaf = try CertificateFactory.leaf(dnsName: "mqtt.example.test", issuer: intermediate)
        try await Preflight.checkEndpoint(
            CertificateFactory.chain([leaf, intermediate]), roots: [root.certificate], now: Date(), limit: 4096,
            what: "endpoint")

        let refused = await refusal { () async throws(Refusal) in
            try await Preflight.checkEndpoint(
                leaf.pem, roots: [root.certificate], now: Date(), limit: 4096, what: "endpoint")
        }
        #expect(refused?.reason == "endpoint_unverified")
    }

    @Test func endpoint_over4096Bytes_isRefused() async throws {
        let root = try CertificateFactory.rootCA(commonName: "Endpoint Big Root")
        let leaf = try CertificateFactory.leaf(dnsName: "mqtt.example.test", issuer: root)
        let text = try leaf.pem + chainLargerThan(4096 - leaf.pem.utf8.count, prefix: "Endpoint Padding")
        let size = try PEM.normalizeChain(text).bytes.count
        #expect(size > 4096)
        let refused = await refusal { () async throws(Refusal) in
            try await Preflight.checkEndpoint(
                text, roots: [root.certificate], now: Date(), limit: 4096, what: "endpoint")
        }
        #expect(refused?.reason == "endpoint_too_large")
        #expect(refused?.message.contains("\(size) bytes") == true)
        #expect(refused?.message.contains("(\(size - 4096) bytes over)") == true)
        #expect(refused?.details["over"] == .int(Int64(size - 4096)))
    }

    @Test func endpoint_unparsable_isRefused() async throws {
        let refused = await refusal { () async throws(Refusal) in
            try await Preflight.checkEndpoint(
                "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
                roots: [], now: Date(), limit: 4096, what: "endpoint")
        }
        #expect(refused?.reason == "endpoint_unparsable")
        #expect(refused?.message.contains("not valid base64") == true)
    }
}

/// Maintenance windows, nested so that `--filter CertrotCoreTests.CampaignPreflightTests` runs them too.
extension CampaignPreflightTests {
    @Suite struct MaintenanceWindowTests {
        func at(_ iso: String) throws -> Int64 { Int64(try Date(iso, strategy: .iso8601).timeIntervalSince1970) }

        @Test func utcWeekdayWindow() throws {
            let window = MaintenanceWindow(
                days: ["mon", "tue", "wed", "thu", "fri"], start: "09:00", end: "17:00", zone: nil)
            try window.validate()
            // 2026-03-30 is a Monday, 2026-03-28 a Saturday.
            #expect(window.contains(try at("2026-03-30T09:00:00Z")))
            #expect(window.contains(try at("2026-03-30T16:59:59Z")))
            #expect(!window.contains(try at("2026-03-30T17:00:00Z")))
            #expect(!window.contains(try at("2026-03-30T08:59:59Z")))
            #expect(!window.contains(try at("2026-03-28T10:00:00Z")))
            #expect(
                MaintenanceWindow(days: [], start: "09:00", end: "17:00", zone: "UTC").contains(
                    try at("2026-03-28T10:00:00Z")))
        }

        @Test func midnightCrossingWindow_belongsToTheDayItStarts() throws {
            let window = MaintenanceWindow(days: ["fri"], start: "22:00", end: "04:00", zone: "UTC")
            try window.validate()
            // 2026-03-27 is a Friday.
            #expect(window.contains(try at("2026-03-27T22:00:00Z")))
            #expect(window.contains(try at("2026-03-27T23:30:00Z")))
            #expect(window.contains(try at("2026-03-28T03:59:00Z")))  // Saturday morning: Friday's window
            #expect(!window.contains(try at("2026-03-28T04:00:00Z")))
            #expect(!window.contains(try at("2026-03-28T23:00:00Z")))  // Saturday night: not a window day
            #expect(!window.contains(try at("2026-03-27T03:00:00Z")))  // Friday morning belongs to Thursday
            #expect(!window.contains(try at("2026-03-27T21:59:00Z")))
        }

        @Test func namedZoneWindow_followsDaylightSavingTime() throws {
            // Europe/Berlin moves from CET (UTC+1) to CEST (UTC+2) at 01:00 UTC on Sunday 2026-03-29.
            let window = MaintenanceWindow(days: ["sun"], start: "08:00", end: "09:00", zone: "Europe/Berlin")
            try window.validate()
            #expect(window.contains(try at("2026-03-22T07:30:00Z")))  // 08:30 CET
            #expect(!window.contains(try at("2026-03-22T06:30:00Z")))  // 07:30 CET
            #expect(window.contains(try at("2026-03-29T06:30:00Z")))  // 08:30 CEST
            #expect(!window.contains(try at("2026-03-29T07:30:00Z")))  // 09:30 CEST

            // 01:00–04:00 local on the change day lasts two hours of real time.
            let night = MaintenanceWindow(days: ["sun"], start: "01:00", end: "04:00", zone: "Europe/Berlin")
            #expect(!night.contains(try at("2026-03-28T23:59:00Z")))  // 00:59 CET
            #expect(night.contains(try at("2026-03-29T00:00:00Z")))  // 01:00 CET
            #expect(night.contains(try at("2026-03-29T01:00:00Z")))  // 03:00 CEST
            #expect(night.contains(try at("2026-03-29T01:59:00Z")))  // 03:59 CEST
            #expect(!night.contains(try at("2026-03-29T02:00:00Z")))  // 04:00 CEST
        }

        @Test func invalidDayTimeAndZone_areRefused_namingTheField() {
            let cases: [(MaintenanceWindow, String, String)] = [
                (MaintenanceWindow(days: ["monday"], start: "09:00", end: "10:00", zone: nil), "days", "monday"),
                (MaintenanceWindow(days: ["Mon"], start: "09:00", end: "10:00", zone: nil), "days", "Mon"),
                (MaintenanceWindow(days: [], start: "25:00", end: "10:00", zone: nil), "start", "25:00"),
                (MaintenanceWindow(days: [], start: "9:00", end: "10:00", zone: nil), "start", "9:00"),
                (MaintenanceWindow(days: [], start: "09:00", end: "12:60", zone: nil), "end", "12:60"),
                (
                    MaintenanceWindow(days: [], start: "09:00", end: "10:00", zone: "Mars/Olympus_Mons"), "zone",
                    "Mars/Olympus_Mons"
                ),
            ]
            for (window, field, value) in cases {
                let refused = refusal { () throws(Refusal) in try window.validate() }
                #expect(refused?.reason == "invalid_window")
                #expect(refused?.message.contains(".\(field)") == true, "\(refused?.message ?? "")")
                #expect(refused?.message.contains(value) == true)
                #expect(refused?.details["field"] == .string(field))
                #expect(!window.contains(0))
            }
        }

        @Test func parse_readsJSON_andRefusesWrongTypes() throws {
            let json =
                #"[{"days":["sat","sun"],"start":"22:00","end":"04:00","zone":"Europe/Berlin"},{"start":"01:00","end":"02:00","zone":null}]"#
            let objects = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [Any])
            #expect(
                try MaintenanceWindow.parse(objects[0], index: 0)
                    == MaintenanceWindow(days: ["sat", "sun"], start: "22:00", end: "04:00", zone: "Europe/Berlin"))
            #expect(
                try MaintenanceWindow.parse(objects[1], index: 1)
                    == MaintenanceWindow(days: [], start: "01:00", end: "02:00", zone: nil))

            let bad: [(Any, String)] = [
                ("not an object", "windows[2] must be an object"),
                (["start": "01:00"], "windows[2].end is required"),
                (["end": "01:00"], "windows[2].start is required"),
                (["start": 1, "end": "02:00"], "windows[2].start must be a string"),
                (["days": "mon", "start": "01:00", "end": "02:00"], "windows[2].days must be an array"),
                (["days": ["mon", 3], "start": "01:00", "end": "02:00"], "windows[2].days[1] must be a string"),
                (["start": "01:00", "end": "02:00", "zone": 5], "windows[2].zone must be a string"),
                (["days": ["mun"], "start": "01:00", "end": "02:00"], "windows[2].days holds 'mun'"),
                (["start": "1am", "end": "02:00"], "windows[2].start is '1am'"),
            ]
            for (object, expected) in bad {
                let refused = refusal { () throws(Refusal) in try MaintenanceWindow.parse(object, index: 2) }
                #expect(refused?.reason == "invalid_window")
                #expect(refused?.message.hasPrefix(expected) == true, "\(refused?.message ?? "nil") vs \(expected)")
            }
        }

        @Test func windowList_isOpen_whenEmptyOrAnyWindowContains() throws {
            let none: [MaintenanceWindow] = []
            #expect(none.isOpen(at: try at("2026-03-30T12:00:00Z")))
            let windows = [
                MaintenanceWindow(days: ["mon"], start: "01:00", end: "02:00", zone: nil),
                MaintenanceWindow(days: ["tue"], start: "03:00", end: "04:00", zone: nil),
            ]
            #expect(windows.isOpen(at: try at("2026-03-30T01:30:00Z")))
            #expect(windows.isOpen(at: try at("2026-03-31T03:30:00Z")))
            #expect(!windows.isOpen(at: try at("2026-03-31T01:30:00Z")))
        }

        @Test func window_roundTripsThroughCodable() throws {
            let window = MaintenanceWindow(days: ["wed"], start: "23:00", end: "01:00", zone: "Europe/Berlin")
            let decoded = try JSONDecoder().decode(MaintenanceWindow.self, from: JSONEncoder().encode(window))
            #expect(decoded == window)
        }
    }
}
