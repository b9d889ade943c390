/// The ranges docs/protocol.md allows for the numbers a peer sends (§2, §6, §8). Every integer that arrives from a
/// device or a requester is checked against these at the parse boundary, so that nothing beyond them is ever added,
/// subtracted or stored: a Swift overflow traps, and one retained message would kill the daemon on every restart.
public enum Bounds {
    /// Largest `seq` (2^53 − 1): the largest integer a JSON number holds exactly as a double, which is what the
    /// device library's cJSON gives it. The daemon never issues a bundle with a higher `seq`.
    public static let maxSeq: Int64 = 9_007_199_254_740_991
    /// Times (Unix seconds) a peer may send: 0 … 9999-12-31T23:59:59Z, the end of X.509's GeneralizedTime.
    public static let times: ClosedRange<Int64> = 0...253_402_300_799
    /// An ack's `code` (a modem or errno code): a 32-bit signed integer.
    public static let ackCodes: ClosedRange<Int> = Int(Int32.min)...Int(Int32.max)
}

extension Int64 {
    /// `self + other`, clamped to the range of Int64 instead of trapping: for a stored value that meets the clock.
    public func saturatingAdd(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }

    /// `self - other`, clamped to the range of Int64 instead of trapping.
    public func saturatingSubtract(_ other: Int64) -> Int64 {
        let (difference, overflow) = subtractingReportingOverflow(other)
        return overflow ? (other < 0 ? .max : .min) : difference
    }
}
