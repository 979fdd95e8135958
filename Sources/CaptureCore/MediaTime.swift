// The capture pipeline counts time in three units: nanoseconds on the session's timeline,
// 90 kHz ticks (H.264 and MPEG-TS timestamps) and 48 kHz sample frames (AAC). A tick passed
// where nanoseconds were meant shifts media silently (11 111 times too early), so each unit
// is its own type here and the conversions between them are named. Each wraps one Int64 and
// everything is @inlinable: they cost what the raw integers cost on the per-frame paths (no
// 128-bit math, no allocation, no call across the module boundary).
//
// Raw integers stay at the edges: FFmpeg's and x264's packet fields, atomics, the chunk
// metadata and control-protocol JSON (`startPtsNs`, `durationNs`, `atNs`), which keep their
// unit in their name.

/// A time on a session's media timeline (zero: the session's start) or a span of it, in
/// nanoseconds. Not CLOCK_MONOTONIC: `monotonic - t0` is where an instant lies on the timeline.
public struct MediaTime: Hashable, Comparable, Sendable, BitwiseCopyable, CustomStringConvertible {
    public var nanoseconds: Int64

    @inlinable public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static let zero = MediaTime(nanoseconds: 0)
    /// Open end (no limit set).
    public static let max = MediaTime(nanoseconds: .max)

    /// The instant `ticks` stands for, truncated toward zero to whole nanoseconds (a tick is
    /// 11 111.1 ns): exact for multiples of 9 ticks (100 µs). Valid for |ticks| < 9.2e13
    /// (32 years).
    @inlinable public init(_ t: Ticks90k) { nanoseconds = t.ticks * 100_000 / 9 }

    /// The instant sample frame `frames` starts at, truncated toward zero to whole nanoseconds
    /// (a frame is 20 833.3 ns): exact for multiples of 3 frames. Valid for |frames| < 1.4e14
    /// (93 years).
    @inlinable public init(_ s: SampleFrames) { nanoseconds = s.frames * 62_500 / 3 }

    /// `n` periods of `fps` frames a second: the start of frame slot `n` on a video's frame
    /// grid, truncated toward zero to whole nanoseconds.
    @inlinable public static func frameSlot(_ n: Int64, fps: Int64) -> MediaTime {
        MediaTime(nanoseconds: n * 1_000_000_000 / fps)
    }

    @inlinable public var duration: Duration { .nanoseconds(nanoseconds) }

    @inlinable public static func < (a: MediaTime, b: MediaTime) -> Bool { a.nanoseconds < b.nanoseconds }
    @inlinable public static func + (a: MediaTime, b: MediaTime) -> MediaTime {
        MediaTime(nanoseconds: a.nanoseconds + b.nanoseconds)
    }
    @inlinable public static func - (a: MediaTime, b: MediaTime) -> MediaTime {
        MediaTime(nanoseconds: a.nanoseconds - b.nanoseconds)
    }
    @inlinable public static func += (a: inout MediaTime, b: MediaTime) { a.nanoseconds += b.nanoseconds }
    @inlinable public static func -= (a: inout MediaTime, b: MediaTime) { a.nanoseconds -= b.nanoseconds }
    /// `n` spans of `a` (a grid cell's start: `index * chunkDuration`).
    @inlinable public static func * (a: MediaTime, n: Int64) -> MediaTime { MediaTime(nanoseconds: a.nanoseconds * n) }
    /// How many whole spans `b` lie before `a`, truncated toward zero (Int64 division): the
    /// index of the grid cell of length `b` that `a >= 0` falls into.
    @inlinable public static func / (a: MediaTime, b: MediaTime) -> Int64 { a.nanoseconds / b.nanoseconds }

    public var description: String { "\(nanoseconds) ns" }
}

/// A timestamp in a stream's own time base (1/`rate` s): what encoders stamp packets with.
/// The chunker reads packets of either kind through it.
public protocol StreamTimestamp: Comparable, Sendable, BitwiseCopyable {
    /// Units per second.
    static var rate: Int64 { get }
    /// A raw timestamp in this time base (an AVPacket's pts or duration).
    init(streamUnits: Int64)
    var streamUnits: Int64 { get }
    /// Where it lies on the media timeline (truncated toward zero to whole nanoseconds).
    var mediaTime: MediaTime { get }
}

/// A timestamp or span on the 90 kHz clock of MPEG-TS and of the H.264 streams here.
public struct Ticks90k: StreamTimestamp, Hashable, CustomStringConvertible {
    public static let hz: Int64 = 90_000
    @inlinable public static var rate: Int64 { hz }

    public var ticks: Int64

    @inlinable public init(ticks: Int64) { self.ticks = ticks }
    @inlinable public init(streamUnits: Int64) { ticks = streamUnits }
    @inlinable public var streamUnits: Int64 { ticks }

