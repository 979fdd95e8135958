#if canImport(Glibc)
import Glibc
#endif

/// Holding termination signals for dispatch signal sources.
///
/// On Linux a dispatch signal source reads its signal from a signalfd, which
/// only sees signals that are blocked, and the source is registered
/// asynchronously, on libdispatch's own thread, some time after `activate()`.
/// The usual recipe (`signal(sig, SIG_IGN)`, then a source) loses a signal sent
/// in that gap: measured, a SIGINT 20-60 ms after `record` started was
/// discarded and the recording ran to its end. Blocking the signals first
/// instead keeps such a signal pending until the source reads it, and needs no
/// SIG_IGN (which would discard a pending one).
public enum SignalBlocking {
    /// Blocks `signals` in the calling thread; threads it creates afterwards
    /// inherit the mask. Call before the process starts any thread (every
    /// thread must block them, or one that does not would take the default
    /// action). Returns false if pthread_sigmask failed.
    @discardableResult
    public static func block(_ signals: [Int32]) -> Bool {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        return pthread_sigmask(SIG_BLOCK, &set, nil) == 0
    }

    /// Fault injection for tests: sleeps `CAPTURE_AGENT_TEST_SIGNAL_SETUP_DELAY_MS` right after
    /// `block`, widening the gap before the signal sources exist, so a test can send a signal
    /// inside it (and fail if it were lost or killed the process).
    public static func testOnlySetupDelay() {
        guard let text = getenv("CAPTURE_AGENT_TEST_SIGNAL_SETUP_DELAY_MS"), let ms = UInt32(String(cString: text)) else { return }
        usleep(ms * 1000)
    }
}
