public import CaptureCore
public import Synchronization

/// Counters of one channel, written by its stages and read by anyone (status,
/// summary). Relaxed atomics: each counter is independent.
public final class ChannelStats: Sendable {
    public let channel: ChannelID
    /// Video: frames grabbed from the screen. Audio: 1024-sample blocks captured.
    let captured = Atomic<Int>(0)
    /// Video: unchanged frames encoded again as cheap repeats.
    let repeated = Atomic<Int>(0)
    /// Video: unchanged frames left out (timestamps stay right; the decoder holds the last frame).
    let leftOut = Atomic<Int>(0)
    /// Video: frames not taken because the encoder was behind or the capture thread stalled.
    let dropped = Atomic<Int>(0)
    /// Video: frame slots recorded black because the monitor was off or unplugged.
    let offlineFrames = Atomic<Int>(0)
    /// Video: times the monitor's size or position changed (or it came back elsewhere).
    let layoutChanges = Atomic<Int>(0)
    /// Frames (video) or AAC frames (audio) handed to the muxer.
    let encoded = Atomic<Int>(0)
    /// Audio: samples of the source placed on the timeline (paused ones too: they are zeroed).
    let capturedSamples = Atomic<Int>(0)
    /// Audio: samples of silence inserted for holes (device suspended, moved, server restarted)
    /// and for what never arrived before the session's start or its end. With `capturedSamples`,
    /// `repeatedSamples` and `lostSamples` this is the whole stream: captured + filled +
    /// repeated + lost = the session's length in samples.
    let silenceFilledSamples = Atomic<Int>(0)
    /// Audio: samples dropped because they overlapped audio already placed on the timeline, or
    /// left out to keep a source whose clock runs fast on the session's clock.
    let overlapDroppedSamples = Atomic<Int>(0)
    /// Audio: samples repeated to keep a source whose clock runs slow on the session's clock.
    let repeatedSamples = Atomic<Int>(0)
    /// Audio: samples captured but lost because the encoder was more than 5 s behind (their
    /// place on the timeline becomes silence).
    let lostSamples = Atomic<Int>(0)
    /// Audio: times the source reported an interruption.
    let discontinuities = Atomic<Int>(0)
    /// Video from a screencast (-1: not one): frames the compositor sent, and those a newer one
    /// replaced before a frame slot took them.
    let sourceFrames = Atomic<Int>(-1)
    let sourceFramesSuperseded = Atomic<Int>(-1)

    init(channel: ChannelID) { self.channel = channel }

    public var snapshot: ChannelStatsSnapshot {
        ChannelStatsSnapshot(
            channel: channel.description, type: channel.mediaType,
            captured: captured.load(ordering: .relaxed), repeated: repeated.load(ordering: .relaxed),
            leftOut: leftOut.load(ordering: .relaxed), dropped: dropped.load(ordering: .relaxed),
            encoded: encoded.load(ordering: .relaxed),
            silenceFilledMs: silenceFilledSamples.load(ordering: .relaxed) * 1000 / AudioFormat.sampleRate,
            overlapDroppedMs: overlapDroppedSamples.load(ordering: .relaxed) * 1000 / AudioFormat.sampleRate,
            discontinuities: discontinuities.load(ordering: .relaxed),
            chunks: 0, bytes: 0, largestChunkBytes: 0, paused: nil,
            offlineFrames: channel.mediaType == .video ? offlineFrames.load(ordering: .relaxed) : nil,
            layoutChanges: channel.mediaType == .video ? layoutChanges.load(ordering: .relaxed) : nil,
            capturedSamples: channel.mediaType == .audio ? capturedSamples.load(ordering: .relaxed) : nil,
            silenceFilledSamples: channel.mediaType == .audio ? silenceFilledSamples.load(ordering: .relaxed) : nil,
            repeatedSamples: channel.mediaType == .audio ? repeatedSamples.load(ordering: .relaxed) : nil,
            lostSamples: channel.mediaType == .audio ? lostSamples.load(ordering: .relaxed) : nil,
            sourceFrames: Self.present(sourceFrames), sourceFramesSuperseded: Self.present(sourceFramesSuperseded))
    }

    private static func present(_ counter: borrowing Atomic<Int>) -> Int? {
        let value = counter.load(ordering: .relaxed)
        return value < 0 ? nil : value
    }
}

