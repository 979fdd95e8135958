internal import CFFmpeg

// One-time library setup and the log switch. The error text, option dictionaries and
// the owning wrappers of FFmpeg's objects live in FFmpegObjects (MediaExport uses them too).

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

extension AVRational {
    init(_ num: Int32, _ den: Int32) {
        self.init(num: num, den: den)
    }
}
