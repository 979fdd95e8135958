package import CaptureCore
internal import CFFmpeg

// One wording for every FFmpeg failure, in the encoder (MediaEncoding) and in exports
// (MediaExport) alike: what we were doing, FFmpeg's own explanation, and the code.

/// av_strerror's text for an AVERROR code. Only called on error paths (it allocates).
package func ffmpegErrorText(_ code: Int32) -> String {
    withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { buffer -> String in
        buffer.initialize(repeating: 0)
        if av_strerror(code, buffer.baseAddress, buffer.count) < 0 {
            return "unknown FFmpeg error \(code)"
        }
        let bytes = UnsafeRawBufferPointer(buffer).prefix { $0 != 0 }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A CaptureError(.encoderError) naming the failed step and FFmpeg's explanation.
package func ffmpegError(_ code: Int32, _ what: String) -> CaptureError {
    CaptureError(.encoderError, "\(what) failed: \(ffmpegErrorText(code)) (AVERROR \(code))")
}

/// The error for an FFmpeg allocator that returned NULL (they report nothing else).
func outOfMemory(_ allocator: String) -> CaptureError {
    CaptureError(.encoderError, "\(allocator) failed: out of memory")
}
