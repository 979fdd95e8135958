package import CaptureCore
package import CFFmpeg

/// The write callback of a custom AVIOContext: `opaque`, the bytes, their count; returns
/// the count written or an AVERROR.
package typealias FFIOWrite = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<UInt8>?, Int32) -> Int32

/// One AVIOContext a muxer writes to: a file FFmpeg opened, or our own callback.
/// The two are torn down differently (avio_closep flushes and closes the file; a
/// custom context is freed together with the buffer it was given, which FFmpeg may
/// have replaced), so the context remembers which it is. Give it to an
/// `FFOutputFormatContext` (`attach`), which keeps it open until the muxer is gone.
package struct FFIOContext: ~Copyable {
    package let raw: UnsafeMutablePointer<AVIOContext>
    private let isCustom: Bool

    /// Opens `path` for writing (truncating it). The error names `step`.
    package init(writingFile path: String, step: @autoclosure () -> String) throws(CaptureError) {
        var context: UnsafeMutablePointer<AVIOContext>? = nil
        let rc = avio_open(&context, path, AVIO_FLAG_WRITE)
        guard rc >= 0, let context else { throw ffmpegError(rc, step()) }
        raw = context
        isCustom = false
    }

    /// A write-only context that hands every `bufferSize` bytes (and each flush) to
    /// `write` with `opaque`. `opaque` is not retained: it must outlive every write,
    /// which ends with the last muxer call (tearing the context down writes nothing).
    package init(bufferSize: Int32, opaque: UnsafeMutableRawPointer?, write: FFIOWrite) throws(CaptureError) {
        guard let buffer = av_malloc(Int(bufferSize)) else { throw outOfMemory("av_malloc(\(bufferSize))") }
        guard let context = avio_alloc_context(buffer.assumingMemoryBound(to: UInt8.self), bufferSize, 1, opaque,
                                               nil, write, nil) else {
            // Not the context's yet: nothing else will free it.
            av_free(buffer)
            throw outOfMemory("avio_alloc_context")
        }
        raw = context
        isCustom = true
    }

    deinit {
        var context: UnsafeMutablePointer<AVIOContext>? = raw
        if isCustom {
            av_freep(&raw.pointee.buffer)
            avio_context_free(&context)
        } else {
            avio_closep(&context)
        }
    }
}
