import CertrotCore
import CertrotServer
import CertrotTestSupport
import Foundation
import Logging
import Testing

/// The chain catalogue alone: what a campaign makes known and sendable, overlap composition, expiry lookup.
@Suite struct ChainCatalogueTests {
    let now = Int64(Date().timeIntervalSince1970)

    @Test func aCampaignsChains_becomeSendable_andAnOverlapIsComposedForAChainItKnows() throws {
        let old = try PEM.normalizeChain(try CertificateFactory.rootCA(commonName: "Old CA", days: 100).pem)
        let new = try PEM.normalizeChain(try CertificateFactory.rootCA(commonName: "New CA", days: 700).pem)
        let catalogue = ChainCatalogue(logger: Logger(label: "test"))
        catalogue.known[old.sha256] = .init(name: "old", notAfter: old.notAfter, chain: old)
        var campaign = Campaign(
            id: "c", name: "roll", now: now,
            targets: [CampaignTarget(tag: 42, type: 0, strategy: .overlap, pem: new.pem, credential: nil)],
            select: .all, origin: "rpc")
        catalogue.learn(campaign)
        #expect(catalogue.sendable[new.sha256] == new.pem)
        #expect(catalogue.known[new.sha256]?.name == "roll tag 42")

        let (pem, problem) = catalogue.chain(for: &campaign, index: 0, held: old.sha256, profile: .nrf91, now: now)
        #expect(problem == nil)
        let composed = try PEM.normalizeChain(try #require(pem))
        #expect(composed.certificates.count == 2, "the new root and the old one the device still needs")
        #expect(campaign.targets[0].overlaps[old.sha256] == pem, "remembered in the campaign")
        #expect(catalogue.sendable[composed.sha256] == pem && catalogue.known[composed.sha256] != nil)

        let (asIs, _) = catalogue.chain(for: &campaign, index: 0, held: new.sha256, profile: .nrf91, now: now)
        #expect(asIs == new.pem, "a device that holds the new chain is sent it as it is")
        let unknown = String(repeating: "a", count: 64)
        let (none, why) = catalogue.chain(for: &campaign, index: 0, held: unknown, profile: .nrf91, now: now)
        #expect(none == nil && why?.contains("is not known to certrot") == true)
    }

    @Test func expiry_isTheInventorysDate_elseTheKnownChains() throws {
        let chain = try PEM.normalizeChain(try CertificateFactory.rootCA(commonName: "Known CA", days: 50).pem)
        let catalogue = ChainCatalogue(logger: Logger(label: "test"))
        catalogue.known[chain.sha256] = .init(name: "k", notAfter: chain.notAfter, chain: chain)
        let inventory = Inventory(
            seq: 1,
            creds: [
                .init(tag: 42, type: 0, sha256: chain.sha256), .init(tag: 43, type: 0, sha256: "x", notAfter: 123),
                .init(tag: 44, type: 0, sha256: "unknown"),
            ])
        #expect(catalogue.expiry(of: inventory, tag: 42) == chain.notAfter)
        #expect(catalogue.expiry(of: inventory, tag: 43) == 123)
        #expect(catalogue.expiry(of: inventory, tag: 44) == nil)
        #expect(catalogue.expiry(of: nil, tag: 42) == nil)
    }
}
