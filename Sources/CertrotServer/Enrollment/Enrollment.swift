import CertrotCore
import Crypto
import Foundation
import X509

/// One AT command's answer: the information lines (blank lines, the command's echo and unsolicited result codes
/// dropped) and the final result code.
package struct ATAnswer: Sendable, Equatable {
    package enum Final: Sendable, Equatable {
        case ok
        case error
        /// `+CME ERROR: <code>`.
        case cme(Int)
    }

    package var lines: [String]
    package var final: Final

    package init(lines: [String], final: Final) {
        self.lines = lines
        self.final = final
    }

    /// The answer as a person reads it in an error message.
    package var text: String {
        let last: String =
            switch final {
            case .ok: "OK"
            case .error: "ERROR"
            case .cme(let code): "+CME ERROR: \(code)"
            }
        return (lines + [last]).joined(separator: " | ")
    }
}

/// Where AT commands go: a serial port (``SerialATPort``), or a modem emulator in the same process.
package protocol ATChannel: AnyObject {
    /// Sends `command` and waits for its final result code. Throws ``EnrollmentError`` when nothing final comes
    /// within `timeout` seconds.
    func send(_ command: String, timeout: Double) throws -> ATAnswer
}

/// Why an enrollment stopped: the AT command and the modem's answer when there was one.
package struct EnrollmentError: Error, CustomStringConvertible, Sendable {
    package var message: String
    package var command: String?
    package var answer: String?

    package init(_ message: String, command: String? = nil, answer: String? = nil) {
        self.message = message
        self.command = command
        self.answer = answer
    }

    package var description: String {
        var text = message
        if let command {
            // A certificate's text is long: name the command by its head.
            let head = command.count > 40 ? String(command.prefix(40)) + "…" : command
            text += " (\(head)"
            text += answer.map { " answered \($0))" } ?? " got no answer)"
        }
        return text
    }
}

