public import CaptureCore

/// What the spool records beside every chunk, as `chunk-NNNNNN.json`. The
/// uplink reads it; `docs/spool-format.md` documents every field.
public struct ChunkMetadata: Codable, Sendable, Equatable {
    public var version: Int = 1
    public var sessionId: String
    public var channelId: String
    public var mediaType: MediaType
    public var codec: String
    public var container: String = "mpegts"
    /// Sequence number within the channel, from 0, without gaps.
    public var seq: Int
    public var file: String
    /// Start of the chunk on the session timeline (0 = session start), nanoseconds.
    public var startPtsNs: Int64
    /// Length of the chunk on the session timeline, nanoseconds.
    public var durationNs: Int64
    /// Video frames or AAC frames in the chunk.
    public var frames: Int
    public var bytes: Int
    public var sha256: String
    /// Wall-clock (UTC) capture time of the chunk's first sample.
    public var captureTime: String
    public var captureTimeUnixNs: Int64
    /// True for the last chunk of the channel (the session stopped).
    public var isFinal: Bool

    public init(sessionId: String, channelId: String, mediaType: MediaType, codec: String, seq: Int, file: String,
                startPtsNs: Int64, durationNs: Int64, frames: Int, bytes: Int, sha256: String,
                captureTimeUnixNs: Int64, isFinal: Bool) {
        self.sessionId = sessionId
        self.channelId = channelId
        self.mediaType = mediaType
        self.codec = codec
        self.seq = seq
        self.file = file
        self.startPtsNs = startPtsNs
        self.durationNs = durationNs
        self.frames = frames
        self.bytes = bytes
        self.sha256 = sha256
        self.captureTime = WallClock.iso8601(nanoseconds: captureTimeUnixNs)
        self.captureTimeUnixNs = captureTimeUnixNs
        self.isFinal = isFinal
    }

    public static func mediaFileName(seq: Int) -> String { "chunk-\(pad6(seq)).ts" }
    public static func metadataFileName(seq: Int) -> String { "chunk-\(pad6(seq)).json" }

    private static func pad6(_ n: Int) -> String {
        let s = String(n)
        return s.count >= 6 ? s : String(repeating: "0", count: 6 - s.count) + s
    }
}
