import Synchronization

/// A session's start, cancelled from another thread: a stop (or shutdown) that comes while the
/// start waits for the user in the desktop's screen-sharing dialog ends that wait at once (the
/// dialog is closed) instead of after `screen_consent_timeout`.
final class StartCancellation: Sendable {
    private let state = Mutex<(cancelled: Bool, handlers: [@Sendable () -> Void])>((false, []))

    /// Runs `handler` on `cancel()` (at once when already cancelled). It must not block.
    func onCancel(_ handler: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> Bool in
            if s.cancelled { return true }
            s.handlers.append(handler)
            return false
        }
        if now { handler() }
    }

    func cancel() {
        let handlers = state.withLock { s -> [@Sendable () -> Void] in
            if s.cancelled { return [] }
            s.cancelled = true
            defer { s.handlers.removeAll() }
            return s.handlers
        }
        for handler in handlers { handler() }
    }

    var isCancelled: Bool { state.withLock { $0.cancelled } }
}
