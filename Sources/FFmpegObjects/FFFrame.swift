package import CaptureCore
package import CFFmpeg

/// One AVFrame. Owners make it once and reuse it for every frame (av_frame_unref or
/// av_frame_make_writable between uses), so the per-frame paths allocate nothing;
/// av_frame_free at the end also drops whatever buffers it still references.
package struct FFFrame: ~Copyable {
    package let raw: UnsafeMutablePointer<AVFrame>

    package init() throws(CaptureError) {
        guard let frame = av_frame_alloc() else { throw outOfMemory("av_frame_alloc") }
        raw = frame
    }

    deinit {
        var frame: UnsafeMutablePointer<AVFrame>? = raw
        av_frame_free(&frame)
    }
}
