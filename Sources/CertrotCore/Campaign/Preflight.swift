import Foundation
import SwiftASN1
@_spi(FixedExpiryValidationTime) import X509

/// Why a campaign was refused: a message for people plus machine-readable details.
///
/// `reason` is a short stable code (`unparsable`, `not_yet_valid`, `expired`, `expires_soon`, `not_ca`, `too_large`,
/// `unsupported_type`, `overlap_too_large`, `endpoint_unparsable`, `endpoint_too_large`, `endpoint_unverified`,
/// `invalid_window`); `message` is a full sentence naming the certificate, the target and the sizes involved.
public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    public var message: String
    /// E.g. "certificate": .string(subject), "size": .int(5000), "limit": .int(4096), "over": .int(904),
    /// "target": .int(0), "notAfter": .int(unix seconds).
    public var details: [String: RefusalValue]

    public init(_ reason: String, _ message: String, details: [String: RefusalValue] = [:]) {
        self.reason = reason
        self.message = message
        self.details = details
    }

    /// `details` as JSONSerialization-compatible values, plus "reason".
    public var json: [String: Any] {
        var out: [String: Any] = [:]
        for (key, value) in details {
            switch value {
            case .int(let number): out[key] = Int(number)
            case .string(let text): out[key] = text
            }
        }
        out["reason"] = reason
        return out
    }

    public var description: String { "\(reason): \(message)" }
}

public enum RefusalValue: Sendable, Equatable {
    case int(Int64)
    case string(String)
}

/// Checks run before a campaign starts, so that it cannot write a credential a device will refuse or that will cut
/// the device off from the server (the never-brick rule).
public enum Preflight {
    /// Checks a chain that a campaign will write as credential `type` (0 = root CA chain) into devices of `profile`.
    ///
    /// The chain is parsed with `PEM.normalizeChain`, so CRLF line endings, indentation and text between blocks are
    /// normalised away; the returned chain is the normal form that will be written. Checks, in this order:
    /// `unsupported_type` (type != 0), `unparsable`, `not_yet_valid`, `expired`, `expires_soon` (the
    /// earliest-expiring certificate has less than `minRemainingValidity` seconds left), `not_ca`, `too_large`.
    /// `what` names the target in messages, e.g. "targets[0] (tag 42)".
    public static func checkChain(
        _ pem: String, type: Int, profile: DeviceProfile, now: Date, minRemainingValidity: Int64, what: String
    ) throws(Refusal) -> CertificateChain {
        guard type == CredentialType.rootCAChain.rawValue else {
            let label = CredentialType(rawValue: type).map { " (\($0.label))" } ?? ""
            throw Refusal(
                "unsupported_type",
                "\(what): credential type \(type)\(label) is not supported by campaigns; only type 0 (root CA chain) is",
                details: ["what": .string(what), "type": .int(Int64(type))])
        }

        let chain: CertificateChain
        do {
            chain = try PEM.normalizeChain(pem)
        } catch {
            throw Refusal(
                "unparsable", "\(what): the chain cannot be parsed: \(error.message)",
                details: ["what": .string(what), "error": .string(error.message)])
        }

        let nowUnix = unix(now)
        for (index, certificate) in chain.certificates.enumerated() where certificate.notValidBefore > now {
            throw Refusal(
                "not_yet_valid",
                "\(what): certificate \(index) (\(subject(certificate))) is not valid before "
                    + "\(timestamp(certificate.notValidBefore)); a campaign may only write certificates that are "
                    + "valid now",
                details: details(what, index, certificate).merging(
                    ["notBefore": .int(unix(certificate.notValidBefore)), "now": .int(nowUnix)]) { $1 })
        }
        for (index, certificate) in chain.certificates.enumerated() where certificate.notValidAfter <= now {
            throw Refusal(
                "expired",
                "\(what): certificate \(index) (\(subject(certificate))) expired on "
                    + "\(timestamp(certificate.notValidAfter))",
                details: details(what, index, certificate).merging(
                    ["notAfter": .int(unix(certificate.notValidAfter)), "now": .int(nowUnix)]) { $1 })
        }
        let required = now.addingTimeInterval(TimeInterval(minRemainingValidity))
        if let soonest = chain.certificates.enumerated()
            .filter({ $0.element.notValidAfter < required })
            .min(by: { $0.element.notValidAfter < $1.element.notValidAfter })
        {
            let (index, certificate) = soonest
            let remaining = unix(certificate.notValidAfter) - nowUnix
            throw Refusal(
                "expires_soon",
                "\(what): certificate \(index) (\(subject(certificate))) expires on "
                    + "\(timestamp(certificate.notValidAfter)), \(span(remaining)) from now; a campaign requires "
                    + "at least \(span(minRemainingValidity)) of validity left",
                details: details(what, index, certificate).merging(
                    [
                        "notAfter": .int(unix(certificate.notValidAfter)), "remaining": .int(remaining),
                        "required": .int(minRemainingValidity),
                    ]) { $1 })
        }

        for (index, certificate) in chain.certificates.enumerated() {
            let constraints: BasicConstraints?
            do {
                constraints = try certificate.extensions.basicConstraints
            } catch {
                throw Refusal(
                    "not_ca",
                    "\(what): certificate \(index) (\(subject(certificate))) has a malformed BasicConstraints "
                        + "extension; a root CA chain (type 0) holds only CA certificates",
                    details: details(what, index, certificate))
            }
            switch constraints {
            case .isCertificateAuthority: continue
            case .notCertificateAuthority:
                throw Refusal(
                    "not_ca",
                    "\(what): certificate \(index) (\(subject(certificate))) is not a CA certificate "
                        + "(BasicConstraints cA is false); a root CA chain (type 0) holds only CA certificates",
                    details: details(what, index, certificate))
            case nil:
                throw Refusal(
                    "not_ca",
                    "\(what): certificate \(index) (\(subject(certificate))) has no BasicConstraints extension, so "
                        + "it is not a CA certificate; a root CA chain (type 0) holds only CA certificates",
                    details: details(what, index, certificate))
            }
        }

        let size = chain.bytes.count
        if size > profile.maxCredential {
            let over = size - profile.maxCredential
            throw Refusal(
                "too_large",
                "\(what): the chain is \(size) bytes in normal form; profile \(profile.name) allows at most "
                    + "\(profile.maxCredential) bytes (\(over) bytes over)",
                details: [
                    "what": .string(what), "size": .int(Int64(size)), "limit": .int(Int64(profile.maxCredential)),
                    "over": .int(Int64(over)), "profile": .string(profile.name),
                ])
        }
        return chain
    }

