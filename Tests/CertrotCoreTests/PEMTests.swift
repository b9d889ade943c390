import CertrotCore
import CertrotTestSupport
import Testing

@Suite struct PEMTests {
    static let ca = try! CertificateFactory.rootCA(commonName: "PEM Test CA")
    static let other = try! CertificateFactory.rootCA(commonName: "PEM Test CA 2")

    @Test func normalForm_isUnchangedByNormalisation() throws {
        let chain = try PEM.normalizeChain(Self.ca.pem)
        #expect(chain.pem == Self.ca.pem)
        #expect(PEM.isNormalized(chain.bytes))
        #expect(chain.certificates.count == 1)
    }

    @Test func crlfLineEndings_becomeLF() throws {
        let crlf = Self.ca.pem.replacingOccurrences(of: "\n", with: "\r\n")
        let chain = try PEM.normalizeChain(crlf)
        #expect(!chain.pem.contains("\r"))
        #expect(chain.pem == Self.ca.pem)
        #expect(!PEM.isNormalized(Array(crlf.utf8)))
    }

    @Test func leadingAndTrailingSpaces_areRemoved() throws {
        let indented = Self.ca.pem.split(separator: "\n").map { "   \($0)  " }.joined(separator: "\n")
        let chain = try PEM.normalizeChain(indented)
        #expect(chain.pem == Self.ca.pem)
        #expect(!PEM.isNormalized(Array(indented.utf8)))
    }

    @Test func missingFinalNewline_isAdded() throws {
        let trimmed = String(Self.ca.pem.dropLast())
        #expect(!PEM.isNormalized(Array(trimmed.utf8)))
        #expect(try PEM.normalizeChain(trimmed).pem.hasSuffix("-----END CERTIFICATE-----\n"))
    }

    @Test func longBase64Lines_areRewrappedAt64() throws {
        let blocks = try PEM.parseBlocks(Self.ca.pem)
        let oneLine = "-----BEGIN CERTIFICATE-----\n" + blocks[0].der.base64() + "\n-----END CERTIFICATE-----\n"
        let chain = try PEM.normalizeChain(oneLine)
        #expect(chain.pem == Self.ca.pem)
        #expect(chain.pem.split(separator: "\n").allSatisfy { $0.count <= 64 || $0.hasPrefix("-----") })
    }

    @Test func severalCertificates_keepTheirOrder() throws {
        let text = Self.ca.pem + Self.other.pem
        let chain = try PEM.normalizeChain(text)
        #expect(chain.certificates.count == 2)
        #expect(chain.certificates[0] == Self.ca.certificate)
        #expect(chain.certificates[1] == Self.other.certificate)
        #expect(chain.pem == text)
    }

    @Test func garbageBetweenBlocks_isDropped() throws {
        let text =
            "subject=CN = PEM Test CA\nissuer=whatever\n" + Self.ca.pem + "\nsome comment\n\n" + Self.other.pem
            + "trailer"
        let chain = try PEM.normalizeChain(text)
        #expect(chain.pem == Self.ca.pem + Self.other.pem)
    }

    @Test func nonCertificateBlock_isRefused() throws {
        let key =
            "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
        #expect(throws: CertrotError.self) { try PEM.normalizeChain(Self.ca.pem + key) }
        do {
            _ = try PEM.normalizeChain(Self.ca.pem + key)
        } catch {
            #expect(error.code == .invalidPEM)
            #expect(error.message.contains("PRIVATE KEY"))
        }
    }

    @Test func brokenBase64_orUnterminatedBlock_isRefused() {
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!notbase64\n-----END CERTIFICATE-----\n"
        #expect(throws: CertrotError.self) { try PEM.normalizeChain(broken) }
        let unterminated = String(Self.ca.pem.prefix(200))
        #expect(throws: CertrotError.self) { try PEM.normalizeChain(unterminated) }
        #expect(throws: CertrotError.self) { try PEM.normalizeChain("no pem here") }
        let mismatched = Self.ca.pem.replacingOccurrences(of: "END CERTIFICATE", with: "END X509 CRL")
        #expect(throws: CertrotError.self) { try PEM.normalizeChain(mismatched) }
    }

    @Test func validBase64ThatIsNotACertificate_isRefused() {
        let text = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n"
        #expect(throws: CertrotError.self) { try PEM.normalizeChain(text) }
    }

    @Test func credentialOverTheProfileLimit_isRefusedWithSizes() throws {
        var issued: [CertificateFactory.Issued] = []
        var text = ""
        while text.utf8.count <= 4096 {
            issued.append(try CertificateFactory.rootCA(commonName: "Big chain \(issued.count)"))
            text = CertificateFactory.chain(issued)
        }
        let chain = try PEM.normalizeChain(text)
        do {
            try DeviceProfile.nrf91.checkCredentialSize(chain.bytes, what: "chain")
            Issue.record("a \(chain.bytes.count)-byte chain passed the 4096-byte limit")
        } catch {
            #expect(error.code == .credentialTooLarge)
            #expect(error.message.contains("\(chain.bytes.count) bytes"))
            #expect(error.message.contains("4096"))
        }
        try DeviceProfile.nrf91.checkCredentialSize(Array(repeating: 0, count: 4096), what: "exactly 4 KB")
    }

    @Test func sha256_isOverTheExactNormalisedBytes() throws {
        let chain = try PEM.normalizeChain(Self.ca.pem.replacingOccurrences(of: "\n", with: "\r\n"))
        #expect(chain.sha256 == Hex.sha256(Array(Self.ca.pem.utf8)))
        #expect(Hex.isSHA256(chain.sha256))
    }
}

extension Array where Element == UInt8 {
    func base64() -> String {
        // Foundation-free helper for tests: encode via the PEM encoder and strip the armour.
        PEM.encode([PEMBlock(label: "X", der: self)]).split(separator: "\n").dropFirst().dropLast().joined()
    }
}
