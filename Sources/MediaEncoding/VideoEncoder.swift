internal import CFFmpeg
import CaptureCore

public struct VideoEncoderSettings: Sendable, Equatable {
    /// Nominal frame rate, 1...60 (x264 rate control and packet durations).
    public var fps: Int = 30
    /// x264 preset (ultrafast ... placebo).
    public var preset: String = "ultrafast"
    /// x264 tune (nil: none). The encoder adds no delay with any tune (see `encode`).
    public var tune: String? = "zerolatency"
    /// Constant rate factor, used when `bitrate` is nil (nil too: x264's default, 23).
    public var crf: Int? = 23
    /// Average bitrate in bits/s; when set, ABR instead of CRF.
    public var bitrate: Int? = nil
    /// Downscale (keeping aspect, even-aligned) when the source is taller.
    public var maxHeight: Int? = nil

    public init(fps: Int = 30, preset: String = "ultrafast", tune: String? = "zerolatency",
                crf: Int? = 23, bitrate: Int? = nil, maxHeight: Int? = nil) {
        self.fps = fps
        self.preset = preset
        self.tune = tune
        self.crf = crf
        self.bitrate = bitrate
        self.maxHeight = maxHeight
    }
}

/// BGRX (XShm depth 24, 32 bpp little-endian = AV_PIX_FMT_BGR0) -> YUV420P ->
/// H.264 (libx264), no B-frames, an IDR only when asked (infinite GOP, scenecut
/// off), SPS/PPS repeated in front of every IDR and an access unit delimiter in
/// every packet, so each MPEG-TS chunk that starts at a forced keyframe decodes
/// on its own. Time base 1/90000.
///
/// Sizes: x264 needs even dimensions, so an odd source is cropped by its last
/// column/row (1366x767 -> 1366x766). With `maxHeight` below the source height
/// the picture is scaled (SWS_AREA) to maxHeight (rounded down to even) and a
/// width keeping the aspect, rounded to even.
///
/// Colour: BT.709 matrix, limited range, tagged in the stream's VUI.
///
/// Not thread-safe: use an instance from one thread at a time.
public final class VideoEncoder {
    public let sourceWidth: Int
    public let sourceHeight: Int
    public let settings: VideoEncoderSettings
    public var outputWidth: Int { converter.outputWidth }
    public var outputHeight: Int { converter.outputHeight }
    /// What a muxer needs (codec parameters, time base 1/90000).
    public var stream: StreamDescription { streamDescription! }

    /// Output pixels converted by the last `updatePicture` (for metrics).
    public private(set) var lastConvertedPixels: Int = 0
    /// Pictures sent to x264 so far.
    public private(set) var encodedFrames: Int = 0

    private let context: UnsafeMutablePointer<AVCodecContext>
    private let frame: UnsafeMutablePointer<AVFrame>
    private let packet: UnsafeMutablePointer<AVPacket>
    private let converter: PictureConverter
    private let frameDuration: Int64
    private var flushed = false
    /// Set last in init; optional only so that every stored property is set
    /// before the first `throw` after allocating (then deinit frees everything).
    private var streamDescription: StreamDescription?
    /// An error met where the API cannot throw (updatePicture), reported by the next encode.
    private var pendingError: CaptureError?

