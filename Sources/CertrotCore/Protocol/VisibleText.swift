/// Text from a peer as it may be shown to a person (a log line, a console page): as it is, unless it holds something
/// that could end a line or disguise the text around it.
public enum VisibleText {
    /// `text` as it is when it holds nothing that could end a log line or disguise one; otherwise quoted, with
    /// `"` and `\` escaped, newline, return and tab as `\n`, `\r`, `\t`, and every other control, format
    /// (bidirectional overrides such as U+202E) and line or paragraph separator character as `\u{XXXX}`.
    public static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return text }
        var out = "\""
        for scalar in text.unicodeScalars {
            if scalar == "\n" {
                out += "\\n"
            } else if scalar == "\r" {
                out += "\\r"
            } else if scalar == "\t" {
                out += "\\t"
            } else if needsEscape(scalar) {
                out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            } else if scalar == "\"" || scalar == "\\" {
                out += "\\" + String(scalar)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    public static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator: true
        default: false
        }
    }
}
