package import CaptureCore
package import CFFmpeg

/// A muxer's AVFormatContext and the AVIOContext it writes to (once attached).
///
/// Teardown order: the context is freed in `deinit`'s body, and the IO context only
/// afterwards (a struct's stored properties are destroyed after its deinit body), so the
/// muxer's `pb` never points at a closed IO context while the muxer exists, and nothing
/// the muxer might still do on the way out can write to a closed file. The trailer, if
/// any, is the owner's to write (`av_write_trailer`) before letting the context go.
package struct FFOutputFormatContext: ~Copyable {
    package let raw: UnsafeMutablePointer<AVFormatContext>
    private var io: FFIOContext? = nil

    /// A muxer for `format` ("mp4", "mpegts"); `path` only helps FFmpeg guess, it opens
    /// nothing. The error names `step`.
    package init(format: String, path: String? = nil,
                 step: @autoclosure () -> String) throws(CaptureError) {
        var context: UnsafeMutablePointer<AVFormatContext>? = nil
        let rc = avformat_alloc_output_context2(&context, nil, format, path)
        guard rc >= 0, let context else { throw ffmpegError(rc, step()) }
        raw = context
    }

    /// Makes `io` the muxer's `pb` and keeps it until the muxer is freed.
    package mutating func attach(_ io: consuming FFIOContext) {
        raw.pointee.pb = io.raw
        self.io = consume io
    }

    deinit {
        // avformat_free_context leaves pb alone (it is ours): `io` closes it next.
        avformat_free_context(raw)
    }
}

/// A demuxer's AVFormatContext, opened on an input. avformat_close_input, not
/// avformat_free_context: it also closes the input it opened.
package struct FFInputFormatContext: ~Copyable {
    package let raw: UnsafeMutablePointer<AVFormatContext>

    /// Opens `url` (probing only if `format` is nil); `options` keeps the entries the
    /// demuxer and protocols did not take. The error names `step`.
    package init(opening url: String, format: UnsafePointer<AVInputFormat>?, options: inout FFDictionary,
                 step: @autoclosure () -> String) throws(CaptureError) {
        var context: UnsafeMutablePointer<AVFormatContext>? = nil
        // On failure avformat_open_input frees what it allocated itself.
        let rc = avformat_open_input(&context, url, format, &options.raw)
        guard rc >= 0, let context else { throw ffmpegError(rc, step()) }
        raw = context
    }

    deinit {
        var context: UnsafeMutablePointer<AVFormatContext>? = raw
        avformat_close_input(&context)
    }
}
