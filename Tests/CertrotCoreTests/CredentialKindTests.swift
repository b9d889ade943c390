import CertrotCore
import Testing

/// Rotation targets as stored, and what each kind of credential wants a device to hold (the pure half of a
/// `CredentialKind`).
@Suite struct CredentialKindTests {
    @Test func storedTargets_readBackAsTheSameTarget() {
        let cases: [(String, RotationTarget)] = [
            ("root", .configured("root")),
            ("broker-ca", .configured("broker-ca")),
            ("trust-key", .signingKey),
            ("cmp-abc.0", .campaign(id: "cmp-abc", index: 0)),
            ("cmp-abc.12", .campaign(id: "cmp-abc", index: 12)),
            ("a.b.3", .campaign(id: "a.b", index: 3)),
            // Not canonical digits: a configured name, so that reading back gives the same text.
            ("x.01", .configured("x.01")),
            ("x.+1", .configured("x.+1")),
            ("x.-1", .configured("x.-1")),
            (".1", .configured(".1")),
            ("x.", .configured("x.")),
            ("v1.2a", .configured("v1.2a")),
        ]
        for (stored, target) in cases {
            #expect(RotationTarget(stored) == target, "\(stored)")
            #expect(target.description == stored)
        }
        #expect(RotationTarget("cmp-abc.2").campaignID == "cmp-abc")
        #expect(RotationTarget("root").campaignID == nil)
        #expect(RotationTarget.signingKey.campaignID == nil)
    }

    @Test func configuredNames_thatReadAsAnotherKind_areRefused() {
        #expect(RotationTarget.configuredNameProblem("broker-ca") == nil)
        #expect(RotationTarget.configuredNameProblem("ca.v2") == nil)
        #expect(RotationTarget.configuredNameProblem("trust-key") != nil)
        #expect(RotationTarget.configuredNameProblem("ca.2") != nil)
    }

    @Test func targets_orderAsStoredText() {
        let sorted: [RotationTarget] = [.signingKey, .configured("root"), .campaign(id: "cmp-b", index: 0)].sorted()
        #expect(sorted.map(\.description) == ["cmp-b.0", "root", "trust-key"])
    }

    private func inventory(_ creds: [Inventory.Credential], keys: [String]? = nil) -> Inventory {
        Inventory(seq: 3, creds: creds, keys: keys)
    }

    @Test func caChains_configuredTargets_inConfigurationOrder() {
        let configured = [
            CAChainDesiredState.Configured(name: "b", slot: TagKey(tag: 2, type: 0), sha256: "bb"),
            CAChainDesiredState.Configured(name: "a", slot: TagKey(tag: 1, type: 0), sha256: "aa"),
        ]
        let desired = CAChainDesiredState.desired(
            inventory: inventory([.init(tag: 1, type: 0, sha256: "aa"), .init(tag: 2, type: 0, sha256: "old")]),
            configured: configured, owners: [])
        #expect(desired.map(\.target) == [.configured("b"), .configured("a")])
        #expect(desired.map(\.holds) == [false, true])
        #expect(desired[0].why == "tag 2 does not hold the target")
    }

    @Test func caChains_aCampaignThatOwnsASlot_replacesTheConfiguredTarget() {
        let configured = [
            CAChainDesiredState.Configured(name: "root", slot: TagKey(tag: 1, type: 0), sha256: "aa"),
            CAChainDesiredState.Configured(name: "other", slot: TagKey(tag: 2, type: 0), sha256: "cc"),
        ]
        let owners = [
            CAChainDesiredState.Owner(slot: TagKey(tag: 1, type: 0), target: "cmp-z.0", sha256: "new"),
            CAChainDesiredState.Owner(slot: TagKey(tag: 7, type: 0), target: "cmp-a.1", sha256: "seven"),
        ]
        let desired = CAChainDesiredState.desired(
            inventory: inventory([.init(tag: 1, type: 0, sha256: "new")]), configured: configured, owners: owners)
        // The configured target of tag 1 is gone; campaign slots follow in target order.
        #expect(desired.map(\.target) == [.configured("other"), "cmp-a.1", "cmp-z.0"])
        #expect(desired.map(\.holds) == [false, false, true])
        #expect(desired[1].why == "tag 7 does not hold the campaign's chain")
    }

    @Test func caChains_aSlotIsItsTagAndType() {
        let configured = [CAChainDesiredState.Configured(name: "root", slot: TagKey(tag: 1, type: 0), sha256: "aa")]
        // The same digest in tag 1 as another type does not count.
        let desired = CAChainDesiredState.desired(
            inventory: inventory([.init(tag: 1, type: 1, sha256: "aa")]), configured: configured, owners: [])
        #expect(desired.map(\.holds) == [false])
    }

    @Test func signingKey_onlyForDevicesThatReportKeys_andOnlyDuringAKeyRotation() {
        #expect(SigningKeyDesiredState.desired(inventory: inventory([]), nextKid: "k2") == nil)
        #expect(SigningKeyDesiredState.desired(inventory: inventory([], keys: ["k1"]), nextKid: nil) == nil)
        let wanted = SigningKeyDesiredState.desired(inventory: inventory([], keys: ["k1"]), nextKid: "k2")
        #expect(wanted == DesiredCredential(target: .signingKey, sha256: "k2", holds: false, why: wanted?.why ?? ""))
        #expect(
            SigningKeyDesiredState.desired(inventory: inventory([], keys: ["k1", "k2"]), nextKid: "k2")?.holds == true)
    }
}
