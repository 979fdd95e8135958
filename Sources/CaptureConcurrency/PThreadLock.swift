#if canImport(Glibc)
import Glibc
#endif

/// A plain lock taken and released by hand, for a critical section that cannot be
/// a `Mutex.withLock` closure (an initializer that assigns its stored properties
/// while holding it). Shared state belongs in a `Mutex`; this guards C calls.
///
/// Why `@unchecked Sendable` is sound: a pthread mutex is made to be shared
/// between threads; it lives at a fixed address for the object's life.
public final class PThreadLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init() {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }
}