    /// The `overlap` strategy: the new chain's certificates followed by those of `current` that are still valid at
    /// `now` (notValidBefore <= now < notValidAfter) and not already in the new chain (by DER bytes), as one chain in
    /// the PEM normal form (`PEM.normalizeChain(result.pem).pem == result.pem`).
    public static func overlap(new: CertificateChain, current: CertificateChain, now: Date) -> CertificateChain {
        var blocks: [PEMBlock] = []
        var certificates: [Certificate] = []
        var seen: Set<[UInt8]> = []
        for certificate in new.certificates {
            // Serialising a parsed certificate cannot fail in practice; if it ever did, keep the new chain as it is.
            guard let der = der(certificate) else { return new }
            blocks.append(PEMBlock(label: "CERTIFICATE", der: der))
            certificates.append(certificate)
            seen.insert(der)
        }
        for certificate in current.certificates
        where certificate.notValidBefore <= now && certificate.notValidAfter > now {
            guard let der = der(certificate), seen.insert(der).inserted else { continue }
            blocks.append(PEMBlock(label: "CERTIFICATE", der: der))
            certificates.append(certificate)
        }
        return CertificateChain(pem: PEM.encode(blocks), certificates: certificates)
    }

    /// Refuses (`overlap_too_large`) when the overlap `chain` exceeds `profile.maxCredential`. `held` is the SHA-256
    /// (hex) of the chain devices hold now.
    public static func checkOverlapSize(
        _ chain: CertificateChain, held: String, profile: DeviceProfile, what: String
    ) throws(Refusal) {
        let size = chain.bytes.count
        guard size > profile.maxCredential else { return }
        let over = size - profile.maxCredential
        throw Refusal(
            "overlap_too_large",
            "overlap of \(what) with the chain held now (sha256 \(held.prefix(12))…) is \(size) bytes; profile "
                + "\(profile.name) allows \(profile.maxCredential) (\(over) over)",
            details: [
                "what": .string(what), "size": .int(Int64(size)), "limit": .int(Int64(profile.maxCredential)),
                "over": .int(Int64(over)), "held": .string(held), "profile": .string(profile.name),
            ])
    }

