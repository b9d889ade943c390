import CertrotCore
import CertrotPKCS11
import Foundation

/// Signing-key files: written 0600, refused when readable by group or others.
public enum KeyFile {
    public static func loadSigningKey(path: String) throws -> SigningKey {
        try SigningKey(pem: readPrivate(path, what: "signing key"))
    }

    /// A key given as a file path or a PKCS#11 URI (`signingKey`, `keyRotation.nextKey`, `issuers[].key`).
    public static func load(_ spec: String, pkcs11: CertrotConfig.PKCS11? = nil) throws -> SigningKey {
        guard PKCS11URI.isURI(spec) else { return try loadSigningKey(path: spec) }
        return SigningKey(external: try openToken(spec, pkcs11: pkcs11, p256Only: true))
    }

    /// A key in a token, opened with `pkcs11`'s PIN and sessions.
    static func openToken(_ spec: String, pkcs11: CertrotConfig.PKCS11?, p256Only: Bool) throws -> TokenKey {
        let uri = try PKCS11URI(spec)
        let sessions = pkcs11?.sessions ?? 4
        guard (1...64).contains(sessions) else {
            throw CertrotError(.invalidConfig, "pkcs11.sessions must be 1…64")
        }
        return try TokenKey.open(
            uri: uri, pin: try pin(for: uri, pinFile: pkcs11?.pinFile), sessions: sessions, p256Only: p256Only)
    }

    /// An issuing CA's key (`issuers[].key`): a P-256, P-384 or RSA key, as a PEM file or in a token.
    public static func loadIssuerKey(_ spec: String, pkcs11: CertrotConfig.PKCS11? = nil) throws -> IssuerKey {
        guard PKCS11URI.isURI(spec) else { return try IssuerKey(pem: readPrivate(spec, what: "issuer key")) }
        let token = try openToken(spec, pkcs11: pkcs11, p256Only: false)
        return token.kind == .p256 ? IssuerKey(SigningKey(external: token)) : IssuerKey(external: token)
    }

    /// The token's user PIN: the URI's `pin-source` file, else `pkcs11.pinFile`, else `CERTROT_PKCS11_PIN`. Files
    /// must be mode 0600 and owned by the user running certrot; one trailing newline is dropped.
    public static func pin(
        for uri: PKCS11URI, pinFile: String?, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> [UInt8] {
        if let file = uri.pinSource ?? pinFile {
            var text = try readPrivate(file, what: "PIN file")
            if text.hasSuffix("\n") { text.removeLast() }
            if text.hasSuffix("\r") { text.removeLast() }
            return Array(text.utf8)
        }
        if let pin = environment["CERTROT_PKCS11_PIN"], !pin.isEmpty { return Array(pin.utf8) }
        throw CertrotError(
            .invalidConfig, "\(uri) needs the token's PIN: set pkcs11.pinFile (mode 0600) or CERTROT_PKCS11_PIN")
    }

    /// The text of a secret file: refused unless it is mode 0600 (or stricter) and owned by the user running certrot.
    static func readPrivate(_ path: String, what: String) throws -> String {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw CertrotError(.invalidKey, "cannot read \(what) \(path): \(String(cString: strerror(errno)))")
        }
        if info.st_mode & 0o077 != 0 {
            throw CertrotError(
                .invalidKey,
                "\(what) \(path) is readable by group or others (mode \(String(info.st_mode & 0o777, radix: 8))); "
                    + "run: chmod 600 \(path)")
        }
        if info.st_uid != geteuid() {
            throw CertrotError(.invalidKey, "\(what) \(path) is not owned by the user running certrot")
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw CertrotError(.invalidKey, "cannot read \(what) \(path)")
        }
        return text
    }

    /// Writes a new key with mode 0600; refuses to overwrite an existing file.
    public static func write(_ key: SigningKey, to path: String) throws {
        guard let pem = key.pkcs8PEM else {
            throw CertrotError(.invalidKey, "\(key.location ?? key.kid) is in a token; it cannot be written to a file")
        }
        try writePrivate(pem, to: path)
    }

    /// Writes a new issuing CA's key (PKCS#8 PEM) with mode 0600; refuses to overwrite an existing file.
    public static func write(_ key: IssuerKey, to path: String) throws {
        guard let pem = key.pkcs8PEM else {
            throw CertrotError(.invalidKey, "\(key) is in a token; it cannot be written to a file")
        }
        try writePrivate(pem, to: path)
    }

    static func writePrivate(_ pem: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            throw CertrotError(.invalidKey, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let bytes = Array(pem.utf8)
        let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw CertrotError(.invalidKey, "short write to \(path)") }
        fchmod(fd, 0o600)
    }
}
