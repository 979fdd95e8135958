import Synchronization

/// How many instances of a type are alive.
///
/// The pipeline's long-lived objects (sessions, channels, recorders, grabbers) count themselves,
/// so a test can check that nothing outlives its owner once a session ended: a retain cycle,
/// like the one that once kept every session's audio channels alive, fails that check at once
/// instead of showing up hours later as a daemon that grew by megabytes per session.
///
/// A type counts itself with a stored token, `private let live = Self.liveInstances.token()`:
/// the token is created with the object's other stored properties and destroyed with them,
/// also when an initializer throws halfway, so the count never drifts. One small allocation
/// and two atomic adds per object lifetime; nothing on a hot path.
public final class LiveInstances: Sendable {
    public let name: String
    private let count = Atomic<Int>(0)

    public init(_ name: String) { self.name = name }

    public var current: Int { count.load(ordering: .relaxed) }

    /// Counts one instance for as long as the token lives.
    public func token() -> Token { Token(self) }

    public final class Token: Sendable {
        private let counter: LiveInstances

        fileprivate init(_ counter: LiveInstances) {
            self.counter = counter
            counter.count.add(1, ordering: .relaxed)
        }

        deinit { counter.count.subtract(1, ordering: .relaxed) }
    }
}
