/// What a recording did, per channel: the `summary` of stopRecording, recording-stopped
/// and recording-failed (docs/control-protocol.md, "Summary object"), and what
/// `capture-agent record --json` prints. Shared by the pipeline that fills it and the
/// clients that read it.
/// The result of a recording, per channel.
public struct RecordingSummary: Sendable, Codable, Equatable {
    public var sessionId: String
    public var outputDirectory: String
    public var durationNs: Int64
    public var channels: [ChannelStatsSnapshot]
    public var error: String?
    public var errorCode: String?

    public init(sessionId: String, outputDirectory: String, durationNs: Int64, channels: [ChannelStatsSnapshot],
                error: String?, errorCode: String?) {
        self.sessionId = sessionId
        self.outputDirectory = outputDirectory
        self.durationNs = durationNs
        self.channels = channels
        self.error = error
        self.errorCode = errorCode
    }
}

/// One channel's counters at one moment (live in getStatus, final in the summary).
public struct ChannelStatsSnapshot: Sendable, Codable, Equatable {
    public var channel: String
    public var type: MediaType
    public var captured: Int
    public var repeated: Int
    public var leftOut: Int
    public var dropped: Int
    public var encoded: Int
    public var silenceFilledMs: Int
    public var overlapDroppedMs: Int
    public var discontinuities: Int
    public var chunks: Int
    public var bytes: Int
    /// The largest chunk spooled so far (what the next one may need).
    public var largestChunkBytes: Int
    /// Whether the channel's track is paused now (live status only).
    public var paused: Bool?
    /// Video: frame slots recorded black while the monitor was off, and how often its size or
    /// place changed (nil for audio).
    public var offlineFrames: Int?
    public var layoutChanges: Int?
    /// Audio: samples of the source on the timeline, and of silence filled in; their sum is the
    /// stream's length (nil for video).
    public var capturedSamples: Int?
    public var silenceFilledSamples: Int?
    /// Audio: samples repeated to keep a slow source on the session's clock (part of the
    /// stream's length with the two above; the ones left out for a fast source count in
    /// `overlapDroppedMs`).
    public var repeatedSamples: Int?
    /// Audio: samples captured but lost because the encoder was more than 5 s behind (their
    /// place in the stream is silence); the fourth part of the stream's length.
    public var lostSamples: Int?
    /// Video from a Wayland screencast: frames the compositor sent (it sends one only when the
    /// picture changed), and those replaced by a newer one before a frame slot took them.
    /// Absent on X11.
    public var sourceFrames: Int?
    public var sourceFramesSuperseded: Int?

    public init(channel: String, type: MediaType, captured: Int, repeated: Int, leftOut: Int, dropped: Int, encoded: Int,
                silenceFilledMs: Int, overlapDroppedMs: Int, discontinuities: Int, chunks: Int, bytes: Int,
                largestChunkBytes: Int, paused: Bool?, offlineFrames: Int?, layoutChanges: Int?, capturedSamples: Int?,
                silenceFilledSamples: Int?, repeatedSamples: Int?, lostSamples: Int?,
                sourceFrames: Int? = nil, sourceFramesSuperseded: Int? = nil) {
        self.channel = channel
        self.type = type
        self.captured = captured
        self.repeated = repeated
        self.leftOut = leftOut
        self.dropped = dropped
        self.encoded = encoded
        self.silenceFilledMs = silenceFilledMs
        self.overlapDroppedMs = overlapDroppedMs
        self.discontinuities = discontinuities
        self.chunks = chunks
        self.bytes = bytes
        self.largestChunkBytes = largestChunkBytes
        self.paused = paused
        self.offlineFrames = offlineFrames
        self.layoutChanges = layoutChanges
        self.capturedSamples = capturedSamples
        self.silenceFilledSamples = silenceFilledSamples
        self.repeatedSamples = repeatedSamples
        self.lostSamples = lostSamples
        self.sourceFrames = sourceFrames
        self.sourceFramesSuperseded = sourceFramesSuperseded
    }
}
