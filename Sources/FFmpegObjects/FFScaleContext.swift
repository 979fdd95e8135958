package import CaptureCore
package import CFFmpeg

/// One swscale context (a fixed conversion between two sizes and pixel formats).
package struct FFScaleContext: ~Copyable {
    package let raw: OpaquePointer

    /// sws_getContext fails on sizes or formats it cannot handle as well as on memory;
    /// the error names both sides.
    package init(from sourceWidth: Int, _ sourceHeight: Int, _ sourceFormat: AVPixelFormat,
                 to outputWidth: Int, _ outputHeight: Int, _ outputFormat: AVPixelFormat,
                 flags: Int32) throws(CaptureError) {
        guard let context = sws_getContext(Int32(sourceWidth), Int32(sourceHeight), sourceFormat,
                                           Int32(outputWidth), Int32(outputHeight), outputFormat,
                                           flags, nil, nil, nil) else {
            throw CaptureError(.encoderError,
                "sws_getContext failed for \(sourceWidth)x\(sourceHeight) \(Self.name(sourceFormat)) -> \(outputWidth)x\(outputHeight) \(Self.name(outputFormat)); check the sizes")
        }
        raw = context
    }

    private static func name(_ format: AVPixelFormat) -> String {
        av_get_pix_fmt_name(format).map { String(cString: $0) } ?? "pixel format \(format.rawValue)"
    }

    deinit {
        sws_freeContext(raw)
    }
}
