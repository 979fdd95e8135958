package import CaptureCore
package import CFFmpeg

/// One AVCodecContext (an encoder or a decoder, opened or not). avcodec_free_context
/// closes an open codec too, so an owner that fails between allocation and opening,
/// or after, has nothing else to undo. Frames and packets are reference counted apart
/// from the context, so they may be freed before or after it.
package struct FFCodecContext: ~Copyable {
    package let raw: UnsafeMutablePointer<AVCodecContext>

    package init(codec: UnsafePointer<AVCodec>) throws(CaptureError) {
        guard let context = avcodec_alloc_context3(codec) else {
            throw outOfMemory("avcodec_alloc_context3(\(String(cString: codec.pointee.name)))")
        }
        raw = context
    }

    deinit {
        var context: UnsafeMutablePointer<AVCodecContext>? = raw
        avcodec_free_context(&context)
    }
}

/// One AVCodecParameters (a stream's description, e.g. to copy into a muxer's stream),
/// with its extradata, freed together.
package struct FFCodecParameters: ~Copyable {
    package let raw: UnsafeMutablePointer<AVCodecParameters>

    package init() throws(CaptureError) {
        guard let parameters = avcodec_parameters_alloc() else { throw outOfMemory("avcodec_parameters_alloc") }
        raw = parameters
    }

    deinit {
        var parameters: UnsafeMutablePointer<AVCodecParameters>? = raw
        avcodec_parameters_free(&parameters)
    }
}
