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
    /// inside it (and fail if it were lost or killed the process). With
    /// `CAPTURE_AGENT_TEST_SIGNAL_SETUP_MARKER` it writes "delaying" to that file when the gap
    /// opens (the test signals then, not after a guessed sleep) and, when it closes, the
    /// termination signals pending ("pending: 15"): proof the signal came inside the gap.
    public static func testOnlySetupDelay() {
        guard let text = getenv("CAPTURE_AGENT_TEST_SIGNAL_SETUP_DELAY_MS"), let ms = UInt32(String(cString: text)) else { return }
        let marker = getenv("CAPTURE_AGENT_TEST_SIGNAL_SETUP_MARKER").map { String(cString: $0) }
        if let marker { appendLine("delaying", to: marker) }
        usleep(ms * 1000)
        if let marker {
            var set = sigset_t()
            sigpending(&set)
            let pending = [SIGHUP, SIGINT, SIGTERM].filter { sigismember(&set, $0) == 1 }
            appendLine("pending: " + pending.map(String.init).joined(separator: ","), to: marker)
        }
    }

    private static func appendLine(_ text: String, to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        let bytes = Array((text + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }
}
