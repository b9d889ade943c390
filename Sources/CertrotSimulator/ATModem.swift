import CertrotCore
import Crypto
import Foundation

/// A simulated nRF91 as a host sees it on the modem's AT interface (a serial port): one command line in, its answer
/// out, in the form real modems print (Tests/CertrotCoreTests/Vectors/real-modem/transcripts.md). Behind it, the
/// credential store (the text written per sec tag and type) and a ``SimulatedModem`` that holds the identity key
/// and generates keys. What it answers:
/// - `AT`, `AT+CMEE=0|1` (errors as `+CME ERROR: <n>` or a bare `ERROR`), `AT+CFUN=<n>`, `AT+CFUN?`, `AT+CGSN`,
///   `AT+CGSN=1`, `AT+CGMR`, `AT+CGMM`, `AT%XMODEMUUID`;
/// - `AT%CMNG=0,<tag>,<type>,"<content>"`: the text stored as sent (its SHA-256 is what the list shows); refused
///   with 518 while online (CFUN 1, 2 or 21), 527 for certificate text that is not exact PEM (a leading space, text
///   around or a wrong BEGIN or END line, a block cut short), 515 over 4,096 bytes;
/// - `AT%CMNG=1[,<tag>[,<type>]]`: `%CMNG: <tag>,<type>,"<SHA-256, uppercase>"` a credential (the three
///   modem-reserved entries too, as real modems list them), then `OK`;
/// - `AT%CMNG=2,<tag>,<type>` (certificates only), `AT%CMNG=3,<tag>,<type>` (513 when absent, 518 online);
/// - `AT%KEYGEN=<tag>,2,<attest>[,"<subject>"[,<usage>]]`: `%KEYGEN: "<csr>.<cose>"` in the real format; 518
///   online, 519 into a tag that holds a key.
/// Anything else: `ERROR`.
public struct ATModem: Sendable {
    public struct Slot: Hashable, Sendable, Comparable {
        public var tag: UInt32
        public var type: Int
        public static func < (a: Slot, b: Slot) -> Bool { (a.tag, a.type) < (b.tag, b.type) }
    }

    public var modem: SimulatedModem
    public var imei: String
    public var firmware: String
    public var model = "nRF9151-LACA"
    /// `+CFUN` mode; credentials are written only in 0 or 4.
    public var cfun = 1
    /// `AT+CMEE=1`: errors carry their code.
    public var cmee = false
    /// The text written per slot (a key made by KEYGEN is in ``modem``, listed with the digest of its public key).
    public private(set) var credentials: [Slot: [UInt8]] = [:]
    /// Every command line received, in order (tests read what a tool sent).
    public private(set) var received: [String] = []

    /// Modem-reserved entries a real nRF91 lists (Nordic's unit-test data for `modem_key_mgmt`).
    static let reserved: [(Slot, String)] = [
        (Slot(tag: 4_294_967_293, type: 10), "2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1"),
        (Slot(tag: 4_294_967_294, type: 6), "A3CC4121A62D4BB103AE92F70A77A456886AE3CD5B2D156A200A1B90D9E92E05"),
        (Slot(tag: 4_294_967_292, type: 11), "2027C4699EAA90A414D33FA81B975C0FDEDEFB04A19CEA1ED43A8876CAD31E89"),
    ]
    public static let maxCredential = 4096

    public init(
        modem: SimulatedModem = SimulatedModem(), imei: String = "352656100000001",
        firmware: String = "mfw_nrf91x1_2.0.2"
    ) {
        self.modem = modem
        self.imei = imei
        self.firmware = firmware
        self.modem.online = true
    }

    /// What the store holds in a slot (certificate text), nil when empty.
    public func credential(tag: Int64, type: Int) -> [UInt8]? {
        credentials[Slot(tag: UInt32(truncatingIfNeeded: tag), type: type)]
    }

