/// What the export wrote.
public struct ExportSummary: Sendable, Equatable {
    public var durationSeconds: Double
    public var videoPackets: Int
    public var mixFrames: Int
    public var audioPackets: [Int]
    public var bytes: Int
    /// Packets left out because their timestamps lay outside the declared timeline.
    public var packetsOutsideTimeline: Int
}