    /// The never-brick check: `endpointPEM` is the chain the server will present (leaf first, then
    /// intermediates); after the rotation devices hold `roots`. Refuses with `endpoint_unparsable`,
    /// `endpoint_too_large` (normal-form bytes > `limit`, the modem's limit) or `endpoint_unverified` (the leaf does
    /// not validate under RFC 5280 at `now` against `roots` with the rest of the endpoint chain as intermediates).
    /// Server names are not checked, only the chain.
    public static func checkEndpoint(
        _ endpointPEM: String, roots: [Certificate], now: Date, limit: Int, what: String
    ) async throws(Refusal) {
        let chain: CertificateChain
        do {
            chain = try PEM.normalizeChain(endpointPEM)
        } catch {
            throw Refusal(
                "endpoint_unparsable", "\(what): the endpoint chain cannot be parsed: \(error.message)",
                details: ["what": .string(what), "error": .string(error.message)])
        }
        let size = chain.bytes.count
        if size > limit {
            let over = size - limit
            throw Refusal(
                "endpoint_too_large",
                "\(what): the endpoint chain is \(size) bytes in normal form; the modem takes at most \(limit) bytes "
                    + "(\(over) bytes over)",
                details: [
                    "what": .string(what), "size": .int(Int64(size)), "limit": .int(Int64(limit)),
                    "over": .int(Int64(over)),
                ])
        }

        let leaf = chain.certificates[0]
        var verifier = Verifier(rootCertificates: CertificateStore(roots)) {
            RFC5280Policy(fixedExpiryValidationTime: now)
        }
        let result = await verifier.validate(
            leaf: leaf, intermediates: CertificateStore(chain.certificates.dropFirst()))
        guard case .couldNotValidate(let failures) = result else { return }

        let rootNames = roots.isEmpty ? "none" : roots.map(subject).joined(separator: "; ")
        var reasons: [String] = []
        for failure in failures where !reasons.contains(failure.policyFailureReason.description) {
            reasons.append(failure.policyFailureReason.description)
        }
        let because =
            reasons.isEmpty
            ? "no chain from it to one of those roots could be built" : reasons.joined(separator: "; ")
        var info = details(what, 0, leaf)
        info["roots"] = .string(rootNames)
        info["error"] = .string(because)
        throw Refusal(
            "endpoint_unverified",
            "\(what): the endpoint certificate \(subject(leaf)) does not chain to any of the roots the device will "
                + "hold after the rotation (\(rootNames)): \(because)",
            details: info)
    }

    // MARK: - Helpers

    static func subject(_ certificate: Certificate) -> String { String(describing: certificate.subject) }

    private static func details(_ what: String, _ index: Int, _ certificate: Certificate) -> [String: RefusalValue] {
        ["what": .string(what), "certificate": .string(subject(certificate)), "index": .int(Int64(index))]
    }

    private static func unix(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970.rounded(.down)) }

    private static func timestamp(_ date: Date) -> String { Date.ISO8601FormatStyle().format(date) }

    /// "30 days", "1 day", "5 hours", "less than an hour".
    private static func span(_ seconds: Int64) -> String {
        if seconds >= 86400 {
            let days = seconds / 86400
            return days == 1 ? "1 day" : "\(days) days"
        }
        let hours = max(seconds, 0) / 3600
        switch hours {
        case 0: return "less than an hour"
        case 1: return "1 hour"
        default: return "\(hours) hours"
        }
    }

    private static func der(_ certificate: Certificate) -> [UInt8]? {
        var serializer = DER.Serializer()
        do {
            try serializer.serialize(certificate)
        } catch {
            return nil
        }
        return serializer.serializedBytes
    }
}
