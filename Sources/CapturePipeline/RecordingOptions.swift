public import CaptureCore
public import MediaEncoding
public import ScreenCastPortal

/// Everything a recording needs to know, already validated.
public struct RecordingOptions: Sendable {
    public var sessionId: String
    /// Chunks go to `<outputDirectory>/<channel dir>/chunk-NNNNNN.{ts,json}`.
    public var outputDirectory: String
    /// Empty means the defaults: display:1, mic:default and system_audio:default, where present.
    public var channels: [ChannelID]
    public var chunkDurationNs: Int64 = 1_000_000_000
    /// When set, capture covers exactly [0, maxDuration) of the session
    /// timeline: video takes the frame slots before it, audio is cut at it.
    public var maxDurationNs: Int64?
    public var video = VideoEncoderSettings()
    public var audioBitrate = 128_000
    public var drawCursor = true
    /// XShm images per display: how many grabbed frames may wait for the
    /// encoder. A slot is released as soon as its changes are converted (~2 ms),
    /// long before the next grab, so two suffice.
    public var framePoolSize = 2
    /// Unchanged frames in a row encoded as (cheap) repeats before the channel
    /// starts leaving still frames out. The first and last frame slot of every
    /// chunk is always encoded, so chunks keep their full duration.
    public var stillRepeatLimit = 2
    /// How long an audio channel keeps reconnecting after the audio server
    /// went away (the gap is filled with silence) before the session fails.
    public var audioReconnectTimeout: Duration = .seconds(10)
    /// X11 display to use; nil means $DISPLAY.
    public var displayName: String?
    /// Which display server display channels record (`display_backend`).
    public var displayBackend: DisplayBackendSetting = .auto
    /// Wayland: how long a start (or a screencast that resumes) waits for the user to answer
    /// the desktop's screen-sharing dialog.
    public var screenConsentTimeout: Duration = .seconds(60)
    /// Wayland: where the portal's restore tokens are kept; nil: the standard place
    /// (`$XDG_STATE_HOME/capture-agent`).
    public var restoreTokens: RestoreTokenStore?

    /// `chunkDurationNs` and `maxDurationNs` on the media timeline, for the pipeline; the raw
    /// properties stay what clients and configuration set (their JSON and TOML keys say "Ns").
    public var chunkDuration: MediaTime { MediaTime(nanoseconds: chunkDurationNs) }
    public var maxDuration: MediaTime? { maxDurationNs.map { MediaTime(nanoseconds: $0) } }

    /// The backend the setting picks in this process's environment, and why.
    public var displayBackendChoice: DisplayBackendChoice {
        DisplayBackendChoice.resolve(displayBackend, x11Display: displayName)
    }

    public static let allowedChunkRange: ClosedRange<Int64> = 500_000_000...10_000_000_000
    public static let allowedFps: ClosedRange<Int> = 1...60

    public init(sessionId: String, outputDirectory: String, channels: [ChannelID] = []) {
        self.sessionId = sessionId
        self.outputDirectory = outputDirectory
        self.channels = channels
    }

    public func validate() throws(CaptureError) {
        guard Self.allowedFps.contains(video.fps) else {
            throw CaptureError(.invalidRequest, "fps \(video.fps) is out of range 1-60")
        }
        guard Self.allowedChunkRange.contains(chunkDurationNs) else {
            throw CaptureError(.invalidRequest, "chunk duration must be between 0.5 s and 10 s")
        }
        if let crf = video.crf, !(0...51).contains(crf) {
            throw CaptureError(.invalidRequest, "crf \(crf) is out of range 0-51")
        }
        if let maxDurationNs, maxDurationNs <= 0 {
            throw CaptureError(.invalidRequest, "duration must be positive")
        }
        guard screenConsentTimeout >= .seconds(1), screenConsentTimeout <= .seconds(3600) else {
            throw CaptureError(.invalidRequest, "screen consent timeout must be between 1 s and 1 h")
        }
        if let maxHeight = video.maxHeight, maxHeight < 16 {
            throw CaptureError(.invalidRequest, "max height \(maxHeight) is too small")
        }
        guard (16_000...512_000).contains(audioBitrate) else {
            throw CaptureError(.invalidRequest, "audio bitrate must be between 16k and 512k")
        }
        let allowedPresets = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
        guard allowedPresets.contains(video.preset) else {
            throw CaptureError(.invalidRequest, "unknown x264 preset '\(video.preset)' (\(allowedPresets.joined(separator: ", ")))")
        }
        guard !sessionId.isEmpty, sessionId.utf8.count <= 128,
              sessionId.unicodeScalars.allSatisfy({ $0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0) }),
              !sessionId.hasPrefix(".")
        else {
            throw CaptureError(.invalidRequest, "session id '\(sessionId)' must be 1-128 letters, digits, '-', '_' or '.'")
        }
    }
}
