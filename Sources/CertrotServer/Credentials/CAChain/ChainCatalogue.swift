import CertrotCore
import Foundation
import Logging

/// Every chain the daemon knows by digest — configured targets and their successors, the catalogue, campaign
/// chains and the overlaps composed from them — with the names operators see, and the PEM a campaign may send.
package final class ChainCatalogue {
    package typealias KnownChain = DaemonSettings.KnownChain

    /// Digest → name, expiry and (when certrot has it) the chain: `overlap` composes with it.
    package var known: [String: KnownChain] = [:]
    /// Digest → PEM of every chain a campaign may send (targets and composed overlaps).
    package var sendable: [String: String] = [:]
    /// Catalogue entries by name (a campaign target may name one with `credential`).
    var byName: [String: CertificateChain] = [:]
    /// Per configured target: seconds before expiry at which auto-renewal starts, and the successor chain.
    var renewal: [String: (before: Int64, successor: CertificateChain?)] = [:]
    /// Device + target pairs already logged as expiring without successor.
    private var warnedExpiring: Set<[UInt8]> = []
    let logger: Logger

    package init(logger: Logger) {
        self.logger = logger
    }

    /// A chain by name: the catalogue's, or a configured target's (or its successor's).
    func named(_ name: String, targets: [String: ResolvedTarget]) -> CertificateChain? {
        if let target = targets[name] { return target.chain }
        return byName[name] ?? known.values.first { $0.name == name }?.chain
    }

    /// A campaign's chains, and the overlaps composed for it, become known and sendable.
    package func learn(_ campaign: Campaign) {
        for target in campaign.targets {
            known[target.sha256] =
                known[target.sha256]
                ?? KnownChain(
                    name: target.credential ?? "\(campaign.name) tag \(target.tag)",
                    notAfter: (try? PEM.normalizeChain(target.pem))?.notAfter ?? 0,
                    chain: try? PEM.normalizeChain(target.pem))
            for (_, pem) in target.overlaps { learn(overlap: pem, campaign: campaign.name, tag: target.tag) }
            sendable[target.sha256] = target.pem
        }
    }

    /// A composed overlap chain: sendable by digest, and known (a later overlap or replace may start from it).
    func learn(overlap pem: String, campaign: String, tag: Int64) {
        let digest = Hex.sha256(Array(pem.utf8))
        guard sendable[digest] == nil else { return }
        sendable[digest] = pem
        if let chain = try? PEM.normalizeChain(pem) {
            known[digest] =
                known[digest]
                ?? KnownChain(name: "\(campaign) overlap, tag \(tag)", notAfter: chain.notAfter, chain: chain)
        }
    }

    /// When a device's credential in `tag` expires: as its inventory says, else as the chain certrot knows says.
    package func expiry(of inventory: Inventory?, tag: Int64) -> Int64? {
        let dates = (inventory?.creds ?? []).filter { $0.tag == tag }.compactMap {
            $0.notAfter ?? known[$0.sha256]?.notAfter
        }
        return dates.min()
    }

    /// The chain a device holding `held` is sent for a campaign's target `index`; for `overlap` with a chain not
    /// seen at creation, composed now (and remembered in the campaign). nil: cannot be composed (unknown chain,
    /// or too large).
    package func chain(
        for campaign: inout Campaign, index: Int, held: String?, profile: DeviceProfile, now: Int64
    ) -> (pem: String?, problem: String?) {
        let target = campaign.targets[index]
        guard target.strategy == .overlap, let held, held != target.sha256 else { return (target.pem, nil) }
        if let pem = target.overlaps[held] { return (pem, nil) }
        if let pem = sendable[held], target.overlaps.values.contains(pem) { return (pem, nil) }
        guard let current = known[held]?.chain, let new = try? PEM.normalizeChain(target.pem) else {
            return (
                nil,
                "overlap: the chain this device holds in tag \(target.tag) (sha256 \(held.prefix(12))…) is not known to certrot"
            )
        }
        let composed = Preflight.overlap(new: new, current: current, now: Date(timeIntervalSince1970: Double(now)))
        do {
            try Preflight.checkOverlapSize(
                composed, held: held, profile: profile, what: "targets[\(index)] (tag \(target.tag))")
        } catch {
            return (nil, error.message)
        }
        campaign.targets[index].overlaps[held] = composed.pem
        learn(overlap: composed.pem, campaign: campaign.name, tag: target.tag)
        return (composed.pem, nil)
    }

    /// Logs, once per device and target, a credential close to expiry for which no successor is configured.
    func noteExpiry(device: String, target: ResolvedTarget, notAfter: Int64?, now: Int64) {
        guard let notAfter, let renewal = renewal[target.name], renewal.successor == nil,
            notAfter < now + renewal.before, target.chain.notAfter < now + renewal.before
        else { return }
        let key = Array(device.utf8) + [0] + Array(target.name.utf8)
        guard warnedExpiring.insert(key).inserted else { return }
        logger.warning(
            "credential expiring without successor",
            metadata: [
                "device": "\(device)", "target": "\(target.name)", "notAfter": "\(notAfter)",
                "daysLeft": "\(notAfter.saturatingSubtract(now) / 86400)",
            ])
    }
}