/// Factory enrollment (`certrot enroll`, docs/factory.md): a device's first identity from a `clientCerts` policy's
/// issuer, written through the modem's AT interface and known to the store from birth. The modem goes offline,
/// generates a key in each of the policy's two tags (two attested answers: the modem's identity key comes out of
/// them), the certificate for tag A's key is issued and recorded, written with the policy's CA chain, read back
/// by digest (rewritten on a mismatch, a bounded number of times), tag B's key is deleted, and the modem goes
/// online. Then the store records the device: its identity key and UUID (pinned), its active tag and the
/// inventory it should report. A certificate whose write did not verify is revoked (recorded as never delivered).
package struct Enrollment {
    package var policy: ClientCertPolicy
    package var store: any RotationStore
    package var clock: () -> Int64 = { Int64(Date().timeIntervalSince1970) }
    /// Times a credential is written before the enrollment gives up on it.
    package var writeAttempts = 3
    /// Seconds to wait for an ordinary command, and for KEYGEN (the modem computes a key).
    package var commandTimeout = 10.0
    package var keygenTimeout = 30.0
    /// Where progress goes, a line a step.
    package var progress: (String) -> Void = { _ in }

    package init(policy: ClientCertPolicy, store: any RotationStore) {
        self.policy = policy
        self.store = store
    }

    /// What an enrollment did.
    package struct Result: Sendable {
        package var device: String
        package var imei: String?
        package var uuid: String
        package var identityKey: P256.Signing.PublicKey
        package var certificate: IssuedCertificate
        /// Writes beyond the first (a digest that did not match).
        package var rewrites: Int
    }

    // MARK: Over the AT interface

    package func run(on channel: any ATChannel, device requested: String?) throws -> Result {
        func send(_ command: String, timeout: Double? = nil) throws -> ATAnswer {
            try channel.send(command, timeout: timeout ?? commandTimeout)
        }
        func expectOK(_ command: String, _ what: String, timeout: Double? = nil) throws -> ATAnswer {
            let answer = try send(command, timeout: timeout)
            guard answer.final == .ok else {
                throw EnrollmentError(what, command: command, answer: answer.text)
            }
            return answer
        }
        _ = try? send("AT+CMEE=1")
        _ = try expectOK("AT+CFUN=4", "the modem did not go offline (credentials are written only at CFUN=4)")
        let imeiAnswer = try expectOK("AT+CGSN", "the modem did not give its IMEI")
        let imei = Self.imei(imeiAnswer.lines)
        let modemUUID = (try? send("AT%XMODEMUUID")).flatMap { $0.final == .ok ? Self.modemUUID($0.lines) : nil }
        guard let device = requested ?? imei.map({ "nrf-" + $0 }) else {
            throw EnrollmentError(
                "no device ID: the modem's AT+CGSN answer holds no IMEI; give --device", command: "AT+CGSN",
                answer: imeiAnswer.text)
        }
        try Self.checkDevice(device, policy: policy)
        progress(
            "\(device): offline, IMEI \(imei ?? "?"), generating keys in tags \(policy.tags[0]) and \(policy.tags[1])")
        var answers: [String] = []
        for tag in policy.tags {
            for type in [0, 1, 2] {
                let command = "AT%CMNG=3,\(tag),\(type)"
                let answer = try send(command)
                guard answer.final == .ok || answer.final == .cme(513) else {
                    throw EnrollmentError("could not empty sec tag \(tag)", command: command, answer: answer.text)
                }
            }
            let command = "AT%KEYGEN=\(tag),2,0,\"CN=\(policy.commonName(for: device))\""
            let answer = try expectOK(command, "the modem did not generate a key", timeout: keygenTimeout)
            // The response line as the modem printed it: KeygenOutput takes its `%KEYGEN: "…"` framing off.
            guard let line = answer.lines.first(where: { $0.hasPrefix("%KEYGEN:") }) else {
                throw EnrollmentError("the KEYGEN answer has no %KEYGEN line", command: command, answer: answer.text)
            }
            answers.append(line)
        }
        let checked = try check(answers: answers, uuid: modemUUID)
        var certificate = try issue(device: device, checked: checked)
        progress("\(device): certificate \(certificate.serial) issued for the key in tag \(certificate.tag)")
        let tag = certificate.tag
        var rewrites = 0
        do {
            let writes: [(type: Int, pem: String)] = [(1, certificate.pem), (0, policy.caChain.pem)]
            var pending = writes
            for attempt in 1...max(writeAttempts, 1) {
                for write in pending {
                    let command = "AT%CMNG=0,\(tag),\(write.type),\"\(write.pem)\""
                    let answer = try send(command)
                    guard answer.final == .ok else {
                        throw EnrollmentError(
                            "the modem refused the \(write.type == 1 ? "certificate" : "CA chain")", command: command,
                            answer: answer.text)
                    }
                }
                let listed = try expectOK("AT%CMNG=1,\(tag)", "the modem did not list sec tag \(tag)")
                let digests = Self.digests(listed.lines, tag: tag)
                pending = writes.filter { digests[$0.type] != Hex.sha256(Array($0.pem.utf8)).uppercased() }
                if pending.isEmpty { break }
                guard attempt < writeAttempts else {
                    throw EnrollmentError(
                        "the modem's digest of \(pending.map { $0.type == 1 ? "the certificate" : "the CA chain" }.joined(separator: " and ")) "
                            + "does not match what was written, \(writeAttempts) times (bytes lost on the line? use flow control)",
                        command: "AT%CMNG=1,\(tag)", answer: listed.text)
                }
                rewrites += pending.count
                progress("\(device): digest mismatch in tag \(tag) (types \(pending.map(\.type))); writing again")
            }
            guard digestsInclude(key: try send("AT%CMNG=1,\(tag),2"), tag: tag) else {
                throw EnrollmentError("the key generated in sec tag \(tag) is gone", command: "AT%CMNG=1,\(tag),2")
            }
            let standby = policy.standby(active: tag)
            let deleted = try send("AT%CMNG=3,\(standby),2")
            guard deleted.final == .ok || deleted.final == .cme(513) else {
                throw EnrollmentError(
                    "could not delete the unused key in sec tag \(standby)", command: "AT%CMNG=3,\(standby),2",
                    answer: deleted.text)
            }
            _ = try expectOK("AT+CFUN=1", "the modem did not go online")
        } catch {
            neverDelivered(certificate, reason: "\(error)")
            throw error
        }
        certificate.state = .active
        try record(device: device, certificate: certificate, checked: checked)
        return Result(
            device: device, imei: imei, uuid: ModemUUID.format(checked.uuid), identityKey: checked.identityKey,
            certificate: certificate, rewrites: rewrites)
    }

    private func digestsInclude(key answer: ATAnswer, tag: Int64) -> Bool {
        answer.final == .ok && Self.digests(answer.lines, tag: tag)[2] != nil
    }

    /// `%CMNG: <tag>,<type>,"<digest>"` lines of `tag`: type → digest (uppercase).
    package static func digests(_ lines: [String], tag: Int64) -> [Int: String] {
        var result: [Int: String] = [:]
        for line in lines where line.hasPrefix("%CMNG:") {
            let fields = line.dropFirst(6).replacingOccurrences(of: "\"", with: "").split(separator: ",").map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard fields.count >= 3, Int64(fields[0]) == tag, let type = Int(fields[1]) else { continue }
            result[type] = fields[2].uppercased()
        }
        return result
    }

    /// The UUID in an `AT%XMODEMUUID` answer (`%XMODEMUUID: 25c95751-efa4-40d4-8b4a-1dcaab81fac9`).
    package static func modemUUID(_ lines: [String]) -> [UInt8]? {
        lines.lazy.compactMap { line in
            line.hasPrefix("%XMODEMUUID:")
                ? ModemUUID.parse(line.dropFirst(12).trimmingCharacters(in: .whitespaces)) : nil
        }.first
    }

    /// The IMEI in an `AT+CGSN` answer: 15 digits on the last line (or `+CGSN: "<imei>"`).
    package static func imei(_ lines: [String]) -> String? {
        for line in lines.reversed() {
            let digits = line.filter(\.isNumber)
            if digits.count == 15 { return digits }
        }
        return nil
    }

    package static func checkDevice(_ device: String, policy: ClientCertPolicy) throws {
        if let problem = DeviceID.problem(device) { throw EnrollmentError("device ID '\(device)': \(problem)") }
        do {
            try BundleCheck.checkOp(
                .keygen(tag: policy.tags[0], subject: "CN=" + policy.commonName(for: device)), profile: .nrf91)
        } catch {
            throw EnrollmentError("device ID '\(device)' cannot make a KEYGEN subject: \(error.message)")
        }
    }

    // MARK: The answers, the certificate, the store

    package struct Checked: Sendable {
        package var identityKey: P256.Signing.PublicKey
        package var uuid: [UInt8]
        /// The answer for tag A (the one the certificate is for) and its key.
        package var tag: Int64
        package var output: KeygenOutput
    }

    /// Checks two attested answers (as the modem printed them, or just their quoted part), one for each of the
    /// policy's tags as their attestations say, as renewal checks a CSR, and recovers the modem's identity key.
    package func check(answers texts: [String], uuid: [UInt8]?) throws -> Checked {
        var outputs: [Int64: KeygenOutput] = [:]
        for text in texts {
            let output: KeygenOutput
            do {
                output = try KeygenOutput.parse(text)
            } catch {
                throw EnrollmentError("a KEYGEN answer is not a modem's: \(error.message) (\(text.prefix(40))…)")
            }
            guard output.cose != nil, let attestation = output.attestation else {
                throw EnrollmentError("a KEYGEN answer carries no attestation (AT%KEYGEN=<tag>,2,0 gives one)")
            }
            outputs[attestation.secTag] = output
        }
        for tag in policy.tags where outputs[tag] == nil {
            throw EnrollmentError("no attested KEYGEN answer for sec tag \(tag)")
        }
        let both = policy.tags.compactMap { outputs[$0] }
        let uuids = Set(both.compactMap { $0.attestation?.uuid })
        guard uuids.count == 1, let answered = uuids.first else {
            throw EnrollmentError("the two KEYGEN answers name different modems")
        }
        if let uuid, uuid != answered {
            throw EnrollmentError(
                "the KEYGEN answers name modem \(ModemUUID.format(answered)); AT%XMODEMUUID said \(ModemUUID.format(uuid))"
            )
        }
        guard case .settled(let key) = IdentityKeyRecovery.recover(both.compactMap(\.cose)) else {
            throw EnrollmentError("no single identity key signed both KEYGEN answers")
        }
        for tag in policy.tags {
            do {
                try outputs[tag]!.verify(identityKey: key, secTag: tag, uuid: answered)
            } catch {
                throw EnrollmentError("the KEYGEN answer for sec tag \(tag) fails its check: \(error.message)")
            }
        }
        return Checked(identityKey: key, uuid: answered, tag: policy.tags[0], output: outputs[policy.tags[0]]!)
    }

    /// Issues the certificate for the checked key and records it (state `issued`, not yet delivered) with its audit
    /// record, before anything is written to the modem: a certificate certrot signed is never unrecorded. An
    /// earlier enrollment's certificate for the same device that never reached the modem is revoked now.
    package func issue(device: String, checked: Checked) throws -> IssuedCertificate {
        let now = clock()
        let issued: ClientCertificateIssuer.Issued
        do {
            issued = try policy.issuer.issuer.issue(
                for: checked.output.publicKey, commonName: policy.commonName(for: device),
                now: Date(timeIntervalSince1970: TimeInterval(now)))
        } catch {
            throw EnrollmentError("issuing failed: \(error)")
        }
        let pem = policy.issuer.chainPEM.isEmpty ? issued.pem : issued.pem + policy.issuer.chainPEM
        let certificate = IssuedCertificate(
            issuer: policy.issuer.name, serial: issued.serial, device: device, policy: policy.name, tag: checked.tag,
            keygenJTI: "enroll-" + Hex.encode((0..<16).map { _ in UInt8.random(in: 0...255) }),
            sha256: Hex.sha256(Array(pem.utf8)), pem: pem,
            notBefore: Int64(issued.notBefore.timeIntervalSince1970),
            notAfter: Int64(issued.notAfter.timeIntervalSince1970), issuedAt: now)
        try store.write { tx in
            for var stale in try tx.issued(device: device)
            where stale.state == .issued && stale.keygenJTI.hasPrefix("enroll-") {
                stale.state = .revoked
                stale.revokedAt = now
                try tx.saveIssued(stale)
                try tx.audit(
                    .certificateRevoked, at: now, device: device, subject: stale.serial,
                    body: [
                        "issuer": stale.issuer, "reason": "never delivered: an earlier enrollment did not finish",
                    ])
            }
            try tx.insertIssued(certificate)
            try tx.audit(
                .certificateIssued, at: now, device: device, subject: certificate.serial,
                body: [
                    "issuer": certificate.issuer, "policy": policy.name, "tag": certificate.tag,
                    "sha256": certificate.sha256, "notAfter": certificate.notAfter, "via": "enroll",
                ])
        }
        return certificate
    }

    /// The write did not verify: the certificate is revoked, recorded as never delivered.
    func neverDelivered(_ certificate: IssuedCertificate, reason: String) {
        let now = clock()
        try? store.write { tx in
            var revoked = certificate
            revoked.state = .revoked
            revoked.revokedAt = now
            try tx.saveIssued(revoked)
            try tx.audit(
                .certificateRevoked, at: now, device: certificate.device, subject: certificate.serial,
                body: ["issuer": certificate.issuer, "reason": "never delivered: \(reason)"])
        }
    }

    /// The device as the daemon should know it before its first connection.
    package func record(device: String, certificate: IssuedCertificate, checked: Checked) throws {
        let now = clock()
        let key = Hex.encode(checked.identityKey.x963Representation)
        try store.write { tx in
            try tx.saveIssued(certificate)
            try tx.saveLearnedIdentity(
                LearnedIdentity(
                    device: device, uuid: checked.uuid, candidates: [key], firstSeenAt: now, pinnedAt: now))
            var record =
                try tx.device(device)
                ?? DeviceRecord(id: device, firstSeen: now, lastSeen: now, inventory: nil, issuedSeq: 0)
            record.lastSeen = now
            record.inventory = Inventory(
                seq: record.inventory?.seq ?? 0,
                creds: [
                    .init(tag: certificate.tag, type: 0, sha256: Hex.sha256(Array(policy.caChain.pem.utf8))),
                    .init(tag: certificate.tag, type: 1, sha256: certificate.sha256, notAfter: certificate.notAfter),
                ], active: certificate.tag)
            try tx.saveDevice(record)
            try tx.audit(
                .identityPinned, at: now, device: device, subject: ModemUUID.format(checked.uuid),
                body: ["key": key, "via": "enroll"])
            try tx.audit(
                .deviceEnrolled, at: now, device: device, subject: certificate.serial,
                body: ["policy": policy.name, "tag": certificate.tag, "uuid": ModemUUID.format(checked.uuid)])
        }
    }
}
