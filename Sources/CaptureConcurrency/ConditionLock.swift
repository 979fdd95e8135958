#if canImport(Glibc)
import Glibc
#endif

/// A value under a lock that threads can wait on until it is what they need
/// (NSCondition without Foundation). Timed waits are on CLOCK_MONOTONIC, so a
/// wall-clock step does not shorten or stretch them.
///
/// Why `@unchecked Sendable` is sound: `state` is touched only with `mutex` held.
public final class ConditionLock<State>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var state: State

    public init(_ initial: State) {
        state = initial
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Runs `body` with the lock held, then wakes every waiter to look at the state again.
    public func withLock<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer {
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        return try body(&state)
    }

    /// Waits until `ready` holds, then runs `body` with the lock still held. With a
    /// `deadline` (MonotonicClock nanoseconds): nil when it passed before `ready` held.
    public func wait<R>(until ready: (State) -> Bool, deadline: Int64? = nil, then body: (inout State) -> R) -> R? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if let deadline {
            var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
            while !ready(state) {
                if pthread_cond_timedwait(condition, mutex, &ts) == ETIMEDOUT { return ready(state) ? body(&state) : nil }
            }
        } else {
            while !ready(state) { pthread_cond_wait(condition, mutex) }
        }
        return body(&state)
    }
}
