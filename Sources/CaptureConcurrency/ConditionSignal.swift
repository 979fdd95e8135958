import Dispatch
import Synchronization
import CaptureCore

/// A thread waits until a condition it checks holds, and the thread that may have made it
/// true says so: woken, not a sleep-and-retry tick. Used where a producer finds its ring full
/// or its free list empty (the consumer calls `changed()` after each pop or hand-back), and
/// where a start waits for a first delivery.
///
/// `changed()` costs a fence and one atomic load when nobody waits: no lock, no system call,
/// so it can run per frame. `wait` re-checks its condition after every wake, so a stale or
/// extra signal is harmless.
///
/// No lost wake-up: the waiter counts itself in before it checks, the other side publishes
/// its change before it reads the count, and a sequentially consistent fence on each side
/// orders the two: either the waiter sees the change or the other side sees the waiter.
///
/// Why `@unchecked Sendable` is sound: `waiting` is atomic and a DispatchSemaphore is
/// thread-safe (the Linux overlay does not mark it Sendable).
public final class ConditionSignal: @unchecked Sendable {
    private let waiting = Atomic<Int>(0)
    private let semaphore = DispatchSemaphore(value: 0)

    public init() {}

    /// The condition may hold now (a place freed, a first delivery).
    @inline(__always)
    public func changed() {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if waiting.load(ordering: .relaxed) > 0 { semaphore.signal() }
    }

    /// Waits for the next `changed()` (or one since the last wait), at most until
    /// `deadlineNs`; for a waiter that looks at several things after each change.
    public func waitForChange(deadlineNs: Int64) {
        var woken = false
        _ = wait(deadlineNs: deadlineNs) {
            defer { woken = true }
            return woken
        }
    }

    /// Calls `attempt` until it returns true (it may act, e.g. push, and say whether it
    /// could), waiting for `changed()` between tries, until `deadlineNs` (MonotonicClock).
    /// Returns the last attempt's answer. One waiter at a time.
    public func wait(deadlineNs: Int64 = .max, _ attempt: () -> Bool) -> Bool {
        waiting.wrappingAdd(1, ordering: .relaxed)
        defer { waiting.wrappingSubtract(1, ordering: .relaxed) }
        while true {
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            if attempt() { return true }
            let now = MonotonicClock.now()
            guard now < deadlineNs else { return false }
            let timeout: DispatchTime = deadlineNs == .max ? .distantFuture : .now() + .nanoseconds(Int(deadlineNs - now))
            _ = semaphore.wait(timeout: timeout)
        }
    }
}
