import CaptureCore
import Synchronization

/// The task's value, or a TIMEOUT error once `limit` has passed. The task is not awaited
/// past the limit (it is cancelled and left to end on its own): an await that never returns
/// must fail its test, not hang the whole run, whatever it is stuck in (a continuation
/// that nothing resumes does not end on cancellation).
public func value<T: Sendable>(of task: Task<T, Never>, within limit: Duration, _ what: String) async throws -> T {
    let outcome = FirstOutcome<T>()
    let first: T? = await withCheckedContinuation { continuation in
        outcome.set(continuation)
        Task {
            let value = await task.value
            outcome.resume(with: value)
        }
        Task {
            try? await Task.sleep(for: limit)
            outcome.resume(with: nil)
        }
    }
    guard let first else {
        task.cancel()
        throw CaptureError(.timeout, "\(what) did not finish within \(limit)")
    }
    return first
}

/// The continuation both racers share; whichever comes first resumes it, once.
private final class FirstOutcome<T: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<T?, Never>?>(nil)

    func set(_ c: CheckedContinuation<T?, Never>) { continuation.withLock { $0 = c } }

    func resume(with value: T?) { continuation.withLock { $0.take() }?.resume(returning: value) }
}
