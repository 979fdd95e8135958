internal import CFFmpeg
import CaptureCore

/// A CaptureError(.encoderError) naming the failed step and FFmpeg's explanation.
func exportError(_ code: Int32, _ what: String) -> CaptureError {
    var text = [CChar](repeating: 0, count: 256)
    av_strerror(code, &text, text.count)
    let message = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return CaptureError(.encoderError, "\(what) failed: \(message) (AVERROR \(code))")
}