    public init(sourceWidth: Int, sourceHeight: Int, settings: VideoEncoderSettings) throws(CaptureError) {
        ffmpegSetup
        guard sourceWidth >= 2, sourceHeight >= 2, sourceWidth <= 16384, sourceHeight <= 16384 else {
            throw CaptureError(.invalidRequest, "video source size \(sourceWidth)x\(sourceHeight) is out of range (2...16384)")
        }
        guard (1...60).contains(settings.fps) else {
            throw CaptureError(.invalidRequest, "video fps \(settings.fps) is out of range (1...60)")
        }
        if let crf = settings.crf, !(0...51).contains(crf) {
            throw CaptureError(.invalidRequest, "x264 crf \(crf) is out of range (0...51)")
        }
        if let b = settings.bitrate, b < 10_000 {
            throw CaptureError(.invalidRequest, "video bitrate \(b) bit/s is too low (at least 10000)")
        }
        if let mh = settings.maxHeight, mh < 2 {
            throw CaptureError(.invalidRequest, "maxHeight \(mh) is too small (at least 2)")
        }
        self.sourceWidth = sourceWidth
        self.sourceHeight = sourceHeight
        self.settings = settings

        var outW = sourceWidth & ~1, outH = sourceHeight & ~1
        if let mh = settings.maxHeight, outH > mh {
            outH = mh & ~1
            let w = Double(sourceWidth) * Double(outH) / Double(sourceHeight)
            outW = max(2, Int((w / 2).rounded()) * 2)
        }
        converter = try PictureConverter(sourceWidth: sourceWidth, sourceHeight: sourceHeight,
                                         outputWidth: outW, outputHeight: outH)
        frameDuration = VideoTimebase.hz / Int64(settings.fps)

        guard let codec = avcodec_find_encoder_by_name("libx264") else {
            throw CaptureError(.encoderError, "FFmpeg has no libx264 encoder; install a libavcodec built with libx264 (Debian: libavcodec59)")
        }
        guard let ctx = avcodec_alloc_context3(codec) else {
            throw CaptureError(.encoderError, "avcodec_alloc_context3(libx264) failed: out of memory")
        }
        context = ctx
        guard let f = av_frame_alloc(), let p = av_packet_alloc() else {
            var c: UnsafeMutablePointer<AVCodecContext>? = ctx
            avcodec_free_context(&c)
            throw CaptureError(.encoderError, "av_frame_alloc/av_packet_alloc failed: out of memory")
        }
        frame = f
        packet = p
        // From here on deinit cleans up if init throws.

        ctx.pointee.width = Int32(outW)
        ctx.pointee.height = Int32(outH)
        ctx.pointee.pix_fmt = AV_PIX_FMT_YUV420P
        ctx.pointee.time_base = AVRational(1, Int32(VideoTimebase.hz))
        ctx.pointee.framerate = AVRational(Int32(settings.fps), 1)
        ctx.pointee.gop_size = 1 << 30          // X264_KEYINT_MAX_INFINITE: IDR only when forced
        ctx.pointee.max_b_frames = 0
        ctx.pointee.thread_count = 0            // let x264 decide
        ctx.pointee.color_range = AVCOL_RANGE_MPEG
        ctx.pointee.colorspace = AVCOL_SPC_BT709
        ctx.pointee.color_primaries = AVCOL_PRI_BT709
        ctx.pointee.color_trc = AVCOL_TRC_BT709
        if let b = settings.bitrate { ctx.pointee.bit_rate = Int64(b) }

        var options = FFDictionary()
        try options.set("preset", settings.preset)
        if let tune = settings.tune { try options.set("tune", tune) }
        if settings.bitrate == nil, let crf = settings.crf { try options.set("crf", String(crf)) }
        try options.set("forced-idr", "1")
        // No encoder delay whatever the preset/tune: sliced threads, no lookahead, no
        // B-frames, and force-cfr (in VFR mode x264 waits for the next frame's
        // timestamp to size the current one: one frame of delay, measured), so
        // every encode() emits the packet of that very picture and a chunk can be
        // cut between two encode() calls. Timestamps still pass through verbatim;
        // rate control assumes `fps`.
        try options.set("x264-params",
                        "scenecut=0:repeat-headers=1:aud=1:bframes=0:sliced-threads=1:rc-lookahead=0:sync-lookahead=0:force-cfr=1")
        var rc = avcodec_open2(ctx, codec, &options.raw)
        if rc < 0 {
            throw ffmpegError(rc, "opening libx264 (\(outW)x\(outH), preset \(settings.preset), tune \(settings.tune ?? "none"))")
        }
        let unused = options.leftovers()
        if !unused.isEmpty {
            throw CaptureError(.encoderError, "libx264 did not accept the options \(unused.joined(separator: ", "))")
        }

        f.pointee.format = AV_PIX_FMT_YUV420P.rawValue
        f.pointee.width = Int32(outW)
        f.pointee.height = Int32(outH)
        f.pointee.color_range = AVCOL_RANGE_MPEG
        f.pointee.colorspace = AVCOL_SPC_BT709
        f.pointee.color_primaries = AVCOL_PRI_BT709
        f.pointee.color_trc = AVCOL_TRC_BT709
        rc = av_frame_get_buffer(f, 64)
        if rc < 0 { throw ffmpegError(rc, "av_frame_get_buffer(\(outW)x\(outH) yuv420p)") }
        // Start black (Y 16, Cb/Cr 128) so a partial first update leaves no garbage.
        if let y = f.pointee.data.0, let u = f.pointee.data.1, let v = f.pointee.data.2 {
            y.update(repeating: 16, count: Int(f.pointee.linesize.0) * outH)
            u.update(repeating: 128, count: Int(f.pointee.linesize.1) * (outH / 2))
            v.update(repeating: 128, count: Int(f.pointee.linesize.2) * (outH / 2))
        }

        streamDescription = try StreamDescription(from: ctx, mediaType: .video, nominalPacketDuration: frameDuration)
    }

    deinit {
        var f: UnsafeMutablePointer<AVFrame>? = frame
        av_frame_free(&f)
        var p: UnsafeMutablePointer<AVPacket>? = packet
        av_packet_free(&p)
        var c: UnsafeMutablePointer<AVCodecContext>? = context
        avcodec_free_context(&c)
    }