    /// Whether the modem holds a key in `tag`.
    public func hasKey(tag: Int64) -> Bool { modem.keys[tag] != nil }

    var online: Bool { [1, 2, 21].contains(cfun) }

    /// Records a command line that gets no answer (a test's silent modem).
    public mutating func record(_ line: String) { received.append(line) }

    /// The answer to one command line (without its terminator), every line ending in CR LF.
    public mutating func handle(_ line: String) -> String {
        received.append(line)
        let command = line.trimmingCharacters(in: CharacterSet(charactersIn: " "))
        let upper = command.uppercased()
        func ok(_ lines: [String] = []) -> String { (lines + ["OK"]).map { $0 + "\r\n" }.joined() }
        switch upper {
        case "AT", "ATE0", "ATE1": return ok()
        case "AT+CMEE=1":
            cmee = true
            return ok()
        case "AT+CMEE=0":
            cmee = false
            return ok()
        case "AT+CMEE?": return ok(["+CMEE: \(cmee ? 1 : 0)"])
        case "AT+CFUN?": return ok(["+CFUN: \(cfun)"])
        case "AT+CGSN": return ok([imei])
        case "AT+CGSN=1": return ok(["+CGSN: \"\(imei)\""])
        case "AT+CGMR": return ok([firmware])
        case "AT+CGMM": return ok([model])
        case "AT%XMODEMUUID": return ok(["%XMODEMUUID: \(modem.uuidString)"])
        default: break
        }
        if upper.hasPrefix("AT+CFUN=") {
            guard let mode = Int(command.dropFirst(8)), [0, 1, 2, 4, 21, 44].contains(mode) else { return error() }
            cfun = mode
            modem.online = online
            return ok()
        }
        if upper.hasPrefix("AT%CMNG=") { return cmng(String(command.dropFirst(8))) }
        if upper.hasPrefix("AT%KEYGEN=") { return keygen(String(command.dropFirst(10))) }
        return error()
    }

    func error(_ code: Int? = nil) -> String {
        guard let code, cmee else { return "ERROR\r\n" }
        return "+CME ERROR: \(code)\r\n"
    }

    /// Splits AT parameters at commas outside double quotes; quoted parameters lose their quotes.
    static func parameters(_ text: String) -> [String]? {
        var result: [String] = []
        var current = ""
        var quoted = false
        var wasQuoted = false
        for character in text {
            if character == "\"" {
                quoted.toggle()
                wasQuoted = true
            } else if character == ",", !quoted {
                result.append(wasQuoted ? current : current.trimmingCharacters(in: .whitespaces))
                current = ""
                wasQuoted = false
            } else {
                current.append(character)
            }
        }
        guard !quoted else { return nil }
        result.append(wasQuoted ? current : current.trimmingCharacters(in: .whitespaces))
        return result
    }

