/// What goes into an export: one video channel and any number of audio
/// channels, each as its chunk files in seq order (self-contained MPEG-TS
/// segments on one session timeline, so their concatenation is one stream).
public struct ExportInput: Sendable {
    public struct Track: Sendable {
        public var name: String
        public var files: [String]
        public init(name: String, files: [String]) {
            self.name = name
            self.files = files
        }
    }

    public var video: Track
    public var audio: [Track]
    /// The mix is encoded in segments of about this length, in parallel.
    public var mixSegmentSeconds: Double
    /// Where the session's timeline ends, as its chunks declared it (with some tolerance):
    /// packets whose timestamps lie beyond it, or before 0 by more than the tolerance, are
    /// left out and counted. The chunks come from clients; their media timestamps are not
    /// trusted to size the work (nil: no limit, for trusted input only).
    public var timelineLimitSeconds: Double?

    public init(video: Track, audio: [Track], mixSegmentSeconds: Double = 30, timelineLimitSeconds: Double? = nil) {
        self.video = video
        self.audio = audio
        self.mixSegmentSeconds = mixSegmentSeconds
        self.timelineLimitSeconds = timelineLimitSeconds
    }

    /// How far before 0 a timestamp may lie (an AAC frame's priming, a rounding).
    public static let earlyToleranceSeconds = 1.0
}
