/// Reconnect delays: exponential from `initial` to `maximum`, each with up to
/// `jitter` of itself added at random, so that many agents cut off by the same
/// outage do not come back in step. A value type with its own generator
/// (SplitMix64), so tests can replay a sequence from a seed.
public struct UplinkBackoff: Sendable {
    public struct Policy: Sendable {
        public var initialNs: Int64 = 250_000_000
        public var maximumNs: Int64 = 10_000_000_000
        /// Fraction of the delay added at random, 0...1.
        public var jitter = 0.3
        public init() {}
    }

    public let policy: Policy
    private var attempt = 0
    private var state: UInt64

    public init(policy: Policy, seed: UInt64) {
        self.policy = policy
        self.state = seed
    }

    /// The delay before the next attempt, then doubles it (up to the maximum).
    public mutating func next() -> Int64 {
        let shift = min(attempt, 40)
        attempt += 1
        let base = min(policy.maximumNs, policy.initialNs.multipliedReportingOverflow(by: 1 << shift).overflow
            ? policy.maximumNs : policy.initialNs << shift)
        let extra = Double(base) * policy.jitter * unitRandom()
        return base + Int64(extra)
    }

    /// After progress (an acknowledged chunk): the next drop retries at `initial` again.
    public mutating func reset() { attempt = 0 }

    private mutating func unitRandom() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(1 << 53)
    }
}
