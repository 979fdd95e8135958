public import Dispatch

/// Runs a handler on a serial queue whenever any thread calls `wake()`.
/// Wakes coalesce: many `wake()` calls before the handler runs cause one run.
/// `wake()` neither allocates nor locks (it is `dispatch_source_merge_data`),
/// so a capture thread can call it once per frame.
///
/// Why `@unchecked Sendable` is sound: the only stored property is a libdispatch
/// source, whose operations (`add(data:)`, `cancel`, `activate`) are documented
/// thread-safe; the Swift overlay on Linux simply does not mark it `Sendable`.
public final class QueueWakeup: @unchecked Sendable {
    private let source: any DispatchSourceUserDataAdd

    public init(queue: DispatchQueue, handler: @escaping @Sendable () -> Void) {
        source = DispatchSource.makeUserDataAddSource(queue: queue)
        source.setEventHandler(handler: handler)
        source.activate()
    }

    @inline(__always)
    public func wake() { source.add(data: 1) }

    /// No handler runs after this returns, except one already running.
    public func cancel() { source.cancel() }

    deinit { source.cancel() }
}
