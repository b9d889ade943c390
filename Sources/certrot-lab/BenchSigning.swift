import ArgumentParser
import CertrotConsole
import CertrotCore
import CertrotSimulator
import CertrotMQTT
import CertrotPKCS11
import CertrotServer
import CertrotStore
import CertrotTestSupport
import Foundation
import Logging
import Synchronization

/// The bench's signing figures: bundles, bytes on air, a PKCS#11 token, certificate issuance, raw ECDSA and openssl.
extension Bench {
    // MARK: 3. Signing

    /// Bundles/s signed on one core: JWS, or with `compact` COSE_Sign1 (docs/protocol.md §12), the same claims.
    func signingBenchmark(key: SigningKey, chain: CertificateChain, compact: Bool = false) -> Double {
        let ops = [BundleOp.write(tag: 42, type: 0, pem: chain.pem)]
        let jti = "9f2c4e61b0a84d7fa3c5e2d1b6f80a47"
        var count = 0
        let start = Date()
        while Date().timeIntervalSince(start) < signSeconds {
            for _ in 0..<100 {
                let claims = BundleClaims(sub: "dev-\(count)", jti: jti, iat: 1, exp: 2, seq: 1, ops: ops)
                _ = compact ? try? CompactBundle.sign(claims, with: key).count : try? JWS.sign(claims, with: key).count
                count += 1
            }
        }
        return Double(count) / Date().timeIntervalSince(start)
    }

    /// For each root in bench/roots (and Amazon Root CA 1 + ISRG Root X1): the bytes a device receives for a
    /// one-write bundle, all PUBLISH packets with their headers, as JWS parts and as compact parts.
    func bytesOnAir(key: SigningKey) -> [(json: [String: Any], line: String)] {
        let directory = FileManager.default.currentDirectoryPath + "/bench/roots"
        func chain(_ names: [String]) -> CertificateChain? {
            let texts = names.compactMap { try? String(contentsOfFile: "\(directory)/\($0).pem", encoding: .utf8) }
            guard texts.count == names.count else { return nil }
            return try? PEM.normalizeChain(texts.joined())
        }
        let device = "nrf-352656100123456"
        let topic = Topics.bundle(device)
        let jti = "9f2c4e61b0a84d7fa3c5e2d1b6f80a47"
        var rows: [(json: [String: Any], line: String)] = []
        for names in [
            ["Amazon_Root_CA_1"], ["Amazon_Root_CA_3"], ["DigiCert_Global_Root_G2"], ["ISRG_Root_X1"],
            ["Amazon_Root_CA_1", "ISRG_Root_X1"],
        ] {
            guard let chain = chain(names), let blocks = try? PEM.parseBlocks(chain.pem) else { continue }
            let der = blocks.reduce(0) { $0 + $1.der.count }
            let claims = BundleClaims(
                sub: device, jti: jti, iat: 1_764_547_200, exp: 1_765_152_000, seq: 3,
                ops: [.write(tag: 42, type: 0, pem: chain.pem)])
            guard let jws = try? JWS.sign(claims, with: key),
                let jwsParts = try? Parts.split(jws: jws, jti: jti, topic: topic, maxMessage: 2048),
                let cose = try? CompactBundle.sign(claims, with: key),
                let coseParts = try? CompactParts.split(
                    cose: cose, jti: Hex.decode(jti) ?? [], topic: topic, maxMessage: 2048)
            else { continue }
            let jwsBytes = CompactParts.bytesOnAir(jwsParts, topic: topic)
            let coseBytes = CompactParts.bytesOnAir(coseParts, topic: topic)
            let name = names.map { $0.replacingOccurrences(of: "_", with: " ") }.joined(separator: " + ")
            rows.append(
                (
                    [
                        "chain": name, "pem": chain.bytes.count, "der": der, "jwsOnAir": jwsBytes,
                        "coseOnAir": coseBytes, "coseParts": coseParts.count, "jwsParts": jwsParts.count,
                    ],
                    "            "
                        + name.padding(toLength: 32, withPad: " ", startingAt: 0)
                        + String(
                            format: "%6d %6d %6d %5d %+9d %9.2f %9.2f", chain.bytes.count, der, jwsBytes, coseBytes,
                            coseBytes - der, Double(coseBytes) / Double(chain.bytes.count),
                            Double(coseBytes) / Double(jwsBytes))
                ))
        }
        return rows
    }

    /// Bundles/s signed by a key in a fresh SoftHSM2 token, on `threads` threads each with its own session, against
    /// the file key's rate on one thread. Nil when SoftHSM2 is not installed.
    func tokenSigningBenchmark(chain: CertificateChain, fileRate: Double) -> (json: [String: Any], line: String)? {
        guard let token = try? SoftHSM.shared(), let uri = try? token.uri(object: "bench-signing"),
            let parsed = try? PKCS11URI(uri),
            let key = try? TokenKey.generate(uri: parsed, pin: Array(token.pin.utf8)),
            let pooled = try? TokenKey.open(uri: parsed, pin: Array(token.pin.utf8), sessions: 4)
        else { return nil }
        _ = key
        let signer = SigningKey(external: pooled)
        let ops = [BundleOp.write(tag: 42, type: 0, pem: chain.pem)]
        func rate(threads: Int) -> Double {
            let counts = Mutex([Int](repeating: 0, count: threads))
            let start = Date()
            DispatchQueue.concurrentPerform(iterations: threads) { thread in
                var count = 0
                while Date().timeIntervalSince(start) < signSeconds {
                    for _ in 0..<20 {
                        let claims = BundleClaims(
                            sub: "dev-\(thread)-\(count)", jti: "j\(count)", iat: 1, exp: 2, seq: 1, ops: ops)
                        if (try? JWS.sign(claims, with: signer)) != nil { count += 1 }
                    }
                }
                counts.withLock { $0[thread] = count }
            }
            return Double(counts.withLock { $0.reduce(0, +) }) / Date().timeIntervalSince(start)
        }
        let rates = [1, 2, 4].map { ($0, rate(threads: $0)) }
        let one = rates[0].1
        let json: [String: Any] = [
            "module": parsed.modulePath,
            "bundlesPerSecond": Dictionary(uniqueKeysWithValues: rates.map { ("\($0.0)", $0.1) }),
            "ratioToFileKey": fileRate > 0 ? one / fileRate : 0,
        ]
        let line =
            String(
                format: "token       %.0f bundles/s signed in SoftHSM2 on one thread (%.2f × the file key)", one,
                fileRate > 0 ? one / fileRate : 0)
            + rates.dropFirst().map {
                String(format: "; %d sessions: %.0f/s (%.2f ×)", $0.0, $0.1, one > 0 ? $0.1 / one : 0)
            }
            .joined()
        return (json, line)
    }

