import Synchronization

/// Whether a track is paused at a given instant of the session timeline.
///
/// A paused track keeps its place on the timeline: audio becomes digital
/// silence and the screen becomes black from the pause instant to the resume
/// instant, so every channel stays continuous and aligned, and nothing that
/// happened meanwhile is recorded.
///
/// Lock-free: the control side writes two atomics, capture threads read them
/// once per frame or audio fragment. The window is [pausedFrom, resumedAt);
/// while paused, `resumedAt <= pausedFrom` (an open window). Only the latest
/// window is kept: capture threads lag real time by far less than a pause
/// lasts.
public final class PauseGate: Sendable {
    private let pausedFrom = Atomic<Int64>(.max)
    private let resumedAt = Atomic<Int64>(.min)
    private let paused = Atomic<Bool>(false)

    public init() {}

    public var isPaused: Bool { paused.load(ordering: .relaxed) }

    /// Pauses from `t` (session timeline ns). Returns false if already paused.
    @discardableResult
    public func pause(at t: Int64) -> Bool {
        guard !paused.exchange(true, ordering: .acquiringAndReleasing) else { return false }
        let from = max(t, resumedAt.load(ordering: .relaxed))
        pausedFrom.store(from, ordering: .releasing)
        return true
    }

    /// Resumes at `t`. Returns false if not paused.
    @discardableResult
    public func resume(at t: Int64) -> Bool {
        guard paused.exchange(false, ordering: .acquiringAndReleasing) else { return false }
        resumedAt.store(max(t, pausedFrom.load(ordering: .relaxed)), ordering: .releasing)
        return true
    }

    /// The latest pause window in timeline ns: `until` is `.max` while paused.
    /// `nil` when the track was never paused.
    @inline(__always)
    public func window() -> (from: Int64, until: Int64)? {
        let from = pausedFrom.load(ordering: .acquiring)
        if from == .max { return nil }
        let until = resumedAt.load(ordering: .acquiring)
        return (from, until <= from ? .max : until)
    }

    @inline(__always)
    public func isPaused(atNs t: Int64) -> Bool {
        guard let w = window() else { return false }
        return t >= w.from && t < w.until
    }
}
