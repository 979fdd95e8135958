import CaptureCore
import CLinuxShims
import CPulse
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A pa_mainloop on a thread of its own: what pa_threaded_mainloop does (one
/// recursive lock held while callbacks run and released while polling;
/// lock / unlock / wait / signal for other threads), plus one thing it cannot
/// do: wake up less often.
///
/// A PulseAudio server hands a record stream its audio as the source produces
/// it, every 5-25 ms on a typical sound card (every 10 ms on the test rig),
/// whatever fragment size the client asks for; each hand-off wakes the client
/// thread (a few system calls and two context switches, ~90 us of CPU here:
/// ~9 ms of CPU per second). While `batching` is on, the poll function waits
/// until `batchIntervalNs` have passed since the previous poll returned before
/// it polls again, so the blocks that arrived meanwhile are read in one go
/// (they wait in the shared-memory channel; nothing is lost). Capture times
/// stay exact: they come from the server's timing info and the stream's read
/// index, not from when a block is read. Everything else the loop does (timers,
/// replies, a stop) is then late by up to one interval; `batching` is therefore
/// off while connecting and opening a stream, where every round trip would
/// wait.
///
/// `readPending()` (before a stop) turns batching off and waits until the loop
/// has read what the server has sent, so a stop loses no audio to batching.
///
/// Threads: `batching` and `pollEntries` are touched only with the lock held
/// (by callbacks, which run with it, by the poll function before it releases
/// it, by `readPending`); `lastPollReturn` only on the loop thread. The mutex
/// and condition variable are pthread objects at fixed heap addresses. That is
/// why `@unchecked Sendable` is sound.
final class PulseLoopThread: @unchecked Sendable {
    /// The pa_mainloop*.
    let mainloop: OpaquePointer
    let api: UnsafeMutablePointer<pa_mainloop_api>
    /// Shortest time between two polls while batching.
    let batchIntervalNs: Int64
    /// On while a stream is streaming (lock held).
    var batching = false

    private let name: String
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>
    private var thread: pthread_t?
    /// pthread_t of the loop thread while it runs (0 = none).
    private let threadID = Atomic<UInt>(0)
    private var lastPollReturn: Int64 = 0
    /// The previous poll slept (loop thread; folded into `sleeps` under the lock).
    private var pendingSleep = false
    /// Times the loop entered its poll (lock held).
    private var pollEntries: UInt64 = 0
    /// How many times the loop has polled (lock held): a callback that sees a larger value than
    /// before runs in a later dispatch.
    var iteration: UInt64 { pollEntries }
    /// How many of those polls put the thread to sleep (a batching pause, or a poll that had to
    /// wait for the server): the wake-ups batching exists to save. A poll that finds data
    /// waiting returns at once and costs no context switch (lock held to read).
    private(set) var sleeps: UInt64 = 0
    /// Set by `readPending`: no more batching, the loop is about to stop (lock held).
    private var stopping = false
    /// An eventfd that ends a batching pause early (`readPending`, `stop`).
    private let holdInterrupt: Int32

    init?(name: String, batchIntervalNs: Int64) {
        let efd = clinux_eventfd_nonblocking()
        guard efd >= 0 else { return nil }
        guard let ml = pa_mainloop_new() else {
            close(efd)
            return nil
        }
        holdInterrupt = efd
        mainloop = ml
        api = pa_mainloop_get_api(ml)
        self.name = name
        self.batchIntervalNs = batchIntervalNs
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        var attr = pthread_mutexattr_t()
        pthread_mutexattr_init(&attr)
        pthread_mutexattr_settype(&attr, Int32(PTHREAD_MUTEX_RECURSIVE))
        pthread_mutex_init(mutex, &attr)
        pthread_mutexattr_destroy(&attr)
        var condAttr = pthread_condattr_t()
        pthread_condattr_init(&condAttr)
        pthread_condattr_setclock(&condAttr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &condAttr)
        pthread_condattr_destroy(&condAttr)
        pa_mainloop_set_poll_func(ml, { fds, count, timeout, userdata in
            Unmanaged<PulseLoopThread>.fromOpaque(userdata!).takeUnretainedValue().poll(fds, count, timeout)
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        if let t = thread, pthread_equal(t, pthread_self()) != 0 {
            pthread_detach(t)   // the thread's own last reference: it is about to end
        } else {
            stop()
        }
        pa_mainloop_free(mainloop)
        close(holdInterrupt)
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    var isCurrentThread: Bool {
        let t = threadID.load(ordering: .acquiring)
        return t != 0 && pthread_equal(pthread_t(t), pthread_self()) != 0
    }

    /// Starts the thread, which runs the loop with the lock held (released while
    /// polling). Returns the thread, nil when it cannot be created.
    func start() -> pthread_t? {
        precondition(thread == nil, "PulseLoopThread started twice")
        let box = Unmanaged.passRetained(self).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let loop = Unmanaged<PulseLoopThread>.fromOpaque(arg!).takeRetainedValue()
            loop.run()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<PulseLoopThread>.fromOpaque(box).release()
            return nil
        }
        thread = t
        return t
    }

    /// Quits the loop and joins the thread (no-op when not running). Not on the loop thread.
    func stop() {
        guard let t = thread else { return }
        precondition(!isCurrentThread, "PulseLoopThread.stop() on its own thread")
        lock()
        stopping = true
        pa_mainloop_quit(mainloop, 0)
        unlock()
        interruptHold()
        pa_mainloop_wakeup(mainloop)
        pthread_join(t, nil)
        thread = nil
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }

    /// Waits for `signal()`; the lock must be held (it is released while waiting).
    func wait() { pthread_cond_wait(cond, mutex) }

    /// `wait()` that gives up at `deadline` (CLOCK_MONOTONIC ns; the condition uses that clock).
    func wait(untilMonotonic deadline: Int64) {
        var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        _ = pthread_cond_timedwait(cond, mutex, &ts)
    }

    /// Wakes every thread in `wait()`.
    func signal() { pthread_cond_broadcast(cond) }

    /// Turns batching off and returns once the loop has dispatched everything
    /// that had arrived when this was called. Not on the loop thread; the lock
    /// must not be held.
    func readPending() {
        guard thread != nil, !isCurrentThread else { return }
        lock()
        stopping = true
        interruptHold()
        // The loop is in poll (or about to take the lock after one): the wake-up ends
        // that poll, the next dispatch reads what is there, and the entry after it
        // proves the dispatch is done. Two entries cover a poll that had just returned.
        let target = pollEntries &+ 2
        pa_mainloop_wakeup(mainloop)
        while pollEntries < target && threadID.load(ordering: .acquiring) != 0 {
            wait()
            if pollEntries < target { pa_mainloop_wakeup(mainloop) }
        }
        unlock()
    }

    private func interruptHold() {
        var one: UInt64 = 1
        _ = write(holdInterrupt, &one, 8)
    }

    private func run() {
        threadID.store(UInt(pthread_self()), ordering: .releasing)
        name.withCString { clinux_set_thread_name($0) }
        lock()
        var ret: Int32 = 0
        _ = pa_mainloop_run(mainloop, &ret)
        threadID.store(0, ordering: .releasing)
        signal()   // a readPending waiting for an iteration that will not come
        unlock()
    }

    /// The loop's poll: releases the lock while waiting, and while batching first
    /// lets the rest of the interval pass.
    private func poll(_ fds: UnsafeMutablePointer<pollfd>?, _ count: UInt, _ timeoutMs: Int32) -> Int32 {
        pollEntries &+= 1
        if pendingSleep {
            sleeps &+= 1
            pendingSleep = false
        }
        var slept = false
        let batch = batching && !stopping
        signal()   // for readPending
        unlock()
        defer { lock() }
        var timeout = timeoutMs
        if batch && timeout != 0 {
            let hold = lastPollReturn + batchIntervalNs - MonotonicClock.now()
            if hold > 0 {
                let holdMs = Int32((hold + 999_999) / 1_000_000)
                let sleepMs = timeout < 0 ? holdMs : min(holdMs, timeout)
                var pfd = pollfd(fd: holdInterrupt, events: Int16(POLLIN), revents: 0)
                slept = true
                if Glibc.poll(&pfd, 1, sleepMs) > 0 {
                    var value: UInt64 = 0
                    _ = read(holdInterrupt, &value, 8)
                }
                timeout = timeout < 0 ? -1 : max(0, timeout - holdMs)
            }
        }
        let before = slept ? 0 : MonotonicClock.now()
        let r = Glibc.poll(fds, nfds_t(count), timeout)
        lastPollReturn = MonotonicClock.now()
        // Lock not held here: count once it is taken again (the defer above runs first).
        if slept || lastPollReturn - before > 200_000 { pendingSleep = true }
        return r
    }
}
