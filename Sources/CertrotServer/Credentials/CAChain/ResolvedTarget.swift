import CertrotCore
import Foundation

/// A target resolved from config: the chain loaded, normalised and checked against the device profile.
public struct ResolvedTarget: Sendable {
    public var name: String
    public var tag: Int64
    public var type: Int
    public var chain: CertificateChain
    public var sha256: String

    public init(name: String, tag: Int64, type: Int, chain: CertificateChain) {
        self.name = name
        self.tag = tag
        self.type = type
        self.chain = chain
        self.sha256 = chain.sha256
    }

    /// Loads and checks a target. Refuses anything that would be unsafe to push: a chain that does not parse,
    /// has expired or is not yet valid, or is over the profile's credential limit.
    public static func resolve(
        _ target: CertrotConfig.Target, profile: DeviceProfile, now: Date = Date()
    ) throws(CertrotError) -> ResolvedTarget {
        let place = "target '\(target.name)'"
        guard !target.name.isEmpty else { throw CertrotError(.invalidConfig, "a target has an empty name") }
        if let problem = RotationTarget.configuredNameProblem(target.name) {
            throw CertrotError(.invalidConfig, "\(place): the name \(problem); choose another")
        }
        guard (0...Inventory.maxTag).contains(target.tag) else {
            throw CertrotError(.invalidConfig, "\(place): tag \(target.tag) is outside 0…\(Inventory.maxTag)")
        }
        guard target.type == CredentialType.rootCAChain.rawValue else {
            throw CertrotError(
                .invalidConfig,
                "\(place): type \(target.type) is not supported; certrot v1 rotates root CA chains (type 0)")
        }
        let chain = try loadChain(path: target.chain, what: place)
        try profile.checkCredentialSize(chain.bytes, what: "\(place) chain \(target.chain)")
        for certificate in chain.certificates {
            if certificate.notValidAfter <= now {
                throw CertrotError(
                    .invalidConfig,
                    "\(place): certificate \(certificate.subject) expired at \(certificate.notValidAfter)")
            }
            if certificate.notValidBefore > now {
                throw CertrotError(
                    .invalidConfig,
                    "\(place): certificate \(certificate.subject) is not valid before \(certificate.notValidBefore)")
            }
        }
        return ResolvedTarget(name: target.name, tag: target.tag, type: target.type, chain: chain)
    }

    public static func loadChain(path: String, what: String) throws(CertrotError) -> CertificateChain {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw CertrotError(.invalidConfig, "\(what): cannot read \(path): \(error.localizedDescription)")
        }
        do {
            return try PEM.normalizeChain(text)
        } catch {
            throw CertrotError(.invalidPEM, "\(what): \(path): \(error.message)")
        }
    }
}
