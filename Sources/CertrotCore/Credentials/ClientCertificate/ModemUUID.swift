/// A modem's device UUID (16 bytes), as modems and Nordic's tools print it — `50363154-3931-44f0-8022-121b6401627d`
/// (8-4-4-4-12) — or as 32 hex digits. Either case; nothing else (no braces, no dashes elsewhere).
public enum ModemUUID {
    public static func parse(_ text: String) -> [UInt8]? {
        let groups = text.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.count == 1 || groups.map(\.count) == [8, 4, 4, 4, 12] else { return nil }
        guard let bytes = Hex.decode(groups.joined().lowercased()), bytes.count == 16 else { return nil }
        return bytes
    }

    /// The 8-4-4-4-12 lowercase form.
    public static func format(_ bytes: [UInt8]) -> String {
        let hex = Hex.encode(bytes)
        var out = ""
        for (index, character) in hex.enumerated() {
            if [8, 12, 16, 20].contains(index) { out.append("-") }
            out.append(character)
        }
        return out
    }
}
