import CaptureCore
import CaptureConcurrency
import Logging
import PipeWireCapture
import ScreenCastPortal
import SessionBus
import Synchronization

/// Keeps one display channel's screencast going, on a thread of its own: asks the portal for
/// the monitor (a dialog only when no kept token restores the choice), connects its PipeWire
/// stream, watches the portal session, and on request starts over after the stream ended
/// (monitor unplugged and back, consent revoked, the portal or PipeWire restarted). The
/// consent dialog can take a minute; the capture thread goes on meanwhile (black frames),
/// which is why this is not done there.
///
/// The capture thread asks with `connect(_:)` and learns the outcome from `generation` (an
/// atomic it reads every slot) and `take()`. The session bus and the portal session belong
/// to the keeper's thread alone.
final class ScreenCastKeeper: Sendable {
    struct Request: Sendable {
        var monitor: MonitorInfo
        var monitors: [MonitorInfo]
    }

    /// What a connection attempt gave.
    enum Outcome: @unchecked Sendable {
        // Why @unchecked: the stream is Sendable itself; the enum only carries it.
        case streaming(PipeWireScreenStream, StreamFormat)
        case failed(CaptureError)
    }

    private struct State {
        var request: Request?
        var stopping = false
        var exited = false
        var busy = false
        var outcome: Outcome?
    }

    private let state = ConditionLock(State())
    /// Bumped when an outcome is published.
    private let published = Atomic<Int>(0)
    /// Wakes the keeper's wait (a new request, stop).
    private let wakeup: Wakeup
    private let channel: ChannelID
    private let fps: Int
    private let drawCursor: Bool
    private let consentTimeoutNs: Int64
    private let store: RestoreTokenStore
    private let logger: Logger
    private let onConsent: @Sendable (ScreenConsentEvent) -> Void

    init(channel: ChannelID, fps: Int, drawCursor: Bool, consentTimeoutNs: Int64, store: RestoreTokenStore,
         logger: Logger, onConsent: @escaping @Sendable (ScreenConsentEvent) -> Void) throws(CaptureError) {
        wakeup = try Wakeup()
        self.channel = channel
        self.fps = fps
        self.drawCursor = drawCursor
        self.consentTimeoutNs = consentTimeoutNs
        self.store = store
        self.logger = logger
        self.onConsent = onConsent
        guard DetachedThread.start({ [self] in run() }) else {
            throw CaptureError(.internalError, "cannot start the screencast thread for \(channel)")
        }
    }

    /// How many outcomes were published so far (compare to know whether `take()` has news).
    var generation: Int { published.load(ordering: .acquiring) }

    /// Asks for a (new) screencast of `request.monitor`; the outcome is published later.
    func connect(_ request: Request) {
        state.withLock { $0.request = request; $0.busy = true }
        wakeup.signal()
    }

    /// Whether a request is being worked on.
    var busy: Bool { state.withLock { $0.busy } }

    /// The latest outcome (taken: a second call returns nil until the next one).
    func take() -> Outcome? {
        state.withLock { s in defer { s.outcome = nil }; return s.outcome }
    }

    /// Waits (woken, not polling) until an outcome newer than `generation` is published or the
    /// monotonic `deadline` passes.
    func waitForOutcome(after generation: Int, deadline: Int64) -> Outcome? {
        state.wait(until: { _ in self.published.load(ordering: .acquiring) > generation }, deadline: deadline) { s in
            defer { s.outcome = nil }
            return s.outcome
        } ?? nil
    }

    /// Ends the screencast (a pending dialog is closed) and waits for the thread to finish.
    func stop() {
        cancel()
        _ = state.wait(until: { $0.exited }) { _ in }
    }

    /// Like `stop`, without waiting: a request in progress ends with an error outcome.
    func cancel() {
        state.withLock { $0.stopping = true }
        wakeup.signal()
    }

    // MARK: The keeper's thread

    private func run() {
        defer { state.withLock { $0.exited = true } }
        var portal: ScreenCastPortal?
        var screenCast: PortalScreenCast?
        // The stream handed out last: told when the portal closes its session under it.
        weak var stream: PipeWireScreenStream?
        while true {
            // Wake-ups so far are answered by looking at the state now; one that comes while
            // a request is worked on abandons it (a stop, or a newer request).
            wakeup.drain()
            let (request, stopping) = state.withLock { s -> (Request?, Bool) in
                defer { s.request = nil }
                return (s.request, s.stopping)
            }
            if stopping { break }
            if let request {
                screenCast?.close()
                screenCast = nil
                let outcome: Outcome
                do throws(CaptureError) {
                    if portal == nil { portal = try ScreenCastPortal() }
                    let (cast, opened, format) = try open(request, portal: portal!)
                    screenCast = cast
                    stream = opened
                    outcome = .streaming(opened, format)
                } catch {
                    // A broken bus connection is made again next time.
                    if error.code == .displayUnavailable { portal = nil }
                    outcome = .failed(error)
                }
                state.withLock { s in
                    s.outcome = outcome
                    s.busy = s.request != nil
                    published.add(1, ordering: .releasing)
                }
                continue
            }
            // Nothing to do: sleep until asked (or the portal says the session closed, which the
            // stream's end reports to the capture thread anyway).
            if state.withLock({ $0.request != nil || $0.stopping }) { continue }
            if let screenCast, !screenCast.closedByPortal {
                if (try? screenCast.watch(until: MonotonicClock.now() + 3_600_000_000_000, wakeup: wakeup)) == true {
                    stream?.markEnded("the portal closed the screencast session (sharing stopped, or the desktop's portal went away)")
                }
            } else {
                wakeup.wait()
            }
        }
        screenCast?.close()
    }

    /// One attempt: consent (dialog or restore), the PipeWire connection, the first frame.
    private func open(_ request: Request, portal: ScreenCastPortal) throws(CaptureError) -> (PortalScreenCast, PipeWireScreenStream, StreamFormat) {
        let cursor = portal.cursorMode(drawCursor: drawCursor)
        let grant = try ScreenConsent.start(portal: portal, monitor: request.monitor, monitors: request.monitors, store: store,
                                            cursor: cursor, deadline: MonotonicClock.now() + consentTimeoutNs, wakeup: wakeup,
                                            abandon: { state.withLock { $0.stopping || $0.request != nil } },
                                            channel: channel, onEvent: onConsent)
        let fd = try grant.screenCast.openPipeWireRemote()
        let stream = try PipeWireScreenStream(remoteFD: fd, nodeId: grant.stream.nodeId, maxFps: fps,
                                              holdNs: WaylandScreenSource.frameDelay,
                                              cursorMetadata: cursor == .metadata, name: channel.directoryName)
        let format = try stream.waitForFirstFrame(deadline: MonotonicClock.now() + Self.firstFrameTimeoutNs)
        logger.info("screencast streaming", metadata: [
            "channel": "\(channel)", "monitor": "\(request.monitor.name)", "node": "\(grant.stream.nodeId)",
            "size": "\(format.width)x\(format.height)", "cursor": "\(cursor)",
        ])
        return (grant.screenCast, stream, format)
    }

    /// A new stream's first frame comes at once (the compositor sends the current picture), on
    /// an idle desktop within a few hundred milliseconds. On a busy one much later: GNOME with
    /// software rendering on two cores shared with two test lanes sent its frames 285-470 ms late
    /// and 3 a second, and a restored screencast's first frame not within 5 s (the session failed
    /// to start, TIMEOUT, where a user would rather have waited). 15 s, still an answer in time
    /// for a compositor that sends nothing at all.
    static let firstFrameTimeoutNs: Int64 = 15_000_000_000
}
