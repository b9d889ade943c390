import CertrotCore
import Testing

/// CBOR as RFC 8949 defines it: its Appendix A vectors, the deterministic encoding, and hostile input.
@Suite struct CBORTests {
    @Test func appendixAVectors_decodeAndEncodeTheSame() throws {
        let vectors: [(String, CBOR)] = [
            ("00", .unsigned(0)), ("17", .unsigned(23)), ("1818", .unsigned(24)), ("1903e8", .unsigned(1000)),
            ("1b000000e8d4a51000", .unsigned(1_000_000_000_000)), ("20", .int(-1)), ("3903e7", .int(-1000)),
            ("f90000", .double(0)), ("f93e00", .double(1.5)), ("fb3ff199999999999a", .double(1.1)),
            ("f4", .bool(false)), ("f5", .bool(true)), ("f6", .null), ("40", .bytes([])),
            ("4401020304", .bytes([1, 2, 3, 4])), ("6449455446", .text("IETF")), ("62c3bc", .text("ü")),
            ("83010203", .array([.unsigned(1), .unsigned(2), .unsigned(3)])),
            ("a201020304", .map([(.unsigned(1), .unsigned(2)), (.unsigned(3), .unsigned(4))])),
            ("d818456449455446", .tagged(24, .bytes(Array(Hex.decode("6449455446")!)))),
        ]
        for (hex, item) in vectors {
            let bytes = try #require(Hex.decode(hex))
            #expect(try CBOR.decode(bytes) == item, "\(hex)")
            #expect(Hex.encode(item.encoded) == hex, "\(hex)")
        }
    }

    @Test func mapKeys_areWrittenInTheirEncodedOrder() {
        let map = CBOR.map([
            (.text("b"), .unsigned(1)), (.unsigned(10), .unsigned(2)), (.int(-1), .unsigned(3)),
            (.text("a"), .unsigned(4)),
        ])
        #expect(Hex.encode(map.encoded) == "a40a02200361610461620" + "1")
    }

    @Test func hostileInput_isRefused() {
        let inputs = [
            "", "18", "5f", "9f", "bf", "7f", "1c", "f8", "42ff", "63c328", "830102", "0000",
            "9b7fffffffffffffff", "bb7fffffffffffffff", "5b7fffffffffffffff00",
            String(repeating: "81", count: 40) + "00",
        ]
        for hex in inputs {
            #expect(throws: CertrotError.self, "\(hex)") { _ = try CBOR.decode(Hex.decode(hex) ?? []) }
        }
    }
}
