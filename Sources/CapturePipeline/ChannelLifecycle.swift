import CaptureCore
import CaptureConcurrency

/// The start and the end of a channel, shared by both channel kinds: one small state machine
/// under one lock instead of a semaphore per step.
///
///     starter (the session)                        the channel's own side
///     ---------------------                        ----------------------
///     awaitSetup() ........................<-----  reportSetup(.success(value) | .failure)
///     go()  or  cancel() ...................----->  awaitGo() -> true (run) / false (don't)
///                                                   (captures, hands the end to its encoder)
///     awaitEncoderDone() / awaitExit() ....<-----  encoderFinished(), exited()
///
/// A video channel runs it on its capture thread (setup opens the screen source there,
/// where its objects live); an audio channel has no thread of its own (its recorder calls
/// back on the audio server's thread) and uses the encoder's end only. Every wait is woken
/// by the step it waits for; none polls.
final class ChannelLifecycle<Setup: Sendable>: Sendable {
    private enum Go: Sendable { case undecided, run, cancelled }
    private struct State: Sendable {
        var setup: Result<Setup, CaptureError>?
        var go = Go.undecided
        var encoderFinished = false
        var exited = false
    }

    private let state = ConditionLock(State())

    init() {}

    // MARK: The channel's side

    /// The setup is done (or failed): the starter's `awaitSetup` returns it.
    func reportSetup(_ result: Result<Setup, CaptureError>) {
        state.withLock { $0.setup = result }
    }

    /// Waits for the starter's decision: true to run, false when cancelled.
    func awaitGo() -> Bool {
        state.wait(until: { $0.go != .undecided }) { $0.go == .run } ?? false
    }

    /// The encoder handed its last chunk to the spool.
    func encoderFinished() {
        state.withLock { $0.encoderFinished = true }
    }

    /// The channel's thread is about to end (nothing of the channel runs on it afterwards).
    func exited() {
        state.withLock { $0.exited = true }
    }

    // MARK: The starter's side

    /// Waits until the channel's side reported its setup.
    func awaitSetup() -> Result<Setup, CaptureError> {
        state.wait(until: { $0.setup != nil }) { $0.setup! }!
    }

    func go() { state.withLock { if $0.go == .undecided { $0.go = .run } } }

    func cancel() { state.withLock { if $0.go == .undecided { $0.go = .cancelled } } }

    func awaitEncoderDone() { _ = state.wait(until: { $0.encoderFinished }) { _ in () } }

    func awaitExit() { _ = state.wait(until: { $0.exited }) { _ in () } }
}
