public import CaptureControl
import Synchronization

/// Fans events out to every subscriber and keeps the most recent ones for
/// clients that subscribe later (`subscribeEvents` returns them as `recent`).
/// Each event is encoded once; subscribers get the framed line.
public final class EventBus: Sendable {
    public typealias Subscriber = @Sendable (_ event: ControlEvent, _ line: [UInt8]) -> Void

    private struct Entry {
        var events: Set<ControlEventName>
        var deliver: Subscriber
    }

    private struct State {
        var subscribers: [Int: Entry] = [:]
        var recent: [ControlEvent] = []
    }

    private let state = Mutex(State())
    public static let recentLimit = 100

    public init() {}

    public func publish(_ event: ControlEvent) {
        let line = event.encodedLine()
        let targets = state.withLock { s -> [Subscriber] in
            s.recent.append(event)
            if s.recent.count > Self.recentLimit { s.recent.removeFirst(s.recent.count - Self.recentLimit) }
            return s.subscribers.values.filter { $0.events.contains(event.name) }.map(\.deliver)
        }
        for deliver in targets { deliver(event, line) }
    }

    /// Subscribes (or changes the subscription of) `id` to `events`; returns the recent events.
    public func subscribe(id: Int, events: Set<ControlEventName>, deliver: @escaping Subscriber) -> [ControlEvent] {
        state.withLock { s in
            s.subscribers[id] = Entry(events: events, deliver: deliver)
            return s.recent.filter { events.contains($0.name) }
        }
    }

    /// Removes `events` from the subscription of `id` (all of them: unsubscribes).
    public func unsubscribe(id: Int, events: Set<ControlEventName>? = nil) {
        state.withLock { s in
            guard let events, var entry = s.subscribers[id] else { s.subscribers[id] = nil; return }
            entry.events.subtract(events)
            s.subscribers[id] = entry.events.isEmpty ? nil : entry
        }
    }

    public func subscription(id: Int) -> Set<ControlEventName> {
        state.withLock { $0.subscribers[id]?.events ?? [] }
    }
}
