import CertrotCore

/// Root CA chains (AT%CMNG type 0): the configured targets, and the chains campaigns write.
package final class CAChainKind: CredentialKind {
    let targets: [ResolvedTarget]
    let targetsByName: [String: ResolvedTarget]
    let catalogue: ChainCatalogue
    private let configured: [CAChainDesiredState.Configured]

    init(targets: [ResolvedTarget], catalogue: ChainCatalogue) {
        self.targets = targets
        self.targetsByName = Dictionary(uniqueKeysWithValues: targets.map { ($0.name, $0) })
        self.catalogue = catalogue
        self.configured = targets.map {
            CAChainDesiredState.Configured(name: $0.name, slot: TagKey(tag: $0.tag, type: $0.type), sha256: $0.sha256)
        }
    }

    package func owns(_ target: RotationTarget) -> Bool {
        switch target {
        case .configured(let name): targetsByName[name] != nil
        case .campaign: true  // campaigns write chains
        case .signingKey, .clientCert: false
        }
    }

    package func slot(of target: RotationTarget, in world: KindContext) -> TagKey? {
        switch target {
        case .configured(let name):
            return targetsByName[name].map { TagKey(tag: $0.tag, type: $0.type) }
        case .campaign(let id, let index):
            guard let campaign = world.campaigns[id], campaign.targets.indices.contains(index) else { return nil }
            return TagKey(tag: campaign.targets[index].tag, type: campaign.targets[index].type)
        case .signingKey, .clientCert:
            return nil
        }
    }

    package func desired(inventory: Inventory, in world: KindContext) -> [DesiredCredential] {
        let owners = world.owners.compactMap { slot, target in
            world.rotations[target].map { CAChainDesiredState.Owner(slot: slot, target: target, sha256: $0.sha256) }
        }
        return CAChainDesiredState.desired(inventory: inventory, configured: configured, owners: owners)
    }

    /// When each target tag's credential expires: as the device reports it, else as the chain certrot knows says.
    package func inventorySaved(device: String, inventory: Inventory, tx: any StoreTransaction, now: Int64) throws {
        for target in targets {
            let held = inventory.credential(tag: target.tag, type: target.type)
            let knownExpiry = held.flatMap { cred in
                cred.sha256 == target.sha256 ? target.chain.notAfter : catalogue.known[cred.sha256]?.notAfter
            }
            try tx.saveExpiry(device: device, target: target.name, notAfter: held?.notAfter ?? knownExpiry)
            catalogue.noteExpiry(device: device, target: target, notAfter: held?.notAfter ?? knownExpiry, now: now)
        }
    }

    package func ops(for rotation: Rotation, in world: KindContext) -> [BundleOp]? {
        op(for: rotation, in: world).map { [$0] }
    }

    func op(for rotation: Rotation, in world: KindContext) -> BundleOp? {
        switch rotation.target {
        case .configured(let name):
            guard let target = targetsByName[name] else { return nil }
            return .write(tag: target.tag, type: target.type, pem: target.chain.pem)
        case .campaign(let id, let index):
            guard let campaign = world.campaigns[id], campaign.targets.indices.contains(index),
                let pem = catalogue.sendable[rotation.sha256]
            else { return nil }
            return .write(tag: campaign.targets[index].tag, type: campaign.targets[index].type, pem: pem)
        case .signingKey, .clientCert:
            return nil
        }
    }
}