    /// What issuing a client certificate costs, on one core.
    struct Issuance {
        /// The daemon's whole path for a device's CSR: parse and proof of possession, the attestation under the
        /// modem's identity key, the certificate signed and encoded (certificates/s).
        var whole: Double
        /// The checks alone (parse + two ECDSA verifications).
        var checks: Double
        /// Issuing alone (checks excluded): the certificate written, signed, PEM; and the same through
        /// swift-certificates' builder, as every certificate was issued before #35 §2.
        var issuing: Double
        var issuingBefore: Double
        /// Issuing alone under a P-384 and an RSA-3072 CA (their signatures cost what they cost).
        var byKind: [(IssuerKey.Kind, Double)]
    }

    /// KEYGEN outputs from simulated modems, checked and issued as the daemon does for a device's CSR. On one core;
    /// the outputs are made beforehand (a modem's work, not the daemon's).
    func issuanceBenchmark() throws -> Issuance {
        let ca = try CertificateFactory.rootCA(commonName: "Bench device CA", days: 3650)
        let issuer = try ClientCertificateIssuer(certificate: ca.certificate, key: ca.key, validity: 365 * 86400)
        let tag: Int64 = 16_842_754
        var modems = (0..<64).map { _ in SimulatedModem() }
        let outputs = try modems.indices.map { index in try modems[index].keygen(tag: tag) }
        let keys = try outputs.map { try KeygenOutput.parse($0).publicKey }
        let now = Date()
        func rate(_ body: (Int) throws -> Void) rethrows -> Double {
            var count = 0
            let start = Date()
            while Date().timeIntervalSince(start) < signSeconds {
                for index in outputs.indices {
                    try body(index)
                    count += 1
                }
            }
            return Double(count) / Date().timeIntervalSince(start)
        }
        func check(_ index: Int) throws -> KeygenOutput {
            let output = try KeygenOutput.parse(outputs[index])
            try output.verify(identityKey: modems[index].identityKey.publicKey, secTag: tag, uuid: modems[index].uuid)
            return output
        }
        let serial = [UInt8](repeating: 0x41, count: 16)
        var byKind: [(IssuerKey.Kind, Double)] = []
        for kind in [IssuerKey.Kind.p384, .rsa3072] {
            let key = IssuerKey.generate(kind)
            let other = try ClientCertificateIssuer(
                certificate: try ClientCertificateIssuer.selfSignedCA(key: key, commonName: "CA", days: 3650, now: now),
                key: key, validity: 365 * 86400)
            byKind.append((kind, try rate { _ = try other.issue(for: keys[$0], commonName: "dev-\($0)", now: now) }))
        }
        return Issuance(
            whole: try rate { index in
                let output = try check(index)
                _ = try issuer.issue(for: output.publicKey, commonName: "dev-\(index)", now: now)
            },
            checks: try rate { _ = try check($0) },
            issuing: try rate { _ = try issuer.issue(for: keys[$0], commonName: "dev-\($0)", now: now) },
            issuingBefore: try rate {
                _ = try issuer.issueThroughSwiftCertificates(
                    for: keys[$0], commonName: "dev-\($0)", now: now, serial: serial)
            },
            byKind: byKind)
    }

    /// swift-crypto's P-256 signature alone, over a 32-byte message: what the bundle's JSON and base64 add is the
    /// difference from ``signingBenchmark(key:chain:)``.
    func ecdsaBenchmark(key: SigningKey) -> Double {
        let message = [UInt8](repeating: 7, count: 32)
        var count = 0
        let start = Date()
        while Date().timeIntervalSince(start) < signSeconds {
            for _ in 0..<100 {
                _ = try? key.signature(for: message)
                count += 1
            }
        }
        return Double(count) / Date().timeIntervalSince(start)
    }

    /// `openssl speed -seconds N ecdsap256`: the sign/s and verify/s columns.
    func opensslRates() -> (sign: Double, verify: Double)? {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent(
            "openssl-speed-\(UUID().uuidString.prefix(6))"
        ).path
        defer { try? FileManager.default.removeItem(atPath: output) }
        guard
            let process = try? ChildProcess(
                executable: "/usr/bin/openssl", arguments: ["speed", "-seconds", "\(Int(signSeconds))", "ecdsap256"],
                outputPath: output)
        else { return nil }
        while process.isRunning { usleep(100_000) }
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").last(where: { $0.contains("ecdsa") && $0.contains("nistp256") })
        else { return nil }
        let numbers = line.split(separator: " ").compactMap { Double($0) }
        return numbers.count >= 2 ? (numbers[numbers.count - 2], numbers[numbers.count - 1]) : nil
    }
}
