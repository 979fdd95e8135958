public import Dispatch

/// Runs a handler on a queue every `interval`, until cancelled.
///
/// Why `@unchecked Sendable` is sound: the only stored property is a libdispatch
/// timer source, whose operations (`schedule`, `activate`, `cancel`) are
/// documented thread-safe; the Swift overlay on Linux does not mark it `Sendable`.
public final class RepeatingTimer: @unchecked Sendable {
    private let source: any DispatchSourceTimer

    public init(queue: DispatchQueue, interval: DispatchTimeInterval, leeway: DispatchTimeInterval = .milliseconds(50),
                handler: @escaping @Sendable () -> Void) {
        source = DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: .now() + interval, repeating: interval, leeway: leeway)
        source.setEventHandler(handler: handler)
        source.activate()
    }

    /// No handler runs after this returns, except one already running.
    public func cancel() { source.cancel() }

    deinit { source.cancel() }
}
