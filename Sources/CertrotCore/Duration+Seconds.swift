extension Duration {
    /// The duration in seconds, as a Double (for logs and metrics: a figure a person reads, or a histogram's value).
    public var inSeconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}
