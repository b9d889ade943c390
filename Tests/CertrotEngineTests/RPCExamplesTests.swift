import CertrotCore
import CertrotServer
import Foundation
import Testing

/// The JSON-RPC contract as documented (docs/protocol.md §8, docs/operations.md): every example decodes into the
/// typed method it belongs to and encodes back to the same JSON, and the method and error tables match the code.
@Suite struct RPCExamplesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// Section 8 of docs/protocol.md (up to §9).
    static func section8() throws -> String {
        let text = try String(contentsOf: root.appendingPathComponent("docs/protocol.md"), encoding: .utf8)
        let start = try #require(text.range(of: "## 8. JSON-RPC"))
        let end = try #require(text.range(of: "## 9. ", range: start.upperBound..<text.endIndex))
        return String(text[start.lowerBound..<end.lowerBound])
    }

    static func jsonBlocks(_ text: String) -> [String] {
        text.components(separatedBy: "```json\n").dropFirst().compactMap { $0.components(separatedBy: "```").first }
    }

    /// Decodes `json` as `T`, encodes it again and requires the same JSON value.
    func roundTrip<T: Codable>(_ type: T.Type, _ json: String) throws -> T {
        let data = Data(json.utf8)
        let value = try JSONDecoder().decode(T.self, from: data)
        let again = try JSONEncoder().encode(value)
        let before = try JSONSerialization.jsonObject(with: data) as? NSDictionary
        let after = try JSONSerialization.jsonObject(with: again) as? NSDictionary
        #expect(before != nil && before == after, "\(T.self): \(String(decoding: again, as: UTF8.self))")
        return value
    }

    @Test func everyDocumentedExample_decodesAsItsMethod_andEncodesBackTheSame() throws {
        let blocks = Self.jsonBlocks(try Self.section8())
        #expect(blocks.count == 4)
        // The request.
        let request = try #require(try JSONSerialization.jsonObject(with: Data(blocks[0].utf8)) as? [String: Any])
        #expect(request["method"] as? String == DeviceStatus.name)
        let params = try DeviceStatus.params(try #require(request["params"] as? [String: Any]))
        #expect(params.device == "nrf-352656100123456")
        // The results.
        let fleet = try roundTrip(FleetStatus.Result.self, blocks[1])
        #expect(fleet.devices == 1000 && fleet.targets["broker-ca"]?.tag == 42)
        let campaign = try roundTrip(CampaignStatus.Result.self, blocks[2])
        #expect(campaign.waves.count == 4 && campaign.eta == 47 && campaign.select == ["all": .bool(true)])
        let page = try roundTrip(DeviceList.Result.self, blocks[3])
        #expect(page.devices.first?.campaign?.wave == 0 && page.next == "nrf-0001")
        let created = try roundTrip(
            CampaignCreate.Result.self, #"{"id":"cmp-4f1c9a20be","devices":1000,"waves":4,"state":"running"}"#)
        #expect(try Self.section8().contains(#"`{"id":"cmp-4f1c9a20be","devices":1000,"waves":4,"state":"running"}`"#))
        #expect(created.waves == 4)
        // A maintenance window of campaign.create (docs/operations.md §7).
        let operations = try String(
            contentsOf: Self.root.appendingPathComponent("docs/operations.md"), encoding: .utf8)
        let window = try #require(Self.jsonBlocks(operations).first)
        let decoded = try JSONDecoder().decode(MaintenanceWindow.self, from: Data(window.utf8))
        #expect(decoded.zone == "Europe/Berlin" && decoded.days.count == 5)
    }

    @Test func aNullNextAndANullETA_areWrittenAsNull() throws {
        let page = String(decoding: try JSONEncoder().encode(DeviceList.Result(devices: [], next: nil)), as: UTF8.self)
        #expect(page.contains(#""next":null"#))
    }

    @Test func theDocumentedMethods_areTheDispatchedOnes_andTheMutatingOnesNeedASignature() throws {
        let text = try Self.section8()
        let documented = Set(
            text.components(separatedBy: "**`").dropFirst().compactMap { $0.components(separatedBy: "`**").first })
        #expect(documented == Set(RPCMethods.byName.keys))
        // "mutating methods (`device.retry`, …) are accepted only as a JWS"
        let mutatingLine = try #require(text.components(separatedBy: "\n").first { $0.hasPrefix("(`device.retry`") })
        for name in RPCMethods.byName.keys {
            #expect(mutatingLine.contains("`\(name)`") == RPCMethods.mutating.contains(name), "\(name)")
        }
    }

    @Test func theDocumentedErrorCodes_areRPCErrorsCodes() throws {
        let codes = try Self.section8().components(separatedBy: "\n").compactMap { line -> Int? in
            guard line.hasPrefix("| -3") else { return nil }
            return Int(line.dropFirst(2).prefix { $0 != " " })
        }
        #expect(Set(codes) == Set(RPCError.Code.allCases.map(\.rawValue)))
    }
}
