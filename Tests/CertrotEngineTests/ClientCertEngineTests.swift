import CertrotCore
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

@testable import CertrotCore

/// Client-certificate renewal (docs/protocol.md §9) on EngineHarness, with simulated devices whose modems
/// generate real keys and attestations: the engine's decisions, without a broker.
@Suite struct ClientCertEngineTests {
    let tagA = ClientIdentityLab.tags[0]
    let tagB = ClientIdentityLab.tags[1]

    /// A harness whose config has the lab's issuer and policy (CA chain: the harness's `broker-ca` target).
    func harness(
        devices: [String], registered: [String]? = nil, attestation: String = "required", retry: String? = nil,
        factoryDays: Int = 10, validity: String = "365d", renewBefore: String = "60d",
        minRenewalInterval: String = "1d",
        extra: String = ""
    ) throws -> (EngineHarness, ClientIdentityLab) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cc-\(UUID().uuidString.prefix(8))")
        let lab = try ClientIdentityLab(dir: dir, devices: devices, registered: registered, factoryDays: factoryDays)
        let h = try EngineHarness(
            retry: retry ?? "{base: 2s, factor: 2, cap: 10s, attempts: 3}",
            extra: lab.yaml(
                caChain: "broker-ca", renewBefore: renewBefore, validity: validity, attestation: attestation,
                minRenewalInterval: minRenewalInterval)
                + "\n" + extra)
        return (h, lab)
    }

    func device(
        _ id: String, _ h: EngineHarness, _ lab: ClientIdentityLab, _ behaviour: DeviceBehaviour = .init()
    )
        -> SimulatedDevice
    {
        var device = lab.device(id, keys: [h.key.publicKey], behaviour: behaviour)
        device.provision(tag: 42, type: 0, pem: h.newCA.bytes)  // the CA-chain target holds: only the identity moves
        return device
    }

    /// Plays the device against the engine until neither has anything more to say: parts in, CSRs then acks then
    /// inventories out, PUBACKs delivered. `csr` may rewrite (or drop) a CSR before it is published.
    func exchange(
        _ h: EngineHarness, _ device: inout SimulatedDevice, seen: inout Int,
        csr: (CSRMessage) -> [UInt8]? = { $0.encoded() }
    ) async {
        await h.message(Topics.inventory(device.id), device.inventory.encoded())
        while true {
            await h.acknowledgePublishes()
            let published = h.publisher.published
            guard seen < published.count else { return }
            let batch = published[seen...].filter { $0.topic == Topics.bundle(device.id) }
            seen = published.count
            for message in batch {
                let reaction = device.receive(topic: message.topic, payload: message.payload, now: Double(h.clock.now))
                guard case .ack(let ack, let republish) = reaction else { continue }
                for message in device.takeCSRs() {
                    if let payload = csr(message) { await h.message(Topics.csr(device.id), payload) }
                }
                await h.message(Topics.ack(device.id), ack.encoded())
                if republish { await h.message(Topics.inventory(device.id), device.inventory.encoded()) }
            }
        }
    }

    func rotation(_ h: EngineHarness, _ id: String) throws -> Rotation? {
        try h.rotations(id).first { $0.target == .clientCert("device-identity") }
    }

    func issued(_ h: EngineHarness, _ id: String) throws -> [IssuedCertificate] {
        try h.read { tx in try tx.issued(device: id) }
    }

    @Test func aDeviceWhoseCertificateExpiresSoon_isRenewedInItsStandbyTag_andVerified() async throws {
        let (h, lab) = try harness(devices: ["d1"])
        defer { h.stop() }
        await h.connect()
        var d1 = device("d1", h, lab)
        var seen = 0
        await exchange(h, &d1, seen: &seen)

        let rotation = try #require(try rotation(h, "d1"))
        #expect(rotation.state == .verified)
        #expect(d1.activeTag == tagB, "the device switched to the standby tag")
        let certificates = try issued(h, "d1")
        try #require(certificates.count == 1)
        let issued = certificates[0]
        #expect(issued.state == .active && issued.tag == tagB && rotation.sha256 == issued.sha256)
        #expect(d1.digest(tag: tagB, type: 1) == issued.sha256)
        #expect(d1.digest(tag: tagB, type: 0) == h.newCA.sha256, "the server CA chain is written beside it")
        #expect(d1.digest(tag: tagA, type: 1) == Hex.sha256(Array(lab.factory["d1"]!.pem.utf8)), "A is untouched")
        // The certificate: the policy's subject, for the key the modem holds in B, signed by the device CA.
        let leaf = try Certificate(pemEncoded: issued.pem)
        #expect(leaf.subject.description == "CN=d1")
        #expect(leaf.publicKey == Certificate.PublicKey(try #require(d1.modem?.keys[tagB]).publicKey))
        #expect(lab.ca.certificate.publicKey.isValidSignature(leaf.signature, for: leaf))
        // Two bundles: the keygen, then the certificate, the chain and the activation.
        let bundles = h.bundles(to: "d1")
        #expect(bundles.count == 2)
        #expect(h.drops["stale_ack"] == 1, "the keygen's ack arrives after its CSR moved the rotation on")
    }

    /// A real modem's answer (nRFCloud/utils, Tests/CertrotCoreTests/Vectors/real-modem, answer F: an nRF91 asked
    /// for AT%KEYGEN=52,2,0) on `{id}/certs/csr`, with that modem's identity key registered as
    /// `certrot identity learn` recovers it from two of its answers: certrot issues a certificate for exactly that
    /// CSR's key, under `attestation: required`.
    @Test(arguments: [true, false]) func aRealModemsAnswer_getsACertificateForExactlyItsKey(
        registeredItsKey: Bool
    )
        async throws
    {
        let fixtures = try RealModemFixtures.load()
        let identity = try #require(fixtures.identityKeys.first)
        let answer = try #require(fixtures.answer("F"))
        let realTag = try #require(answer.secTag)
        let real = try KeygenOutput.parse(answer.keygen)

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cc-\(UUID().uuidString.prefix(8))")
        // Registered: the real modem's identity key, or (refused) the simulated modem's own.
        let lab = try ClientIdentityLab(dir: dir, devices: ["d1"], registered: registeredItsKey ? [] : ["d1"])
        if registeredItsKey {
            try IdentityFile.upsert(
                path: lab.identitiesPath, device: "d1",
                key: try P256.Signing.PublicKey(
                    x963Representation: try #require(Hex.decode(identity.identityPublicKey))),
                uuid: ModemUUID.parse(identity.uuid))
        }
        let yaml = lab.yaml(caChain: "broker-ca").replacingOccurrences(
            of: "tags: [\(tagA), \(tagB)]", with: "tags: [\(tagA), \(realTag)]")
        #expect(yaml.contains("\(realTag)]"))
        let h = try EngineHarness(retry: "{base: 2s, factor: 2, cap: 10s, attempts: 3}", extra: yaml)
        defer { h.stop() }
        await h.connect()
        var d1 = device("d1", h, lab)
        var seen = 0
        var sent: CSRMessage?
        await exchange(h, &d1, seen: &seen) { message in
            var message = message
            message.keygen = answer.keygen
            sent = message
            return message.encoded()
        }
        #expect(sent?.tag == realTag, "the keygen asked for the standby tag the real answer attests")
        let certificates = try issued(h, "d1")
        guard registeredItsKey else {
            let refused = try rotation(h, "d1")
            #expect(refused?.state == .failed && refused?.lastError?.contains("identity key") == true)
            #expect(certificates.isEmpty)
            return
        }
        let state = try rotation(h, "d1")
        try #require(certificates.count == 1, "\(String(describing: state))")
        let leaf = try Certificate(pemEncoded: certificates[0].pem)
        #expect(leaf.publicKey == Certificate.PublicKey(real.publicKey), "the certificate is for the real CSR's key")
        #expect(leaf.subject.description == "CN=d1" && certificates[0].tag == realTag)

    }

    @Test func aDeviceWithTimeLeft_orWithoutAnActiveTag_isLeftAlone() async throws {
        let (h, lab) = try harness(devices: ["d1"])
        defer { h.stop() }
        await h.connect()
        var inventory = device("d1", h, lab).inventory
        inventory.creds = inventory.creds.map { cred in
            var cred = cred
            if cred.type == 1 { cred.notAfter = h.clock.now + 200 * 86400 }
            return cred
        }
        await h.message(Topics.inventory("d1"), inventory.encoded())
        #expect(try rotation(h, "d1") == nil)
        inventory.active = nil
        inventory.creds = inventory.creds.map { cred in
            var cred = cred
            cred.notAfter = h.clock.now + 86400
            return cred
        }
        await h.message(Topics.inventory("d1"), inventory.encoded())
        #expect(try rotation(h, "d1") == nil, "no active tag: the device cannot do keygen")
        #expect(h.bundles(to: "d1").isEmpty)
    }

    /// Runs one renewal whose CSR `rewrite` changes, and returns the rotation and what was issued.
    func refused(
        behaviour: DeviceBehaviour = .init(), registered: [String]? = nil,
        _ rewrite: @escaping (inout CSRMessage) -> Void = { _ in }
    ) async throws -> (Rotation?, [IssuedCertificate], EngineHarness) {
        let (h, lab) = try harness(devices: ["d1"], registered: registered)
        var d1 = device("d1", h, lab, behaviour)
        var seen = 0
        await h.connect()
        await exchange(h, &d1, seen: &seen) { message in
            var message = message
            rewrite(&message)
            return message.encoded()
        }
        return (try rotation(h, "d1"), try issued(h, "d1"), h)
    }

    @Test func aForgedAttestation_failsTheRotation_andIssuesNothing() async throws {
        let (rotation, issued, h) = try await refused(behaviour: .init(forgesAttestation: true))
        defer { h.stop() }
        #expect(rotation?.state == .failed)
        #expect(rotation?.lastError?.contains("identity key") == true)
        #expect(issued.isEmpty)
    }

    @Test func anAttestationForAnotherCSR_failsTheRotation() async throws {
        // The COSE of one KEYGEN beside the CSR of another: the digest differs.
        var other = SimulatedModem()
        let foreign = try other.keygen(tag: tagB).split(separator: ".")[0]
        let (rotation, issued, h) = try await refused { message in
            message.keygen = foreign + "." + message.keygen.split(separator: ".")[1]
        }
        defer { h.stop() }
        #expect(rotation?.state == .failed && rotation?.lastError?.contains("another CSR") == true)
        #expect(issued.isEmpty)
    }

    @Test func aCSRForTheWrongTag_failsTheRotation() async throws {
        let (rotation, issued, h) = try await refused { $0.tag = 7 }
        defer { h.stop() }
        #expect(rotation?.state == .failed && rotation?.lastError?.contains("sec tag 7") == true)
        #expect(issued.isEmpty)
    }

    @Test func aNonP256Key_failsTheRotation() async throws {
        let (rotation, issued, h) = try await refused { message in
            let key = P384.Signing.PrivateKey()
            let csr = try! CertificateSigningRequest(
                version: .v1, subject: try! DistinguishedName { CommonName("d1") },
                privateKey: Certificate.PrivateKey(key), attributes: CertificateSigningRequest.Attributes(),
                signatureAlgorithm: .ecdsaWithSHA384)
            var serializer = DER.Serializer()
            try! serializer.serialize(csr)
            message.keygen = Base64URL.encode(serializer.serializedBytes)
        }
        defer { h.stop() }
        #expect(rotation?.state == .failed && rotation?.lastError?.contains("P-256") == true)
        #expect(issued.isEmpty)
    }

    @Test func aDeviceWithoutARegisteredIdentity_isRefusedWhenAttestationIsRequired() async throws {
        let (rotation, issued, h) = try await refused(registered: [])
        defer { h.stop() }
        #expect(rotation?.state == .failed && rotation?.lastError?.contains("no registered identity key") == true)
        #expect(issued.isEmpty)
    }

    @Test(arguments: [false, true]) func aCSRWithOrWithoutNullParameters_isAccepted_andIssued(
        without: Bool
    )
        async throws
    {
        var captured: String?
        let (rotation, issued, h) = try await refused(behaviour: .init(csrWithoutNull: without)) {
            captured = $0.keygen
        }
        defer { h.stop() }
        let output = try #require(captured)
        let der = try #require(Base64URL.decode(output.split(separator: ".")[0]))
        #expect(
            der.starts(with: [0x30]) && (der.firstRange(of: KeygenOutput.ecdsaSHA256WithNull) != nil) != without,
            "the modem sent the form asked for")
        #expect(rotation?.state == .verified)
        #expect(issued.count == 1 && issued.first?.state == .active)
    }

    @Test func aReplayedCSR_andOneFromAnotherDevicesTopic_areDroppedAndCounted() async throws {
        let (h, lab) = try harness(devices: ["d1", "d2"])
        defer { h.stop() }
        await h.connect()
        var d1 = device("d1", h, lab)
        var seen = 0
        var captured: CSRMessage?
        await exchange(h, &d1, seen: &seen) { message in
            captured = message
            return message.encoded()
        }
        let csr = try #require(captured)
        #expect(try issued(h, "d1").count == 1)
        await h.message(Topics.csr("d1"), csr.encoded())
        #expect(h.drops["replayed_csr"] == 1)
        await h.message(Topics.csr("d2"), csr.encoded())
        #expect(h.drops["foreign_csr"] == 1)
        await h.message(Topics.csr("d1"), Array(#"{"v":1,"jti":"x"}"#.utf8))
        #expect(h.drops["invalid_csr_message"] == 1)
        #expect(try issued(h, "d1").count == 1, "one certificate per keygen")
        #expect(try issued(h, "d2").isEmpty)
    }

    @Test func aFailedActivation_leavesTheDeviceOnItsOldTag() async throws {
        let (h, lab) = try harness(devices: ["d1"], retry: "{base: 2s, factor: 2, cap: 10s, attempts: 1}")
        defer { h.stop() }
        await h.connect()
        var d1 = device("d1", h, lab, .init(activationFails: true))
        var seen = 0
        await exchange(h, &d1, seen: &seen)
        let rotation = try #require(try rotation(h, "d1"))
        #expect(rotation.state == .failed && rotation.lastError?.contains("activate_failed") == true)
        #expect(d1.activeTag == tagA)
        #expect(d1.digest(tag: tagA, type: 1) == Hex.sha256(Array(lab.factory["d1"]!.pem.utf8)))
        #expect(try issued(h, "d1").first?.state == .issued, "issued, never active")
    }

    @Test func aRestart_betweenIssuanceAndActivation_resendsTheSameCertificate() async throws {
        let (h, lab) = try harness(devices: ["d1"])
        defer { h.stop() }
        await h.connect()
        var d1 = device("d1", h, lab)
        var seen = 0
        var held: [UInt8]?
        // The CSR is taken and the certificate bundle published, but the device never gets it: the daemon dies.
        await exchange(h, &d1, seen: &seen) { message in
            held = message.encoded()
            return nil
        }
        await h.message(Topics.csr("d1"), try #require(held))
        #expect(try issued(h, "d1").count == 1)
        let before = h.bundles(to: "d1")
        try await h.restart()
        await h.connect()
        let after = h.bundles(to: "d1")
        #expect(after.count == 1 && after[0] == before.last, "the same certificate bundle, re-sent")
        seen = 0
        await exchange(h, &d1, seen: &seen)
        #expect(try rotation(h, "d1")?.state == .verified)
        #expect(try issued(h, "d1").count == 1)
    }

    @Test func aSecondRenewal_revokesTheCertificateItReplaces_inTheCRL() async throws {
        let (h, lab) = try harness(devices: ["d1"])
        defer { h.stop() }
        await h.connect()
        var d1 = device("d1", h, lab)
        var seen = 0
        await exchange(h, &d1, seen: &seen)
        let first = try #require(try issued(h, "d1").first)
        #expect(d1.activeTag == tagB)
        // 310 days on, the certificate issued (365 days) is within renewBefore (60 days): a new identity, in A.
        await h.advance(310 * 86400)
        await exchange(h, &d1, seen: &seen)
        let certificates = try issued(h, "d1")
        try #require(certificates.count == 2)
        #expect(d1.activeTag == tagA)
        #expect(certificates[0].state == .revoked && certificates[0].serial == first.serial)
        #expect(certificates[1].state == .active && certificates[1].tag == tagA)
        let crl = try RevocationList.parse(String(contentsOfFile: lab.crlPath, encoding: .utf8))
        #expect(crl.serials == [first.serial])
        #expect(crl.isSigned(by: lab.ca.certificate))

        // What operators see: the identity in use, every certificate issued, and the fleet's counts.
        let status = try #require(try await h.rpc("device.status", ["device": "d1"])["result"] as? [String: Any])
        let identity = try #require(status["clientCertificate"] as? [String: Any])
        #expect(identity["policy"] as? String == "device-identity" && identity["activeTag"] as? Int == Int(tagA))
        #expect(identity["issuer"] as? String == "device-ca" && identity["serial"] as? String == certificates[1].serial)
        #expect(
            identity["notAfter"] as? Int == Int(certificates[1].notAfter) && identity["expiringSoon"] as? Bool == false)
        let listed = try #require(status["issuedCertificates"] as? [[String: Any]])
        #expect(listed.map { $0["state"] as? String } == ["revoked", "active"])
        let list = try #require(try await h.rpc("device.list")["result"] as? [String: Any])
        let entry = try #require((list["devices"] as? [[String: Any]])?.first)
        #expect((entry["clientCertificate"] as? [String: Any])?["serial"] as? String == certificates[1].serial)
        let fleet = try #require(try await h.rpc("fleet.status")["result"] as? [String: Any])
        let policy = try #require((fleet["clientCerts"] as? [String: Any])?["device-identity"] as? [String: Any])
        #expect((policy["states"] as? [String: Int])?["verified"] == 1)
        #expect(policy["certificates"] as? [String: Int] == ["issued": 0, "active": 1, "revoked": 1])

        // The audit log has both issuances and the revocation, by serial.
        let log = try h.read { tx in try tx.auditRecords(after: 0, limit: 1000, since: nil, device: "d1") }
        #expect(log.filter { $0.kind == .certificateIssued }.map(\.subject) == certificates.map(\.serial))
        #expect(log.filter { $0.kind == .certificateRevoked }.map(\.subject) == [first.serial])
    }

    /// `attestation: learn`, with no identity registered: the first renewal records the two keys its attestation
    /// allows, the second pins the modem's own identity key (audited, shown in device.status), and from then on an
    /// attestation by another key is refused.
    @Test func underAttestationLearn_theSecondRenewalPinsTheModemsKey_andAForgeryIsThenRefused() async throws {
        let (h, lab) = try harness(devices: ["d1"], registered: [], attestation: "learn")
        defer { h.stop() }
        await h.connect()
        var d1 = device("d1", h, lab)
        var seen = 0
        await exchange(h, &d1, seen: &seen)
        #expect(try rotation(h, "d1")?.state == .verified, "trust on first use: the first answer is taken")
        let modemKey = Hex.encode(try #require(lab.modems["d1"]).identityKey.publicKey.x963Representation)
        let learned = try #require(try h.read { tx in try tx.learnedIdentity(device: "d1") })
        #expect(learned.key == nil && learned.candidates.count == 2 && learned.candidates.contains(modemKey))

        await h.advance(310 * 86400)
        await exchange(h, &d1, seen: &seen)
        #expect(try issued(h, "d1").count == 2 && d1.activeTag == tagA)
        let pinned = try #require(try h.read { tx in try tx.learnedIdentity(device: "d1") })
        #expect(pinned.key == modemKey && pinned.pinnedAt != nil)
        let log = try h.read { tx in try tx.auditRecords(after: 0, limit: 1000, since: nil, device: "d1") }
        #expect(log.filter { $0.kind == .identityPinned }.map(\.subject) == [ModemUUID.format(pinned.uuid)])
        let status = try #require(try await h.rpc("device.status", ["device": "d1"])["result"] as? [String: Any])
        let shown = try #require(status["learnedIdentity"] as? [String: Any])
        #expect(shown["state"] as? String == "pinned" && shown["key"] as? String == modemKey)

        // A third renewal whose attestation another key signed: refused, nothing issued.
        d1.behaviour.forgesAttestation = true
        let before = try issued(h, "d1").map(\.serial)
        await h.advance(310 * 86400)
        await exchange(h, &d1, seen: &seen)
        let refused = try rotation(h, "d1")
        #expect(refused?.state == .failed && refused?.lastError?.contains("learned identity key") == true)
        // Nothing new (the first certificate, expired for longer than retention.issuedCerts, has left the store).
        #expect(try issued(h, "d1").map(\.serial) == Array(before.dropFirst()))
    }

    /// A device whose ID cannot make a valid keygen subject (a quote would break the device's AT%KEYGEN argument,
    /// docs/protocol.md §10) gets a clear failure, not a bundle (red-team #32, finding 8).
    @Test func aDeviceWhoseIDCannotMakeAValidSubject_failsClearly_andIsSentNothing() async throws {
        let id = #"dev"><svg onload=alert(2)>"#
        let (h, lab) = try harness(devices: [id])
        defer { h.stop() }
        await h.connect()
        var d1 = device(id, h, lab)
        var seen = 0
        await exchange(h, &d1, seen: &seen)
        let failed = try rotation(h, id)
        #expect(
            failed?.state == .failed && failed?.lastError?.contains("not signed") == true,
            "\(String(describing: failed))")
        #expect(h.bundles(to: id).isEmpty)
        #expect(try issued(h, id).isEmpty)
    }

    /// A device that claims an early expiry cannot make certrot sign in a loop (red-team #32, finding 3: 80–166
    /// certificates in 30–40 s from one device): certrot's record of a certificate it issued wins over the device's
    /// `notAfter`, and a claim about any other certificate starts a renewal at most once per minRenewalInterval
    /// (within it, the certificate issued last is sent again instead: the device no longer reports holding it).
    @Test func aDeviceClaimingAnEarlyExpiry_cannotMakeCertrotSignInALoop() async throws {
        let (h, lab) = try harness(devices: ["d1"])
        defer { h.stop() }
        await h.connect()
        var d1 = device("d1", h, lab)
        var seen = 0
        await exchange(h, &d1, seen: &seen)
        #expect(try issued(h, "d1").count == 1 && h.bundles(to: "d1").count == 2)
        func claim(sha256: String? = nil, notAfter: Int64) async {
            var inventory = d1.inventory
            inventory.creds = inventory.creds.map { cred in
                var cred = cred
                if cred.type == 1, cred.tag == inventory.active {
                    cred.notAfter = notAfter
                    if let sha256 { cred.sha256 = sha256 }
                }
                return cred
            }
            await h.message(Topics.inventory("d1"), inventory.encoded())
            await h.acknowledgePublishes()
        }
        // Keygen bundles sent: each is a renewal, and what a certificate is issued for.
        func keygens() throws -> Int {
            try h.bundles(to: "d1").filter { jti in
                try h.read { tx in try tx.bundle(jti: jti) }?.claims().ops.contains { $0.op == .keygen } == true
            }.count
        }
        // The certificate certrot just issued, claimed to expire tomorrow: certrot's record (365 days) wins.
        for _ in 0..<5 { await claim(notAfter: h.clock.now + 86400) }
        #expect(try issued(h, "d1").count == 1 && keygens() == 1 && h.bundles(to: "d1").count == 2)
        // A certificate certrot never issued, claimed to expire tomorrow, an hour after an issuance: no renewal yet
        // (the certificate issued last may be sent again: the device no longer reports holding it).
        await h.advance(3600)
        let unknown = String(repeating: "ab", count: 32)
        for _ in 0..<5 { await claim(sha256: unknown, notAfter: h.clock.now + 86400) }
        #expect(try keygens() == 1 && issued(h, "d1").count == 1, "no renewal within minRenewalInterval")
    }

    /// Certificates issued in the past, as rows: `count` for `device`, issued at `at`.
    func pastIssuance(_ h: EngineHarness, device: String, count: Int, at: Int64) throws {
        try h.write { tx in
            for index in 0..<count {
                let serial = String(format: "%02x%x", index, at) + Hex.encode(Array(device.utf8))
                try tx.insertIssued(
                    IssuedCertificate(
                        issuer: "device-ca", serial: serial, device: device, policy: "device-identity", tag: tagA,
                        keygenJTI: "past-\(device)-\(index)-\(at)", sha256: String(repeating: "0", count: 64), pem: "",
                        notBefore: at, notAfter: at + 365 * 86400, issuedAt: at, state: .revoked, revokedAt: at))
            }
        }
    }

    func keygenBundles(_ h: EngineHarness, _ id: String) throws -> Int {
        try h.bundles(to: id).filter { jti in
            try h.read { tx in try tx.bundle(jti: jti) }?.claims().ops.contains { $0.op == .keygen } == true
        }.count
    }

    /// A device issued `issuance.perDevicePerDay` certificates in the last 24 hours gets no keygen (red-team #32,
    /// finding 3): its renewal waits, says why, and starts when the oldest of them leaves the window.
    @Test func aDeviceOverItsIssuanceBudget_waits_untilTheWindowFrees() async throws {
        // minRenewalInterval 0: the factory certificate's expiry starts a renewal however recent the last issuance.
        let (h, lab) = try harness(
            devices: ["d1"], minRenewalInterval: "0s", extra: "issuance: {perDevicePerDay: 2}")
        defer { h.stop() }
        await h.connect()
        let start = h.clock.now
        try pastIssuance(h, device: "d1", count: 1, at: start - 7200)
        try pastIssuance(h, device: "d1", count: 1, at: start - 3600)
        var d1 = device("d1", h, lab)
        var seen = 0
        await exchange(h, &d1, seen: &seen)
        let waiting = try #require(try rotation(h, "d1"))
        #expect(waiting.state == .pending && waiting.jti == nil && h.bundles(to: "d1").isEmpty)
        #expect(waiting.lastError?.contains("issuance.perDevicePerDay 2") == true, "\(waiting.lastError ?? "")")
        #expect(waiting.nextAttemptAt == start - 7200 + 86400, "when the older of the two leaves the window")
        #expect(h.metrics.contains(#"certrot_client_cert_issuance_deferred_total{budget="device"} 1"#), "\(h.metrics)")
        #expect(h.metrics.contains(#"certrot_client_cert_issuance_budget{budget="device_per_day"} 2"#))
        await h.advance(86400 - 7200 - 10)
        #expect(h.bundles(to: "d1").isEmpty, "still within the window")
        await h.advance(20)
        await exchange(h, &d1, seen: &seen)
        #expect(try keygenBundles(h, "d1") == 1 && rotation(h, "d1")?.state == .verified)
        #expect(try issued(h, "d1").count == 3)
    }

    /// The fleet's budget: with `issuance.fleetPerHour` certificates issued in the last hour (to other devices), a
    /// renewal waits a minute or two and starts once the hour has moved on.
    @Test func aFleetOverItsHourlyBudget_holdsRenewals_untilTheHourMovesOn() async throws {
        let (h, lab) = try harness(devices: ["d1"], extra: "issuance: {fleetPerHour: 3}")
        defer { h.stop() }
        await h.connect()
        let start = h.clock.now
        for other in ["x1", "x2", "x3"] { try pastIssuance(h, device: other, count: 1, at: start - 600) }
        var d1 = device("d1", h, lab)
        var seen = 0
        await exchange(h, &d1, seen: &seen)
        let waiting = try #require(try rotation(h, "d1"))
        #expect(waiting.state == .pending && h.bundles(to: "d1").isEmpty)
        #expect(waiting.lastError?.contains("issuance.fleetPerHour 3") == true, "\(waiting.lastError ?? "")")
        let retryAt = try #require(waiting.nextAttemptAt)
        #expect(retryAt >= start + 60 && retryAt < start + 120)
        #expect(h.metrics.contains(#"certrot_client_cert_issuance_deferred_total{budget="fleet"} 1"#))
        #expect(h.metrics.contains("certrot_client_certs_issued_last_hour 3"))
        await h.advance(retryAt - start)
        #expect(h.bundles(to: "d1").isEmpty, "the hour still holds three")
        await h.advance(3600)
        await exchange(h, &d1, seen: &seen)
        #expect(try keygenBundles(h, "d1") == 1 && rotation(h, "d1")?.state == .verified)
    }

    /// What renewals leave behind is bounded: a revoked certificate leaves the CRL once it has expired (RFC 5280
    /// §3.3) and the store `retention.issuedCerts` after that; the certificate in use stays, whatever its age.
    @Test func anExpiredRevokedCertificate_leavesTheCRL_andLaterTheStore() async throws {
        let (h, lab) = try harness(
            devices: ["d1"], factoryDays: 5, validity: "30d", renewBefore: "10d", extra: "retention: {issuedCerts: 5d}")
        defer { h.stop() }
        await h.connect()
        var d1 = device("d1", h, lab)
        var seen = 0
        await exchange(h, &d1, seen: &seen)
        let state = (try? rotation(h, "d1")).map { "\($0 as Any)" } ?? "no rotation"
        let first = try #require(try issued(h, "d1").first, "\(state)")
        await h.advance(21 * 86400)
        await exchange(h, &d1, seen: &seen)
        try #require(try issued(h, "d1").map(\.state) == [.revoked, .active])
        func listed() throws -> [String] {
            try RevocationList.parse(String(contentsOfFile: lab.crlPath, encoding: .utf8)).serials
        }
        #expect(try listed() == [first.serial])
        // The first certificate expires (30 days after it was issued); the daily CRL no longer lists it.
        await h.advance(first.notAfter - h.clock.now + 86400)
        #expect(try listed().isEmpty)
        #expect(try issued(h, "d1").count == 2, "kept for retention.issuedCerts after it expired")
        await h.advance(5 * 86400)
        let kept = try issued(h, "d1")
        #expect(kept.count == 1 && kept.first?.state == .active)
    }

    /// `retention.audit` cuts the log at a signed checkpoint, never before the issuance of a certificate that has
    /// not expired, and records where; the cut log verifies, and a log cut anywhere else does not.
    @Test func theAuditLogsRetention_cutsAtACheckpoint_thatVerification_accepts() async throws {
        let (h, lab) = try harness(
            devices: ["d1"], factoryDays: 5, validity: "30d", renewBefore: "10d", extra: "retention: {audit: 1d}")
        defer { h.stop() }
        await h.connect()
        var d1 = device("d1", h, lab)
        var seen = 0
        await exchange(h, &d1, seen: &seen)
        await h.advance(60)
        func log() throws -> [AuditRecord] {
            try h.read { tx in try tx.auditRecords(after: 0, limit: 100_000, since: nil, device: nil) }
        }
        let first = try #require(try issued(h, "d1").first)
        // Two days on: older than retention.audit, but the certificate issued then is still valid: all kept.
        await h.advance(2 * 86400)
        #expect(try log().first?.seq == 1)
        // Renewed at day 21 (the first certificate revoked), and past the first certificate's expiry.
        await h.advance(19 * 86400)
        await exchange(h, &d1, seen: &seen)
        await h.advance(first.notAfter - h.clock.now + 3600)
        await h.advance(60)
        let cut = try log()
        let start = try #require(cut.first)
        #expect(start.seq > 1 && start.kind == .checkpoint)
        let pruned = try #require(cut.last { $0.kind == .auditPruned })
        #expect(pruned.subject == String(start.seq))
        #expect(!cut.contains { $0.kind == .certificateIssued && $0.subject == first.serial })
        let second = try #require(try issued(h, "d1").last)
        #expect(cut.contains { $0.kind == .certificateIssued && $0.subject == second.serial })
        let summary = try AuditChain.verify(cut, keys: [h.key.publicKey], now: h.clock.now, maxCheckpointAge: 3600)
        #expect(summary.records == cut.count)
        // Records removed beyond the cut (the anchor checkpoint too): verification names it.
        #expect(throws: AuditChain.Problem.self) {
            try AuditChain.verify(Array(cut.dropFirst()), keys: [h.key.publicKey])
        }
        let next = try #require(cut.dropFirst().first { $0.kind == .checkpoint })
        let shorter = Array(cut.drop { $0.seq < next.seq })
        do {
            _ = try AuditChain.verify(shorter, keys: [h.key.publicKey])
            Issue.record("a log cut at a checkpoint no audit.pruned record names verified")
        } catch {
            #expect(error.reason.contains("no audit.pruned record"), "\(error)")
        }
    }

    // MARK: Campaigns

    @Test func aClientCertCampaign_renewsDevicesWithTimeLeft_wave_by_wave_andCompletes() async throws {
        let ids = ["d1", "d2", "d3"]
        let (h, lab) = try harness(devices: ids, factoryDays: 300)
        defer { h.stop() }
        await h.connect()
        var fleet = ids.map { device($0, h, lab) }
        var seen = Array(repeating: 0, count: fleet.count)  // published messages looked at, per device
        for index in fleet.indices { await exchange(h, &fleet[index], seen: &seen[index]) }
        #expect(try ids.allSatisfy { try rotation(h, $0) == nil }, "300 days left: no renewal by expiry")
        // A device that cannot take part (no active tag) is left out of the selection.
        let legacy = Inventory(seq: 0, creds: [.init(tag: 42, type: 0, sha256: h.newCA.sha256)])
        await h.message(Topics.inventory("d9"), legacy.encoded())

        let created = try await h.rpc(
            "campaign.create",
            [
                "name": "identities-2027", "kind": "client-cert", "clientCert": "device-identity",
                "waves": [1, "100%"],
                "select": ["all": true],
                "successThreshold": 0.5, "minExecuted": 1,
            ])
        let id = try #require((created["result"] as? [String: Any])?["id"] as? String, "\(created)")
        for _ in 0..<6 {
            await h.advance(1)
            for index in fleet.indices { await exchange(h, &fleet[index], seen: &seen[index]) }
        }
        let status = try #require(try await h.rpc("campaign.status", ["id": id])["result"] as? [String: Any])
        #expect(status["state"] as? String == "completed", "\(status)")
        #expect(status["kind"] as? String == "client-cert" && status["clientCert"] as? String == "device-identity")
        #expect(status["total"] as? Int == 3)
        #expect((status["states"] as? [String: Int])?["verified"] == 3)
        for device in fleet {
            #expect(device.activeTag == tagB)
            #expect(try rotation(h, device.id)?.state == .verified)
        }

        // An unknown policy, or a device list none of which can take part, is refused.
        let unknown = try await h.rpc(
            "campaign.create", ["name": "x", "kind": "client-cert", "clientCert": "nope", "select": ["all": true]])
        #expect(
            ((unknown["error"] as? [String: Any])?["data"] as? [String: Any])?["reason"] as? String
                == "unknown_client_cert")
        let none = try await h.rpc(
            "campaign.create",
            ["name": "y", "kind": "client-cert", "clientCert": "device-identity", "select": ["devices": ["d9"]]])
        #expect(
            ((none["error"] as? [String: Any])?["data"] as? [String: Any])?["reason"] as? String == "empty_selection")
        let mixed = try await h.rpc(
            "campaign.create",
            [
                "name": "z", "kind": "client-cert", "clientCert": "device-identity",
                "targets": [["tag": 42, "credential": "new-ca"]], "select": ["all": true],
            ])
        #expect((mixed["error"] as? [String: Any])?["code"] as? Int == -32602)
    }

    @Test func abortingAClientCertCampaign_cancelsRenewalsNotYetSent_andTheyStayCancelled() async throws {
        let ids = ["d1", "d2"]
        let (h, lab) = try harness(devices: ids, factoryDays: 300)
        defer { h.stop() }
        await h.connect()
        var fleet = ids.map { device($0, h, lab) }
        var seen = Array(repeating: 0, count: fleet.count)  // published messages looked at, per device
        for index in fleet.indices { await exchange(h, &fleet[index], seen: &seen[index]) }
        // d1's bundle channel is busy: its renewal waits unsent, and the campaign is aborted meanwhile.
        let created = try await h.rpc(
            "campaign.create",
            [
                "name": "identities", "kind": "client-cert", "clientCert": "device-identity", "rate": 0.001,
                "select": ["all": true],
            ])
        let id = try #require((created["result"] as? [String: Any])?["id"] as? String, "\(created)")
        await h.advance(1)
        let admitted = try ids.filter { try rotation(h, $0) != nil }
        #expect(admitted.count == 1, "the rate admits one device")
        _ = try await h.rpc("campaign.abort", ["id": id, "reason": "wrong policy"])
        let status = try #require(try await h.rpc("campaign.status", ["id": id])["result"] as? [String: Any])
        #expect(status["state"] as? String == "aborted")
        #expect((status["states"] as? [String: Int])?["cancelled"] == 1, "the waiting member is cancelled")
        let waiting = try #require(ids.first { !admitted.contains($0) })
        for index in fleet.indices { await exchange(h, &fleet[index], seen: &seen[index]) }
        await h.advance(60)
        #expect(try rotation(h, waiting) == nil, "the member that was never admitted gets no renewal")
    }

    // MARK: Configuration

    @Test func aClientCertConfig_withProblems_isRefused_eachWithItsKeyPath() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ccc-\(UUID().uuidString.prefix(8))")
        let lab = try ClientIdentityLab(dir: dir, devices: ["d1"])
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = SigningKey.generate()
        let keyPath = dir.appendingPathComponent("signing.pem").path
        try KeyFile.write(key, to: keyPath)
        try lab.ca.pem.write(toFile: dir.appendingPathComponent("chain.pem").path, atomically: true, encoding: .utf8)
        func problems(_ yaml: String) throws -> [String] {
            try DaemonSettings.problems(
                CertrotConfig.parse(
                    yaml: """
                        broker: {url: "mqtt://127.0.0.1:1"}
                        store: sqlite:\(dir.appendingPathComponent("x.db").path)
                        signingKey: \(keyPath)
                        targets: []
                        catalogue: [{name: ca, chain: \(dir.appendingPathComponent("chain.pem").path)}]
                        \(yaml)
                        """))
        }
        #expect(try problems(lab.yaml(caChain: "ca")).isEmpty)
        let found = try problems(
            """
            issuers:
              - {name: device-ca, cert: \(lab.caPath), key: \(lab.caKeyPath), validity: 30d}
              - {name: missing, cert: /nope.pem, key: \(lab.caKeyPath)}
            identities: /nope.jsonl
            clientCerts:
              - {name: a, issuer: device-ca, tags: [1, 2], caChain: ca, renewBefore: 30d}
              - {name: b, issuer: device-ca, tags: [2, 3], caChain: ca}
              - {name: c, issuer: nobody, tags: [4, 5], caChain: ca}
              - {name: d, issuer: device-ca, tags: [6], caChain: ca}
              - {name: e, issuer: device-ca, tags: [7, 8], caChain: unknown}
              - {name: f, issuer: device-ca, tags: [9, 10], caChain: ca, subject: "O=x"}
            issuance: {perDevicePerDay: 0, fleetPerHour: -1}
            """)
        let expected = [
            "issuers[1]: cannot read cert /nope.pem", "identities: cannot read /nope.jsonl",
            "clientCerts[0]: renewBefore", "clientCerts[1]: sec tag 2 belongs to another clientCerts policy",
            "clientCerts[2]: issuer 'nobody'", "clientCerts[3]: tags must be two", "clientCerts[4]: caChain 'unknown'",
            "clientCerts[5]: subject must be CN=", "issuance.perDevicePerDay: must be at least 1",
            "issuance.fleetPerHour: must be at least 1",
        ]
        for text in expected {
            #expect(found.contains { $0.hasPrefix(text) }, "\(text) in \(found)")
        }
    }
}
