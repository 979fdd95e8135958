internal import CFFmpeg
import CaptureCore

// Shared plumbing for the FFmpeg wrappers: error text, option dictionaries,
// one-time library setup. Nothing here is public except the log switch.

/// FFmpeg's and libx264's own logging (both write to stderr).
public enum MediaEncodingLog {
    /// Library default for this process: errors only. libx264 prints a summary
    /// at INFO level when an encoder closes, which would otherwise land on stderr.
    /// Call with `verbose: true` to see FFmpeg's warnings and info lines, and
    /// libx264's info lines from encoders created afterwards (libx264 is used
    /// directly and takes its log level when a VideoEncoder is made).
    public static func setVerbose(_ verbose: Bool) {
        ffmpegSetup
        av_log_set_level(verbose ? AV_LOG_INFO : AV_LOG_ERROR)
    }
}

/// Runs once per process (Swift globals are initialised lazily and atomically).
let ffmpegSetup: Void = {
    av_log_set_level(AV_LOG_ERROR)
}()

/// av_strerror text for an AVERROR code. Only called on error paths (allocates).
func ffmpegErrorText(_ code: Int32) -> String {
    withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { buf -> String in
        buf.initialize(repeating: 0)
        if av_strerror(code, buf.baseAddress, buf.count) < 0 {
            return "unknown FFmpeg error \(code)"
        }
        let bytes = UnsafeRawBufferPointer(buf).prefix { $0 != 0 }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A CaptureError(.encoderError) naming the failed step and FFmpeg's explanation.
func ffmpegError(_ code: Int32, _ what: String) -> CaptureError {
    CaptureError(.encoderError, "\(what) failed: \(ffmpegErrorText(code)) (AVERROR \(code))")
}

/// An AVDictionary of options, freed when it goes away.
struct FFDictionary: ~Copyable {
    var raw: OpaquePointer? = nil

    init() {}

    mutating func set(_ key: String, _ value: String) throws(CaptureError) {
        let rc = av_dict_set(&raw, key, value, 0)
        if rc < 0 { throw ffmpegError(rc, "av_dict_set(\(key)=\(value))") }
    }

    /// Keys nobody consumed (a misspelt or unsupported option), as "k=v" strings.
    func leftovers() -> [String] {
        var out: [String] = []
        var entry: UnsafeMutablePointer<AVDictionaryEntry>? = nil
        while true {
            entry = av_dict_get(raw, "", entry, AV_DICT_IGNORE_SUFFIX)
            guard let e = entry else { break }
            out.append("\(String(cString: e.pointee.key))=\(String(cString: e.pointee.value))")
        }
        return out
    }

    deinit {
        var r = raw
        av_dict_free(&r)
    }
}

extension AVRational {
    init(_ num: Int32, _ den: Int32) {
        self.init(num: num, den: den)
    }
}