    /// Converts the changed parts of `image` into the encoder's persistent
    /// YUV420P picture. `dirty == nil` (or a region covering the whole frame)
    /// converts everything; an empty region converts nothing. Rectangles are in
    /// source pixels and are clipped to the frame. With scaling active every
    /// non-empty update is a full conversion. The result is byte-identical to a
    /// full conversion of the same image.
    ///
    /// `image` must be at least sourceWidth x sourceHeight (its top-left part is
    /// used) and stay valid for the duration of the call. Never allocates
    /// (except inside FFmpeg when the encoder still holds the frame, see below).
    public func updatePicture(from image: PixelBufferView, dirty: DirtyRegion?) {
        precondition(image.width >= sourceWidth && image.height >= sourceHeight,
                     "updatePicture: image \(image.width)x\(image.height) is smaller than the encoder's source \(sourceWidth)x\(sourceHeight); make a new VideoEncoder when the size changes")
        if let d = dirty, d.isEmpty { lastConvertedPixels = 0; return }
        // libavcodec may still hold a reference to the frame's buffers; then
        // writing into them would change a picture it has not finished with.
        if av_frame_is_writable(frame) == 0 {
            let rc = av_frame_make_writable(frame)
            if rc < 0 {
                pendingError = ffmpegError(rc, "av_frame_make_writable (video picture)")
                return
            }
        }
        lastConvertedPixels = converter.convert(image, dirty: dirty, into: frame)
    }

    /// Encodes the current persistent picture with presentation time `pts90k`
    /// (1/90000 s ticks; strictly increasing). `keyframe: true` forces an IDR
    /// (with SPS/PPS in front). Emits the packet of this picture through `emit`,
    /// synchronously: the encoder is configured without delay (sliced threads, no
    /// lookahead, no B-frames) for every preset and tune, so a chunk boundary can
    /// simply fall between two calls. (The signature allows 0...n packets.)
    /// Gaps in `pts90k` (dropped frames) are fine; the packet keeps `pts90k` as
    /// its pts and dts.
    public func encode(pts90k: Int64, keyframe: Bool,
                       emit: (borrowing EncodedPacket) throws(CaptureError) -> Void) throws(CaptureError) {
        if let e = pendingError { pendingError = nil; throw e }
        if flushed { throw CaptureError(.internalError, "VideoEncoder.encode called after flush") }
        frame.pointee.pts = pts90k
        frame.pointee.pict_type = keyframe ? AV_PICTURE_TYPE_I : AV_PICTURE_TYPE_NONE
        frame.pointee.key_frame = keyframe ? 1 : 0
        let rc = avcodec_send_frame(context, frame)
        if rc < 0 { throw ffmpegError(rc, "avcodec_send_frame (libx264, pts \(pts90k))") }
        encodedFrames += 1
        try drain(emit)
    }

    /// Drains the encoder at the end of a stream (normally emits nothing, as
    /// there is no delay). The encoder cannot be used afterwards.
    public func flush(emit: (borrowing EncodedPacket) throws(CaptureError) -> Void) throws(CaptureError) {
        if flushed { return }
        flushed = true
        let rc = avcodec_send_frame(context, nil)
        if rc < 0 && rc != cffmpeg_averror_eof() { throw ffmpegError(rc, "flushing libx264") }
        try drain(emit)
    }

    private func drain(_ emit: (borrowing EncodedPacket) throws(CaptureError) -> Void) throws(CaptureError) {
        while true {
            let rc = avcodec_receive_packet(context, packet)
            if rc == cffmpeg_averror_eagain() || rc == cffmpeg_averror_eof() { return }
            if rc < 0 { throw ffmpegError(rc, "avcodec_receive_packet (libx264)") }
            defer { av_packet_unref(packet) }
            if packet.pointee.duration == 0 { packet.pointee.duration = frameDuration }
            try emit(EncodedPacket(packet))
        }
    }

    // MARK: test support

    /// The persistent picture's Y, U and V planes (rows without padding), for tests.
    func copyPicture() -> [UInt8] {
        var out: [UInt8] = []
        let w = outputWidth, h = outputHeight
        let planes: [(UnsafeMutablePointer<UInt8>?, Int32, Int, Int)] = [
            (frame.pointee.data.0, frame.pointee.linesize.0, w, h),
            (frame.pointee.data.1, frame.pointee.linesize.1, w / 2, h / 2),
            (frame.pointee.data.2, frame.pointee.linesize.2, w / 2, h / 2),
        ]
        for (base, stride, pw, ph) in planes {
            guard let base else { continue }
            for y in 0..<ph {
                out.append(contentsOf: UnsafeBufferPointer(start: base + y * Int(stride), count: pw))
            }
        }
        return out
    }
}
