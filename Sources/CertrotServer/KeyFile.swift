import CertrotCore
import Foundation

/// Signing-key files: written 0600, refused when readable by group or others.
public enum KeyFile {
    public static func loadSigningKey(path: String) throws -> SigningKey {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw CertrotError(.invalidKey, "cannot read signing key \(path): \(String(cString: strerror(errno)))")
        }
        if info.st_mode & 0o077 != 0 {
            throw CertrotError(
                .invalidKey,
                "signing key \(path) is readable by group or others (mode \(String(info.st_mode & 0o777, radix: 8))); "
                    + "run: chmod 600 \(path)")
        }
        if info.st_uid != geteuid() {
            throw CertrotError(.invalidKey, "signing key \(path) is not owned by the user running certrot")
        }
        guard let pem = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw CertrotError(.invalidKey, "cannot read signing key \(path)")
        }
        return try SigningKey(pem: pem)
    }

    /// Writes a new key with mode 0600; refuses to overwrite an existing file.
    public static func write(_ key: SigningKey, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            throw CertrotError(.invalidKey, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let bytes = Array(key.pkcs8PEM.utf8)
        let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw CertrotError(.invalidKey, "short write to \(path)") }
        fchmod(fd, 0o600)
    }
}
