import CertrotCore
import Foundation
import Testing

@Suite struct DeviceIDTests {
    @Test(arguments: ["dev-1", "nrf9160-352656100000001", "ä-unicode", String(repeating: "a", count: 128)])
    func validIDs_areAccepted(_ id: String) {
        #expect(DeviceID.isValid(id))
    }

    @Test(arguments: [
        "", "a/b", "a+b", "a#b", "$SYS", "nul\u{0}x", String(repeating: "a", count: 129),
        String(repeating: "ä", count: 65),
    ])
    func invalidIDs_areRefused(_ id: String) {
        #expect(!DeviceID.isValid(id))
    }

    @Test func topics_areClassified() {
        #expect(Topics.classify("d1/certs/inventory") == .inventory(device: "d1"))
        #expect(Topics.classify("d1/certs/ack") == .ack(device: "d1"))
        #expect(Topics.classify("d1/certs") == .bundle(device: "d1"))
        #expect(Topics.classify("certrot/rpc") == .rpc)
        #expect(Topics.classify("d1/certs/other") == nil)
        #expect(Topics.classify("d1/x/inventory") == nil)
    }
}

@Suite struct InventoryTests {
    let digest = String(repeating: "ab", count: 32)

    @Test func validInventory_parses_andIgnoresUnknownFields() throws {
        let json =
            #"{"v":1,"seq":3,"maxMessage":1024,"extra":true,"creds":[{"tag":42,"type":0,"sha256":"\#(digest)","notAfter":1800000000,"serial":"0a1b","x":1}]}"#
        let inventory = try Inventory.parse(Array(json.utf8))
        #expect(inventory.seq == 3)
        #expect(inventory.maxMessage == 1024)
        #expect(inventory.credential(tag: 42, type: 0)?.notAfter == 1_800_000_000)
        #expect(try Inventory.parse(inventory.encoded()) == inventory)
    }

    func code(_ json: String) -> CertrotError.Code? {
        do {
            _ = try Inventory.parse(Array(json.utf8))
            return nil
        } catch {
            return error.code
        }
    }

    @Test func badJSON_isRefused() {
        #expect(code("{not json") == .invalidJSON)
        #expect(code("") == .invalidJSON)
    }

    @Test func wrongTypes_areRefused() {
        #expect(code(#"{"v":1,"seq":"3","creds":[]}"#) == .invalidInventory)
        #expect(code(#"{"v":1,"seq":0,"creds":[{"tag":"42","type":0,"sha256":"\#(digest)"}]}"#) == .invalidInventory)
        #expect(code(#"{"v":1,"seq":0,"creds":{}}"#) == .invalidInventory)
        #expect(code(#"{"v":1,"seq":0}"#) == .invalidInventory)
        #expect(code(#"[1,2]"#) == .invalidInventory)
        #expect(code(#"{"v":2,"seq":0,"creds":[]}"#) == .invalidInventory)
    }

    @Test func badHexDigests_areRefused() {
        for bad in [
            String(repeating: "AB", count: 32), String(repeating: "a", count: 63), String(repeating: "g", count: 64),
            "",
        ] {
            #expect(code(#"{"v":1,"seq":0,"creds":[{"tag":1,"type":0,"sha256":"\#(bad)"}]}"#) == .invalidInventory)
        }
    }

    @Test func unknownTypes_negativeOrHugeTags_areRefused() {
        #expect(code(#"{"v":1,"seq":0,"creds":[{"tag":1,"type":7,"sha256":"\#(digest)"}]}"#) == .invalidInventory)
        #expect(code(#"{"v":1,"seq":0,"creds":[{"tag":-1,"type":0,"sha256":"\#(digest)"}]}"#) == .invalidInventory)
        #expect(
            code(#"{"v":1,"seq":0,"creds":[{"tag":2147483648,"type":0,"sha256":"\#(digest)"}]}"#) == .invalidInventory)
        #expect(
            code(#"{"v":1,"seq":0,"creds":[{"tag":99999999999999999999999,"type":0,"sha256":"\#(digest)"}]}"#) != nil)
        #expect(code(#"{"v":1,"seq":-4,"creds":[]}"#) == .invalidInventory)
        #expect(code(#"{"v":1,"seq":0,"maxMessage":100,"creds":[]}"#) == .invalidInventory)
    }

    @Test func hugeArrays_andOversizePayloads_areRefused() {
        let creds = (0..<300).map { #"{"tag":\#($0),"type":0,"sha256":"\#(digest)"}"# }.joined(separator: ",")
        #expect(code(#"{"v":1,"seq":0,"creds":[\#(creds)]}"#) == .invalidInventory)
        let big = #"{"v":1,"seq":0,"creds":[],"pad":""# + String(repeating: "x", count: 70_000) + #""}"#
        #expect(code(big) == .oversize)
    }

    @Test func repeatedTagAndType_isRefused() {
        let cred = #"{"tag":1,"type":0,"sha256":"\#(digest)"}"#
        #expect(code(#"{"v":1,"seq":0,"creds":[\#(cred),\#(cred)]}"#) == .invalidInventory)
    }
}

@Suite struct AckTests {
    @Test func validAcks_parse() throws {
        #expect(try Ack.parse(Array(#"{"jti":"abc","status":"applied"}"#.utf8)).status == .applied)
        let failed = try Ack.parse(Array(#"{"jti":"abc","status":"failed","code":518,"reason":"busy"}"#.utf8))
        #expect(failed.code == 518)
        let incomplete = try Ack.parse(Array(#"{"jti":"abc","status":"incomplete","missing":[2,3]}"#.utf8))
        #expect(incomplete.missing == [2, 3])
    }

    @Test func malformedAcks_areRefused() {
        for json in [
            #"{"jti":"abc","status":"done"}"#, #"{"status":"applied"}"#, #"{"jti":"","status":"applied"}"#,
            #"{"jti":"abc","status":"incomplete"}"#, #"{"jti":"abc","status":"incomplete","missing":[0]}"#,
            "nope", #"{"jti":5,"status":"applied"}"#,
        ] {
            #expect(throws: CertrotError.self) { try Ack.parse(Array(json.utf8)) }
        }
        #expect(throws: CertrotError.self) { try Ack.parse(Array(repeating: 32, count: 5000)) }
    }
}
