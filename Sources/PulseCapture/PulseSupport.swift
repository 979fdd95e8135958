import CPulse
#if canImport(Glibc)
import Glibc
#endif

/// Small helpers shared by the snapshot and the recorder. Internal: nothing outside this module sees
/// a C type.
enum Pulse {
    /// The sample spec every recorder asks for: pulse converts and resamples to it.
    static var sampleSpec: pa_sample_spec {
        pa_sample_spec(format: PA_SAMPLE_FLOAT32LE, rate: 48_000, channels: 2)
    }

    static let bytesPerFrame = 8

    static func errorText(_ code: Int32) -> String {
        guard let s = pa_strerror(code) else { return "error \(code)" }
        return String(cString: s)
    }

    static func errorText(context: OpaquePointer?) -> String {
        guard let context else { return "no context" }
        return errorText(pa_context_errno(context))
    }

    static func string(_ p: UnsafePointer<CChar>?) -> String? {
        guard let p else { return nil }
        let s = String(cString: p)
        return s.isEmpty ? nil : s
    }

    /// Human description of the server a client will reach.
    static func describeServer(_ server: String?) -> String {
        if let server { return server }
        if let env = getenv("PULSE_SERVER") { return "PULSE_SERVER=\(String(cString: env))" }
        if let xdg = getenv("XDG_RUNTIME_DIR") { return "unix:\(String(cString: xdg))/pulse/native" }
        return "the default PulseAudio server"
    }

    /// `timeval` that is `microseconds` from now on the wall clock (what pa_mainloop timers take).
    static func timeval(fromNow microseconds: UInt64) -> timeval {
        var tv = Glibc.timeval()
        gettimeofday(&tv, nil)
        pa_timeval_add(&tv, pa_usec_t(microseconds))
        return tv
    }
}