    mutating func cmng(_ arguments: String) -> String {
        guard let p = Self.parameters(arguments), let op = Int(p[0]) else { return error() }
        func slot() -> Slot? {
            guard p.count >= 3, let tag = UInt32(p[1]), let type = Int(p[2]), (0...11).contains(type) else {
                return nil
            }
            return Slot(tag: tag, type: type)
        }
        switch op {
        case 0:
            guard p.count >= 4, let slot = slot(), slot.tag <= 2_147_483_647 else { return error() }
            guard !online else { return error(518) }
            let content = Array(p[3].utf8)
            guard content.count <= Self.maxCredential else { return error(515) }
            if [0, 1].contains(slot.type), !Self.isExactPEM(content) { return error(527) }
            if slot.type == 2 { modem.install(key: P256.Signing.PrivateKey(), tag: Int64(slot.tag)) }
            credentials[slot] = content
            return "OK\r\n"
        case 1:
            var entries: [(Slot, String)] = credentials.map { ($0.key, Hex.sha256($0.value).uppercased()) }
            for (tag, key) in modem.keys {
                let slot = Slot(tag: UInt32(truncatingIfNeeded: tag), type: 2)
                if credentials[slot] == nil {
                    entries.append((slot, Hex.sha256(key.publicKey.derRepresentation).uppercased()))
                }
            }
            entries += Self.reserved
            if p.count >= 2, let tag = UInt32(p[1]) { entries = entries.filter { $0.0.tag == tag } }
            if p.count >= 3, let type = Int(p[2]) { entries = entries.filter { $0.0.type == type } }
            let lines = entries.sorted { $0.0 < $1.0 }.map { "%CMNG: \($0.0.tag),\($0.0.type),\"\($0.1)\"" }
            return (lines + ["OK"]).map { $0 + "\r\n" }.joined()
        case 2:
            guard let slot = slot() else { return error() }
            guard [0, 1].contains(slot.type) else { return error(514) }
            guard let content = credentials[slot] else { return error(513) }
            let text = String(decoding: content, as: UTF8.self)
            return "%CMNG: \(slot.tag),\(slot.type),\"\(Hex.sha256(content).uppercased())\",\"\(text)\"\r\nOK\r\n"
        case 3:
            guard let slot = slot() else { return error() }
            guard !online else { return error(518) }
            let key = slot.type == 2 && modem.keys[Int64(slot.tag)] != nil
            guard credentials[slot] != nil || key else { return error(513) }
            credentials[slot] = nil
            if slot.type == 2 { try? modem.deleteKey(tag: Int64(slot.tag)) }
            return "OK\r\n"
        default:
            return error()
        }
    }

    mutating func keygen(_ arguments: String) -> String {
        guard let p = Self.parameters(arguments), p.count >= 3, let tag = UInt32(p[0]), tag <= 2_147_483_647,
            p[1] == "2"
        else { return error() }
        guard !online else { return error(518) }
        guard modem.keys[Int64(tag)] == nil, credentials[Slot(tag: tag, type: 2)] == nil else { return error(519) }
        do {
            // The subject's common name (`CN=…` among the attributes), as the modem puts it in the CSR.
            let commonName = p.count >= 4 ? p[3].split(separator: ",").first { $0.hasPrefix("CN=") } : nil
            let answer = try modem.keygen(tag: Int64(tag), subject: commonName.map(String.init))
            return "%KEYGEN: \"\(answer)\"\r\nOK\r\n"
        } catch {
            return self.error(523)  // key generation failed
        }
    }

    /// The content rules of AT%CMNG for certificate text: PEM blocks with exact `-----BEGIN …-----` and
    /// `-----END …-----` lines, nothing else but empty lines outside them, no line starting with a space or a tab,
    /// and no block left open (cut short). LF or CR LF line ends: Nordic's device_credentials_installer writes CR LF
    /// and its `--verify` expects the digest of exactly that text, so a real modem stores it as sent.
    static func isExactPEM(_ content: [UInt8]) -> Bool {
        guard String(bytes: content, encoding: .utf8) != nil else { return false }
        var inside = false
        var blocks = 0
        // By bytes: in a Swift String, CR LF is one character, which a split at "\n" would not cut.
        for raw in content.split(separator: 0x0A, omittingEmptySubsequences: false) {
            let bytes = raw.last == 0x0D ? raw.dropLast() : raw[...]
            if bytes.contains(0x0D) { return false }
            let line = String(decoding: bytes, as: UTF8.self)
            if line.hasPrefix(" ") || line.hasPrefix("\t") { return false }
            if line.hasPrefix("-----BEGIN ") {
                guard !inside, line.hasSuffix("-----"), line.count > 16 else { return false }
                inside = true
            } else if line.hasPrefix("-----END ") {
                guard inside, line.hasSuffix("-----"), line.count > 14 else { return false }
                inside = false
                blocks += 1
            } else if line.contains("-----") || (!inside && !line.isEmpty) {
                return false
            }
        }
        return !inside && blocks > 0
    }
}
