/// What a rotation installs on a device. Stored as text (the `target` column, history, RPC answers) and parsed
/// back only where a store reads it, so the engine never takes a name apart.
///
/// Stored forms: a configured CA-chain target by its name (`root`); the `index`-th target of a campaign as
/// `<campaign id>.<index>`; the next signing key as `trust-key`; a client-certificate policy as
/// `client-cert:<name>`. Configuration refuses target names that would
/// read as one of the other forms (``RotationTarget/configuredNameProblem(_:)``).
public enum RotationTarget: Hashable, Sendable, Comparable, CustomStringConvertible, ExpressibleByStringLiteral {
    /// A CA chain named in the configuration's `targets`.
    case configured(String)
    /// Target `index` of campaign `id`.
    case campaign(id: String, index: Int)
    /// The next bundle-signing key (`trust_key` op).
    case signingKey
    /// The device's client certificate under the `clientCerts` policy of this name (`keygen`, then the certificate
    /// and `activate`).
    case clientCert(String)

    static let signingKeyName = "trust-key"
    static let clientCertPrefix = "client-cert:"

    /// Parses a stored target.
    public init(_ stored: String) {
        if stored == Self.signingKeyName {
            self = .signingKey
        } else if stored.hasPrefix(Self.clientCertPrefix) {
            self = .clientCert(String(stored.dropFirst(Self.clientCertPrefix.count)))
        } else if let dot = stored.lastIndex(of: "."), dot != stored.startIndex,
            case let suffix = stored[stored.index(after: dot)...], let index = Int(suffix), index >= 0,
            String(index) == suffix  // canonical digits only: the stored form reads back to the same text
        {
            self = .campaign(id: String(stored[..<dot]), index: index)
        } else {
            self = .configured(stored)
        }
    }

    public init(stringLiteral value: String) { self.init(value) }

    /// The stored form.
    public var description: String {
        switch self {
        case .configured(let name): name
        case .campaign(let id, let index): "\(id).\(index)"
        case .signingKey: Self.signingKeyName
        case .clientCert(let name): Self.clientCertPrefix + name
        }
    }

    /// The campaign this target belongs to, if it is a campaign's.
    public var campaignID: String? {
        if case .campaign(let id, _) = self { id } else { nil }
    }

    /// Whether this is a client-certificate policy's target.
    public var isClientCert: Bool {
        if case .clientCert = self { true } else { false }
    }

    /// Every campaign target of campaign `id` starts with this, stored (the store selects on it).
    public static func campaignPrefix(_ id: String) -> String { "\(id)." }

    /// Ordered as stored text: the order in which a bundle carries its ops.
    public static func < (a: RotationTarget, b: RotationTarget) -> Bool { a.description < b.description }

    /// Why `name` cannot name a configured target (it would read back as another kind of target), or nil.
    public static func configuredNameProblem(_ name: String) -> String? {
        switch RotationTarget(name) {
        case .configured(let parsed) where parsed == name: nil
        case .signingKey: "'\(name)' is reserved for the next signing key"
        case .clientCert: "'\(name)' starts with '\(clientCertPrefix)', which names a client-certificate policy"
        default: "'\(name)' ends in .<number>, which names a campaign's target"
        }
    }
}
