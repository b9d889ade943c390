import ArgumentParser
import CertrotCore
import Foundation

struct BundleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bundle", abstract: "Make and inspect rotation bundles.", subcommands: [Make.self, Inspect.self])

    struct Make: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign a bundle that writes a chain into a sec tag, as the daemon would (for firmware tests).",
            discussion: """
                Prints the JWS, or with --parts the part messages for {device}/certs, one JSON object per line, each \
                PUBLISH packet within --max-message bytes. With --format cose, the compact bundle (COSE_Sign1, \
                docs/protocol.md §12) in hex, or with --parts each compact part in hex, one a line. The chain is \
                normalised and checked against the nrf91 credential limit first.
                """)

        enum Format: String, ExpressibleByArgument, CaseIterable { case jws, cose }

        @Option(help: "The signing key (PKCS#8 PEM).")
        var key: String
        @Option(help: "Device ID (the bundle's sub).")
        var device: String
        @Option(help: "Sec tag to write (with --chain).")
        var tag: Int64 = 42
        @Option(help: "PEM chain to write.")
        var chain: String?
        @Option(help: "Public (or signing) key PEM to install with a trust_key op.")
        var trustKey: String?
        @Option(help: "AT%CMNG credential type.")
        var type: Int = 0
        @Option(help: "Bundle seq.")
        var seq: Int64 = 1
        @Option(help: "Bundle id; random when omitted.")
        var jti: String?
        @Option(help: "iat in Unix seconds; now when omitted.")
        var iat: Int64?
        @Option(help: "Lifetime in seconds (exp - iat).")
        var lifetime: Int64 = BundleClaims.defaultLifetime
        @Option(help: "Largest MQTT PUBLISH packet the device takes (with --parts).")
        var maxMessage: Int = DeviceProfile.nrf91.maxMessage
        @Flag(help: "Print part messages instead of the JWS.")
        var parts = false
        @Option(help: "jws (JSON and base64url) or cose (compact: CBOR, certificates as DER).")
        var format: Format = .jws
        @Flag(help: "Skip chain normalisation and size checks (to make invalid test vectors).")
        var raw = false

        func run() throws {
            do {
                try DeviceID.validate(device)
                let signer = try SigningKey(pem: try String(contentsOfFile: key, encoding: .utf8))
                guard chain != nil || trustKey != nil else {
                    throw ValidationError("give --chain, --trust-key, or both")
                }
                var ops: [BundleOp] = []
                if let chain {
                    let text = try String(contentsOfFile: chain, encoding: .utf8)
                    let pem: String
                    if raw {
                        pem = text
                    } else {
                        pem = try PEM.normalizeChain(text).pem
                        try DeviceProfile.nrf91.checkCredentialSize(Array(pem.utf8), what: "chain \(chain)")
                    }
                    ops.append(.write(tag: tag, type: type, pem: pem))
                }
                if let trustKey {
                    let text = try String(contentsOfFile: trustKey, encoding: .utf8)
                    let next = try VerificationKey(anyPEM: text)
                    ops.append(.trustKey(next))
                }
                let id = jti ?? Hex.encode((0..<16).map { _ in UInt8.random(in: 0...255) })
                let issued = iat ?? Int64(Date().timeIntervalSince1970)
                let claims = BundleClaims(
                    sub: device, jti: id, iat: issued, exp: issued + lifetime, seq: seq, ops: ops)
                if format == .cose {
                    let cose = try CompactBundle.sign(claims, with: signer)
                    guard parts else {
                        print(Hex.encode(cose))
                        return
                    }
                    for payload in try CompactParts.split(
                        cose: cose, jti: Hex.decode(id) ?? [], topic: Topics.bundle(device), maxMessage: maxMessage)
                    {
                        print(Hex.encode(payload))
                    }
                    return
                }
                let jws = try JWS.sign(claims, with: signer)
                guard parts else {
                    print(jws)
                    return
                }
                for payload in try Parts.split(jws: jws, jti: id, topic: Topics.bundle(device), maxMessage: maxMessage)
                {
                    print(String(decoding: payload, as: UTF8.self))
                }
            } catch let error as CertrotError {
                throw DataCheckFailed(error.message)
            }
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decode a bundle (a JWS, or its part messages one JSON per line; or a compact bundle, binary or "
                + "hex, or its parts in hex one a line), print header and claims, and check the signature and the PEM "
                + "rules.")

        @Option(help: "Public key (PEM) or signing key to verify the signature with.")
        var pubkey: String?

        @Argument(help: "File with the JWS or the part messages; - or nothing for standard input.")
        var file: String?

        func run() throws {
            let bytes = try readInputBytes(file)
            let header: String
            let c: BundleClaims
            let verify: ([VerificationKey]) throws(CertrotError) -> Void
            if let cose = try Self.compact(bytes) {
                let decoded: CompactBundle.Decoded
                do {
                    decoded = try CompactBundle.decode(cose)
                } catch {
                    throw DataCheckFailed(error.message)
                }
                header = "header: compact (COSE_Sign1, \(cose.count) bytes) alg=ES256 kid=\(decoded.kid)"
                c = decoded.claims
                verify = { keys throws(CertrotError) in _ = try CompactBundle.verify(cose, keys: keys) }
            } else {
                let jws = try Self.assemble(
                    String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
                let decoded: JWS.Decoded
                do {
                    decoded = try JWS.decode(jws)
                } catch {
                    throw DataCheckFailed(error.message)
                }
                header = "header: alg=\(decoded.header.alg) kid=\(decoded.header.kid) typ=\(decoded.header.typ)"
                c = decoded.claims
                verify = { keys throws(CertrotError) in _ = try JWS.verify(jws, keys: keys) }
            }
            var failures = 0
            print(header)
            print("claims: iss=\(c.iss) sub=\(c.sub) jti=\(c.jti) seq=\(c.seq)")
            print(
                "        iat=\(c.iat) (\(Date(timeIntervalSince1970: Double(c.iat)))) exp=\(c.exp) (\(Date(timeIntervalSince1970: Double(c.exp))))"
            )
            if let pubkey {
                let text = try String(contentsOfFile: pubkey, encoding: .utf8)
                guard let key = try? VerificationKey(anyPEM: text) else {
                    throw ValidationError("\(pubkey) is not a P-256 key in PEM form")
                }
                do {
                    try verify([key])
                    print("signature: valid (kid \(key.kid))")
                } catch {
                    failures += 1
                    print("signature: INVALID — \(error.message)")
                }
            } else {
                print("signature: not checked (pass --pubkey)")
            }
            for (index, op) in c.ops.enumerated() {
                if op.op == .trustKey {
                    print("op \(index + 1): trust_key kid=\(op.kid ?? "-")")
                    do {
                        try BundleCheck.checkOp(op, profile: .nrf91)
                        print("      key: ok")
                    } catch {
                        failures += 1
                        print("      key: FAILED — \(error.message)")
                    }
                    continue
                }
                print(
                    "op \(index + 1): \(op.op.rawValue) tag=\(op.tag.map(String.init) ?? "-") type=\(op.type.map(String.init) ?? "-")"
                        + (op.type.flatMap(CredentialType.init(rawValue:)).map { " (\($0.label))" } ?? ""))
                guard op.op == .write else { continue }
                let bytes = Array((op.pem ?? "").utf8)
                print("      \(bytes.count) bytes, sha256=\(op.sha256 ?? "-")")
                do {
                    try BundleCheck.checkOp(op, profile: .nrf91)
                    let chain = try PEM.normalizeChain(op.pem ?? "")
                    for certificate in chain.certificates {
                        print("      - \(certificate.subject) (until \(certificate.notValidAfter))")
                    }
                    print("      PEM rules: ok (nrf91 limits)")
                } catch {
                    failures += 1
                    print("      PEM rules: FAILED — \(error.message)")
                }
            }
            if failures > 0 { throw ExitCode(1) }
        }

        /// The COSE_Sign1 of a compact bundle given as binary, as hex, or as compact parts in hex one a line; nil
        /// when the input is text of a JWS bundle.
        static func compact(_ bytes: [UInt8]) throws -> [UInt8]? {
            if bytes.first == 0xD2 { return bytes }  // CBOR tag 18, binary
            let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            guard let first = lines.first, first.hasPrefix("d2") || first.hasPrefix("84"),
                let decoded = lines.map({ Hex.decode($0) }) as [[UInt8]?]?, decoded.allSatisfy({ $0 != nil })
            else { return nil }
            let items = decoded.map { $0! }
            if first.hasPrefix("d2"), items.count == 1 { return items[0] }
            var assembled: [Int: [UInt8]] = [:]
            var total = 0
            for item in items {
                let part: (jti: [UInt8], part: Int, parts: Int, data: [UInt8])
                do {
                    part = try CompactParts.parse(item)
                } catch {
                    throw DataCheckFailed(error.message)
                }
                assembled[part.part] = part.data
                total = part.parts
            }
            let missing = (1...max(total, 1)).filter { assembled[$0] == nil }
            guard missing.isEmpty else { throw ValidationError("parts missing: \(missing)") }
            return (1...total).flatMap { assembled[$0]! }
        }

        /// A JWS as is, or part messages (one JSON object per line, or a JSON array) reassembled.
        static func assemble(_ input: String) throws -> String {
            guard input.hasPrefix("{") || input.hasPrefix("[") else { return input }
            var lines: [String] = []
            if input.hasPrefix("["),
                let array = try? JSONSerialization.jsonObject(with: Data(input.utf8)) as? [[String: Any]]
            {
                lines = try array.map {
                    String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self)
                }
            } else {
                lines = input.split(separator: "\n").map(String.init)
            }
            var assembler = PartAssembler(capacity: 1 << 20)
            for line in lines where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                let part: BundlePart
                do {
                    part = try BundlePart.parse(Array(line.utf8))
                } catch {
                    throw DataCheckFailed(error.message)
                }
                if case .complete(let jws) = assembler.add(part) { return jws }
            }
            throw ValidationError("parts missing: \(assembler.missing)")
        }
    }
}