    public static let zero = Ticks90k(ticks: 0)

    /// `t` to the nearest tick (halves up): exact for multiples of 1/90000 s, and a 30 fps slot
    /// (33 333 333 ns) is 3000 ticks. Before zero too (with a floor division: Swift's truncates
    /// toward zero, which put -0.7 ticks at 0, like SampleFrames before it). Valid for
    /// |t| < 1.0e18 ns (32 years).
    @inlinable public init(rounding t: MediaTime) {
        let n = t.nanoseconds * 9 + 50_000
        ticks = floorDivide(n, by: 100_000)
    }

    /// One frame period at `fps` frames a second, truncated to whole ticks (exact for every
    /// rate that divides 90 000: 3000 at 30 fps, 1500 at 60).
    @inlinable public static func framePeriod(fps: Int) -> Ticks90k { Ticks90k(ticks: hz / Int64(fps)) }

    @inlinable public var mediaTime: MediaTime { MediaTime(self) }

    @inlinable public static func < (a: Ticks90k, b: Ticks90k) -> Bool { a.ticks < b.ticks }
    @inlinable public static func + (a: Ticks90k, b: Ticks90k) -> Ticks90k { Ticks90k(ticks: a.ticks + b.ticks) }
    @inlinable public static func - (a: Ticks90k, b: Ticks90k) -> Ticks90k { Ticks90k(ticks: a.ticks - b.ticks) }
    @inlinable public static func * (a: Ticks90k, n: Int64) -> Ticks90k { Ticks90k(ticks: a.ticks * n) }

    public var description: String { "\(ticks) ticks" }
}

/// A position or count of sample frames (one sample per channel) at `AudioFormat.sampleRate`,
/// the one rate audio flows at between capture and encoder: the AAC streams' time base.
public struct SampleFrames: StreamTimestamp, Hashable, CustomStringConvertible {
    public static let rate = Int64(AudioFormat.sampleRate)

    public var frames: Int64

    @inlinable public init(frames: Int64) { self.frames = frames }
    @inlinable public init(streamUnits: Int64) { frames = streamUnits }
    @inlinable public var streamUnits: Int64 { frames }

    public static let zero = SampleFrames(frames: 0)
    /// One AAC frame (`AudioFormat.blockFrames`).
    public static let block = SampleFrames(frames: Int64(AudioFormat.blockFrames))

    /// The sample frame nearest `t` (halves up): exact for multiples of 1/48000 s, on both sides
    /// of zero. Seconds and the rest apart for t >= 0 (the same result as `(ns * rate + 5e8) /
    /// 1e9`, which would overflow after 53 hours). Before zero (audio captured just before a
    /// session starts) that formula with a floor division: Swift's truncates toward zero, which
    /// put a negative time up to a frame later than the nearest (-10 ms gave -479, not -480,
    /// and the session's first audio one frame longer; AudioSynchronizerTests found it).
    @inlinable public init(rounding t: MediaTime) {
        let ns = t.nanoseconds
        if ns >= 0 {
            frames = ns / 1_000_000_000 * Self.rate + (ns % 1_000_000_000 * Self.rate + 500_000_000) / 1_000_000_000
        } else {
            // Half a frame up, then the floor.
            frames = floorDivide(ns * Self.rate + 500_000_000, by: 1_000_000_000)
        }
    }

    @inlinable public var mediaTime: MediaTime { MediaTime(self) }

    @inlinable public static func < (a: SampleFrames, b: SampleFrames) -> Bool { a.frames < b.frames }
    @inlinable public static func + (a: SampleFrames, b: SampleFrames) -> SampleFrames {
        SampleFrames(frames: a.frames + b.frames)
    }
    @inlinable public static func - (a: SampleFrames, b: SampleFrames) -> SampleFrames {
        SampleFrames(frames: a.frames - b.frames)
    }
    @inlinable public static func += (a: inout SampleFrames, b: SampleFrames) { a.frames += b.frames }
    @inlinable public static func -= (a: inout SampleFrames, b: SampleFrames) { a.frames -= b.frames }
    @inlinable public static prefix func - (a: SampleFrames) -> SampleFrames { SampleFrames(frames: -a.frames) }

    public var description: String { "\(frames) frames" }
}

/// `n / d` rounded toward minus infinity (d > 0): Swift's `/` truncates toward zero, one above
/// the floor for a negative `n` that `d` does not divide. The rounding conversions above add
/// half a unit, then take this.
@usableFromInline @inline(__always) func floorDivide(_ n: Int64, by d: Int64) -> Int64 {
    n >= 0 ? n / d : (n - (d - 1)) / d
}
