import CertrotCore
import Foundation
import Testing

/// The ranges the protocol allows for peers' numbers (docs/protocol.md §2, §6): what is outside is refused at
/// parse time, so that nothing beyond them reaches the daemon's arithmetic.
@Suite struct BoundsTests {
    let digest = String(repeating: "ab", count: 32)

    func inventory(seq: String = "0", notAfter: String? = nil) -> [UInt8] {
        let expiry = notAfter.map { #","notAfter":\#($0)"# } ?? ""
        return Array(#"{"v":1,"seq":\#(seq),"creds":[{"tag":42,"type":0,"sha256":"\#(digest)"\#(expiry)}]}"#.utf8)
    }

    @Test(arguments: ["0", "2147483648", "9007199254740991"])
    func seqWithinTwoToThe53_isAccepted(_ seq: String) throws {
        #expect(try Inventory.parse(inventory(seq: seq)).seq == Int64(seq))
    }

    @Test(arguments: ["-1", "9007199254740992", "9223372036854775807", "-9223372036854775808", "1e300", "1.5", "\"1\""])
    func seqOutsideTheProtocolsRange_isAnInvalidInventory(_ seq: String) {
        let error = #expect(throws: CertrotError.self) { try Inventory.parse(inventory(seq: seq)) }
        #expect(error?.code == .invalidInventory)
    }

    @Test(arguments: ["-1", "-9223372036854775808", "253402300800", "9223372036854775807"])
    func notAfterOutsideYears0To9999_isRefused(_ value: String) {
        #expect(throws: CertrotError.self) { try Inventory.parse(inventory(notAfter: value)) }
    }

    @Test func notAfterAtTheEdges_isAccepted() throws {
        #expect(try Inventory.parse(inventory(notAfter: "0")).creds[0].notAfter == 0)
        #expect(try Inventory.parse(inventory(notAfter: "253402300799")).creds[0].notAfter == 253_402_300_799)
    }

    @Test(arguments: [
        #"{"jti":"j","status":"failed","code":2147483648}"#, #"{"jti":"j","status":"failed","code":-2147483649}"#,
        #"{"jti":"j","status":"incomplete","missing":[0]}"#, #"{"jti":"j","status":"incomplete","missing":[65]}"#,
        #"{"jti":"j","status":"incomplete","missing":[9223372036854775807]}"#,
        #"{"jti":"j","status":"failed","missing":[-1]}"#,
    ])
    func ackNumbersOutOfRange_areRefused(_ payload: String) {
        #expect(throws: CertrotError.self) { try Ack.parse(Array(payload.utf8)) }
    }

    @Test func ackNumbersInRange_parse() throws {
        #expect(try Ack.parse(Array(#"{"jti":"j","status":"failed","code":-2147483648}"#.utf8)).code == Int(Int32.min))
        #expect(try Ack.parse(Array(#"{"jti":"j","status":"incomplete","missing":[1,64]}"#.utf8)).missing == [1, 64])
    }

    @Test func saturatingArithmetic_clampsInsteadOfTrapping() {
        #expect(Int64.max.saturatingAdd(1) == .max)
        #expect(Int64.min.saturatingAdd(-1) == .min)
        #expect(Int64.min.saturatingSubtract(1) == .min)
        #expect(Int64.max.saturatingSubtract(-1) == .max)
        #expect(Int64(5).saturatingSubtract(7) == -2)
    }

    @Test func deviceKeys_compareBytes_notCanonicalEquivalence() {
        let nfd = "cafe\u{301}"
        let nfc = "caf\u{e9}"
        #expect(nfd == nfc)
        #expect(DeviceKey(nfd) != DeviceKey(nfc))
        #expect(Set([DeviceKey(nfd), DeviceKey(nfc)]).count == 2)
        #expect(DeviceKey(nfd).id.utf8.elementsEqual(nfd.utf8))
        #expect(!CampaignSelection.devices([nfc]).matches(device: nfd, inventory: nil, now: 0, expiry: { _ in nil }))
        #expect(!CampaignSelection.prefix(nfc).matches(device: nfd, inventory: nil, now: 0, expiry: { _ in nil }))
    }
}

@Suite struct CredentialLossTests {
    @Test func aLossSoonAfterTheLastBundle_waitsTheInterval_andLaterLossesMeasureFromThatBundle() {
        var rotation = Rotation(device: "d", target: "ca", sha256: "s", now: 1000)
        rotation.issued(jti: "j1", seq: 1, now: 1000)
        rotation.inventoryArrived(holdsTarget: true, reportedSeq: 1, fresh: true, policy: RotationPolicy(), now: 1001)
        rotation.credentialLost(now: 1002, minInterval: 30)
        #expect(rotation.state == .failed && rotation.nextAttemptAt == 1030 && rotation.jti == nil)
        #expect(!rotation.isInFlight)
        rotation.inventoryArrived(holdsTarget: true, reportedSeq: 1, fresh: true, policy: RotationPolicy(), now: 1003)
        rotation.credentialLost(now: 1004, minInterval: 30)
        #expect(rotation.state == .failed && rotation.nextAttemptAt == 1030)
        #expect(rotation.tick(policy: RotationPolicy(), now: 1030) == .issueBundle)
        #expect(rotation.awaitsBundle)
    }

    @Test func aLossLongAfterTheLastBundle_rotatesAtOnce() {
        var rotation = Rotation(device: "d", target: "ca", sha256: "s", now: 1000)
        rotation.issued(jti: "j1", seq: 1, now: 1000)
        rotation.inventoryArrived(holdsTarget: true, reportedSeq: 1, fresh: true, policy: RotationPolicy(), now: 1001)
        rotation.credentialLost(now: 2000, minInterval: 30)
        #expect(rotation.awaitsBundle && rotation.state == .pending)
    }
}

@Suite struct UnservableRotationTests {
    @Test func aRotationNoBundleCanServe_failsWithItsReason_andNoRetry() {
        var rotation = Rotation(device: "d", target: "ca", sha256: "s", now: 1000)
        rotation.cannotBeServed(error: "parts would not fit", now: 1001)
        #expect(rotation.state == .failed && rotation.lastError == "parts would not fit")
        #expect(rotation.nextAttemptAt == nil && rotation.isSettled)
        #expect(rotation.tick(policy: RotationPolicy(), now: 99_999) == nil)
    }
}
