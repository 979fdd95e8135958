internal import CFFmpeg
internal import CX264
public import CaptureCore
internal import FFmpegObjects

public struct VideoEncoderSettings: Sendable, Equatable {
    /// Nominal frame rate, 1...60 (x264 rate control and packet durations).
    public var fps: Int = 30
    /// x264 preset (ultrafast ... placebo).
    public var preset: String = "ultrafast"
    /// x264 tune (nil: none). The encoder adds no delay with any tune (see `encode`).
    public var tune: String? = "zerolatency"
    /// Quality when `bitrate` is nil (nil too: 23), 0...51, lower is better: x264's
    /// quantizer for P-frames, held constant (IDR frames get ~3 less). Named after
    /// x264's constant rate factor, which it replaced: CRF moves the quantizer with
    /// each frame's complexity, and x264 only trusts an "unchanged macroblock" hint
    /// when the frame's quantizer is not below the one the block was coded with,
    /// so under CRF the hints were ignored on every frame whose quantizer dipped
    /// (e.g. a repeated still frame after a busy one); CRF's per-frame lookahead
    /// cost estimate also costs ~1 ms at 1080p. For desktop content a quantizer of
    /// N spends about what CRF N did.
    public var crf: Int? = 23
    /// How `crf` is applied: a constant quantizer (the default, for the reason
    /// above) or x264's real constant rate factor.
    public var rateControl: VideoEncoder.QualityRateControl = .constantQuantizer
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
/// H.264 with libx264 (its own API, not libavcodec's wrapper), no B-frames, an
/// IDR only when asked (infinite GOP, scenecut off), SPS/PPS repeated in front
/// of every IDR and an access unit delimiter in every packet, so each MPEG-TS
/// chunk that starts at a forced keyframe decodes on its own. Time base 1/90000.
///
/// Unchanged macroblocks: the encoder remembers which 16x16 macroblocks of the
/// output the dirty rectangles given to `updatePicture` touched since the last
/// `encode`, and tells x264 that all others are unchanged
/// (`x264_picture_t.prop.mb_info`, `X264_MBINFO_CONSTANT`). x264 then codes
/// those as skipped without analysing them, so a still desktop or a small change
/// costs little. A full update (`dirty == nil`) or any update while scaling
/// (`maxHeight`) marks everything changed; an `encode` with no `updatePicture`
/// since the previous one marks everything unchanged. x264 only trusts a hint
/// where it is safe (the reference frame is the previous frame and its block
/// was coded at least as well as this frame's QP); elsewhere it analyses as usual.
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
    /// The source size the encoder takes now (`changeSource` changes it).
    public private(set) var sourceWidth: Int
    public private(set) var sourceHeight: Int
    public let settings: VideoEncoderSettings
    /// The stream's size, fixed for the encoder's life.
    public let outputWidth: Int
    public let outputHeight: Int
    /// Where the source lands in the output: all of it, or after `changeSource` to another
    /// size, the largest centred rectangle that keeps the source's aspect (the rest is black).
    public private(set) var pictureRect: PixelRect
    /// What a muxer needs (codec parameters, time base 1/90000).
    public let stream: StreamDescription

    /// Output pixels converted by the last `updatePicture` (for metrics).
    public private(set) var lastConvertedPixels: Int = 0
    /// Pictures sent to x264 so far.
    public private(set) var encodedFrames: Int = 0
    /// Frames sent again from the still picture's earlier encoding instead of
    /// through x264 (see `KeyframeReplay`).
    public private(set) var replayedFrames: Int = 0

    /// Macroblocks per row / column of the output (16x16, partial ones included).
    let macroblockColumns: Int
    let macroblockRows: Int
    /// Whether x264 gets per-macroblock "unchanged" hints (always, except in
    /// tests and measurements that compare against an encode without them).
    let usesMacroblockHints: Bool
    /// Macroblocks marked unchanged in the last encoded picture (for tests and metrics).
    private(set) var lastUnchangedMacroblocks: Int = 0
    /// Test only: the next `encode` claims that no macroblock changed, whatever
    /// `updatePicture` was told, to prove that a wrong hint shows up as a stale
    /// decoded picture.
    var claimNothingChangedOnce = false

    private var converter: PictureConverter
    private let converterEngine: PictureConverter.Engine
    /// One frame period: every packet's duration.
    private let frameDuration: Ticks90k
    /// x264, with the two mb_info arrays used in turn (`hints(pendingInfoIndex)`):
    /// x264 may still read the one it was given after x264_encoder_encode returns
    /// (see `X264Encoder`), so hints for the next picture are collected in the other.
    private let encoder: X264Encoder
    /// The persistent input picture: x264_picture_t whose planes point into `planes`.
    /// x264 copies the planes into its own frame inside x264_encoder_encode, so
    /// the converter may write them again as soon as that returns (and nothing of
    /// ours but the hints needs to outlive the encoder).
    private let picture: OwnedBuffer<x264_picture_t>
    private let pictureOut: OwnedBuffer<x264_picture_t>
    /// 64-byte aligned Y, U, V planes (strides multiples of 64), written by the converter.
    private let planes: OwnedBuffer<UInt8>
    private let yuv: PlanarYUV
    /// The part of `yuv` the converter writes: `pictureRect` of it.
    private var target: PlanarYUV
    /// The AVPacket handed out through EncodedPacket: it points at x264's output
    /// buffer (no copy), which stays valid until the next x264_encoder_encode.
    private let packet: FFPacket
    /// Which of x264's two mb_info arrays the next picture's hints are collected in.
    private var pendingInfoIndex = 0
    /// Whether anything in the pending array was marked changed (a fully unchanged
    /// picture is the common case on a still desktop).
    private var pendingAnyChanged = true
    /// Whether still pictures reuse their earlier encoding (always, except in
    /// tests and measurements that compare against an encoder without it).
    let replaysKeyframes: Bool
    private var replay = KeyframeReplay()
    /// Whether the frame sent last was an IDR.
    private var lastSentKeyframe = false
    private let constantFlag: UInt8
    private var flushed = false

    /// How `settings.crf` is applied (without `bitrate`).
    public enum QualityRateControl: Sendable, Equatable {
        case constantQuantizer
        case constantRateFactor
    }

    public convenience init(sourceWidth: Int, sourceHeight: Int, settings: VideoEncoderSettings) throws(CaptureError) {
        try self.init(sourceWidth: sourceWidth, sourceHeight: sourceHeight, settings: settings,
                      macroblockHints: true, rateControl: settings.rateControl, keyframeReplay: true)
    }

    /// `macroblockHints: false`, `rateControl: .constantRateFactor`,
    /// `keyframeReplay: false` and `converter: .swscale` exist for tests and
    /// measurements that compare against an encoder without them.
    init(sourceWidth: Int, sourceHeight: Int, settings: VideoEncoderSettings, macroblockHints: Bool = true,
         rateControl: QualityRateControl = .constantQuantizer, keyframeReplay: Bool = true,
         converter converterEngine: PictureConverter.Engine = .automatic) throws(CaptureError) {
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
        self.usesMacroblockHints = macroblockHints
        self.replaysKeyframes = keyframeReplay
        self.converterEngine = converterEngine

        var outW = sourceWidth & ~1, outH = sourceHeight & ~1
        if let mh = settings.maxHeight, outH > mh {
            outH = mh & ~1
            let w = Double(sourceWidth) * Double(outH) / Double(sourceHeight)
            outW = max(2, Int((w / 2).rounded()) * 2)
        }
        outputWidth = outW
        outputHeight = outH
        pictureRect = PixelRect(x: 0, y: 0, width: outW, height: outH)
        frameDuration = Ticks90k.framePeriod(fps: settings.fps)
        macroblockColumns = (outW + 15) / 16
        macroblockRows = (outH + 15) / 16
        constantFlag = cx264_mbinfo_constant()

        // x264 parameters. Everything that can fail without side effects comes first.
        var param = x264_param_t()
        if x264_param_default_preset(&param, settings.preset, settings.tune) < 0 {
            throw CaptureError(.encoderError,
                               "x264 does not know preset '\(settings.preset)' or tune '\(settings.tune ?? "none")'; presets: ultrafast superfast veryfast faster fast medium slow slower veryslow placebo")
        }
        param.i_width = Int32(outW)
        param.i_height = Int32(outH)
        param.i_csp = X264_CSP_I420
        param.i_bitdepth = 8
        param.i_log_level = av_log_get_level() >= AV_LOG_INFO ? X264_LOG_INFO : X264_LOG_ERROR
        // One IDR per chunk, only when asked; no other I-frames.
        param.i_keyint_max = cx264_keyint_max_infinite()
        param.i_scenecut_threshold = 0
        param.b_repeat_headers = 1          // SPS/PPS in front of every IDR
        param.b_annexb = 1                  // start codes (MPEG-TS wants Annex B)
        param.b_aud = 1                     // AUD first: the mpegts muxer then inserts none (no copy)
        // No encoder delay whatever the preset/tune: sliced threads instead of frame
        // threads, no lookahead, no B-frames, no mb-tree, and b_vfr_input = 0: with
        // VFR input x264 holds every frame back until the next one arrives, to take
        // its duration from the next pts (encoder.c: i_delay += b_vfr_input;
        // lookahead.c). So every encode() emits the packet of that very picture and a
        // chunk can be cut between two encode() calls. Timestamps still pass through
        // verbatim (x264 copies i_pts; dts == pts without B-frames); rate control
        // assumes `fps`.
        param.b_sliced_threads = 1
        param.i_bframe = 0
        param.rc.i_lookahead = 0
        param.i_sync_lookahead = 0
        param.rc.b_mb_tree = 0
        param.b_vfr_input = 0
        param.i_fps_num = UInt32(settings.fps)
        param.i_fps_den = 1
        param.i_timebase_num = 1
        param.i_timebase_den = UInt32(Ticks90k.hz)
        if let b = settings.bitrate {
            param.rc.i_rc_method = X264_RC_ABR
            param.rc.i_bitrate = Int32(max(1, b / 1000))   // kbit/s
        } else if rateControl == .constantRateFactor {
            param.rc.i_rc_method = X264_RC_CRF
            param.rc.f_rf_constant = Float(settings.crf ?? 23)
        } else {
            param.rc.i_rc_method = X264_RC_CQP
            param.rc.i_qp_constant = Int32(settings.crf ?? 23)
        }
        // BT.709 matrix, limited range (what PictureConverter produces).
        param.vui.i_colorprim = 1
        param.vui.i_transfer = 1
        param.vui.i_colmatrix = 1
        param.vui.b_fullrange = 0
        param.analyse.b_mb_info = macroblockHints ? 1 : 0
        param.analyse.b_mb_info_update = 0
        // No x264_param_apply_profile: for 8-bit 4:2:0 x264 already signals the
        // lowest profile its tools need (ultrafast: Constrained Baseline), and
        // forcing "high" would only refuse crf 0 (lossless).

        converter = try PictureConverter(sourceWidth: sourceWidth, sourceHeight: sourceHeight,
                                         outputWidth: outW, outputHeight: outH, engine: converterEngine)

        // Every buffer and object made from here on is freed by its owner if a later step throws.

        // Planes: 64-byte aligned rows, one spare row after each plane (SIMD in
        // swscale may touch a few bytes past a row's end).
        let yStride = (outW + 63) & ~63, cStride = (outW / 2 + 63) & ~63
        let ySize = yStride * (outH + 1), cSize = cStride * (outH / 2 + 1)
        // Start black (Y 16, Cb/Cr 128) so a partial first update leaves no garbage.
        planes = OwnedBuffer(count: ySize + 2 * cSize, repeating: 16, alignment: 64)
        let yPlane = planes.pointer
        (yPlane + ySize).update(repeating: 128, count: 2 * cSize)
        yuv = PlanarYUV(y: yPlane, u: yPlane + ySize, v: yPlane + ySize + cSize,
                        yStride: yStride, uStride: cStride, vStride: cStride)
        target = yuv

        picture = OwnedBuffer(count: 1, repeating: x264_picture_t())
        pictureOut = OwnedBuffer(count: 1, repeating: x264_picture_t())
        let pic = picture.pointer
        x264_picture_init(pic)
        x264_picture_init(pictureOut.pointer)
        pic.pointee.img.i_csp = X264_CSP_I420
        pic.pointee.img.i_plane = 3
        pic.pointee.img.i_stride = (Int32(yStride), Int32(cStride), Int32(cStride), 0)
        pic.pointee.img.plane = (yuv.y, yuv.u, yuv.v, nil)
        pic.pointee.prop.mb_info_free = nil     // the arrays are the encoder's, reused

        packet = try FFPacket()
        encoder = try X264Encoder(parameters: &param, macroblockCount: macroblockColumns * macroblockRows, failure:
            "x264_encoder_open failed (\(outW)x\(outH), preset \(settings.preset), tune \(settings.tune ?? "none"), \(settings.bitrate.map { "bitrate \($0)" } ?? "crf \(settings.crf ?? 23)")); see x264's message on stderr")

        let x = encoder.handle
        var opened = x264_param_t()
        x264_encoder_parameters(x, &opened)
        if opened.b_vfr_input != 0 || opened.i_bframe != 0 || x264_encoder_maximum_delayed_frames(x) > 0 {
            throw CaptureError(.encoderError,
                               "libx264 would delay frames (bframes \(opened.i_bframe), max delayed \(x264_encoder_maximum_delayed_frames(x))); this x264 build does not honour the zero-delay settings")
        }

        stream = try StreamDescription(h264Width: outW, height: outH,
                                       bitrate: settings.bitrate, nominalPacketDuration: frameDuration.ticks)
    }

    /// The mb_info array the next encode will hand to x264.
    private var pendingInfo: UnsafeMutablePointer<UInt8> {
        encoder.hints(pendingInfoIndex)
    }

    /// Converts the changed parts of `image` into the encoder's persistent
    /// YUV420P picture. `dirty == nil` (or a region covering the whole frame)
    /// converts everything; an empty region converts nothing. Rectangles are in
    /// source pixels and are clipped to the frame. With scaling active every
    /// non-empty update is a full conversion. The result is byte-identical to a
    /// full conversion of the same image. The macroblocks the rectangles touch
    /// are coded as changed by the next `encode` (several updates between two
    /// encodes add up).
    ///
    /// `dirty` must cover every pixel that differs from the image given last time:
    /// macroblocks outside it are coded as unchanged.
    ///
    /// `image` must be at least sourceWidth x sourceHeight (its top-left part is
    /// used) and stay valid for the duration of the call. Never allocates.
    public func updatePicture(from image: PixelBufferView, dirty: DirtyRegion?) {
        precondition(image.width >= sourceWidth && image.height >= sourceHeight,
                     "updatePicture: image \(image.width)x\(image.height) is smaller than the encoder's source \(sourceWidth)x\(sourceHeight); make a new VideoEncoder when the size changes")
        if let d = dirty, d.isEmpty { lastConvertedPixels = 0; return }
        lastConvertedPixels = converter.convert(image, dirty: dirty, into: target)
        markChanged(dirty)
    }

    /// Takes pictures of another size from now on (the monitor's mode changed, or it moved):
    /// the stream keeps its size, the new picture is scaled to fit it with its aspect kept
    /// (`pictureRect`, centred, black around it: letterboxed or pillarboxed), so every chunk,
    /// and everything built on them, stays one stream. The same size as the output takes the
    /// exact, partial-update path again. The picture is black until the next `updatePicture`.
    public func changeSource(width: Int, height: Int) throws(CaptureError) {
        guard width >= 2, height >= 2, width <= 16384, height <= 16384 else {
            throw CaptureError(.invalidRequest, "video source size \(width)x\(height) is out of range (2...16384)")
        }
        let rect = Self.fit(sourceWidth: width, sourceHeight: height, into: outputWidth, outputHeight)
        let next = try PictureConverter(sourceWidth: width, sourceHeight: height, outputWidth: Int(rect.width),
                                        outputHeight: Int(rect.height), engine: converterEngine)
        converter = next
        pictureRect = rect
        sourceWidth = width
        sourceHeight = height
        let x = Int(rect.x), y = Int(rect.y)
        target = PlanarYUV(y: yuv.y + y * yuv.yStride + x, u: yuv.u + (y / 2) * yuv.uStride + x / 2,
                           v: yuv.v + (y / 2) * yuv.vStride + x / 2,
                           yStride: yuv.yStride, uStride: yuv.uStride, vStride: yuv.vStride)
        fillBlack()
    }

    /// The largest rectangle with the source's aspect that fits `width` x `height`, centred,
    /// with even position and size (4:2:0 chroma); the whole output when the aspect is the
    /// same to within a pixel.
    public static func fit(sourceWidth: Int, sourceHeight: Int, into width: Int, _ height: Int) -> PixelRect {
        let scale = min(Double(width) / Double(sourceWidth), Double(height) / Double(sourceHeight))
        var w = Int((Double(sourceWidth) * scale / 2).rounded()) * 2
        var h = Int((Double(sourceHeight) * scale / 2).rounded()) * 2
        if abs(w - width) <= 2 { w = width }
        if abs(h - height) <= 2 { h = height }
        w = max(2, min(w, width))
        h = max(2, min(h, height))
        let x = (width - w) / 2 & ~1, y = (height - h) / 2 & ~1
        return PixelRect(x: x, y: y, width: w, height: h)
    }

    /// Replaces the persistent picture with black (Y 16, Cb/Cr 128: limited
    /// range), e.g. while the screen track is paused. Every macroblock is coded
    /// as changed by the next `encode`. Never allocates.
    public func fillBlack() {
        let h = outputHeight
        yuv.y.update(repeating: 16, count: yuv.yStride * h)
        yuv.u.update(repeating: 128, count: yuv.uStride * (h / 2))
        yuv.v.update(repeating: 128, count: yuv.vStride * (h / 2))
        lastConvertedPixels = 0
        markChanged(nil)
    }

    /// Marks the macroblocks under `dirty` (nil or scaling: all) as changed.
    private func markChanged(_ dirty: DirtyRegion?) {
        let info = pendingInfo
        let count = macroblockColumns * macroblockRows
        pendingAnyChanged = true
        guard let dirty, !converter.isScaling, pictureRect.x == 0, pictureRect.y == 0 else {
            info.update(repeating: 0, count: count)
            return
        }
        let frame = PixelRect(x: 0, y: 0, width: outputWidth, height: outputHeight)
        for i in 0..<dirty.count {
            let r = dirty[i].intersection(frame)
            if r.isEmpty { continue }
            // Expand to macroblock boundaries. The conversion is exact per 2x2
            // block (even-aligned), and 16 is even, so no change leaks into a
            // macroblock the rectangle does not touch.
            let c0 = Int(r.x) >> 4, c1 = (Int(r.maxX) - 1) >> 4
            let r0 = Int(r.y) >> 4, r1 = (Int(r.maxY) - 1) >> 4
            let n = c1 - c0 + 1
            for row in r0...r1 {
                (info + row * macroblockColumns + c0).update(repeating: 0, count: n)
            }
        }
    }

    /// Encodes the current persistent picture with presentation time `pts`
    /// (strictly increasing). `keyframe: true` forces an IDR
    /// (with SPS/PPS in front). Emits the packet of this picture through `emit`,
    /// synchronously: the encoder is configured without delay (sliced threads, no
    /// lookahead, no B-frames) for every preset and tune, so a chunk boundary can
    /// simply fall between two calls. (The signature allows 0...n packets.)
    /// Gaps in `pts` (dropped frames) are fine; the packet keeps `pts` as
    /// its pts and dts.
    ///
    /// The packet's bytes are x264's output buffer, valid only inside `emit`.
    public func encode(pts: Ticks90k, keyframe: Bool,
                       emit: (borrowing EncodedPacket) throws(CaptureError) -> Void) throws(CaptureError) {
        if flushed { throw CaptureError(.internalError, "VideoEncoder.encode called after flush") }
        // Nothing changed since the frame sent last (a test's claimNothingChangedOnce
        // lies to x264 only, so such a frame goes to x264).
        let unchanged = !pendingAnyChanged && !claimNothingChangedOnce
        if replaysKeyframes,
           let k = replay.nextReplayedFrame(keyframe: keyframe, unchanged: unchanged, afterKeyframe: lastSentKeyframe) {
            replayedFrames += 1
            lastUnchangedMacroblocks = macroblockColumns * macroblockRows
            lastSentKeyframe = k == 0
            try emitReplayed(replay.frame(k), keyframe: k == 0, pts: pts, emit)
            return
        }
        // After a replay x264 continues only from the chain's last frame; anywhere
        // else its next frame must not refer to earlier ones.
        let forceKeyframe = keyframe || !replay.encoderInSync
        let pic = picture.pointer
        pic.pointee.i_pts = pts.ticks
        pic.pointee.i_type = forceKeyframe ? X264_TYPE_IDR : X264_TYPE_AUTO
        if usesMacroblockHints {
            let info = pendingInfo
            let count = macroblockColumns * macroblockRows
            if claimNothingChangedOnce {
                claimNothingChangedOnce = false
                info.update(repeating: constantFlag, count: count)
                lastUnchangedMacroblocks = count
            } else if !pendingAnyChanged {
                lastUnchangedMacroblocks = count
            } else {
                // The array holds 0 (changed) or constantFlag (unchanged) per macroblock.
                var unchanged = 0
                for i in 0..<count where info[i] != 0 { unchanged += 1 }
                lastUnchangedMacroblocks = unchanged
            }
            pic.pointee.prop.mb_info = info
        } else {
            pic.pointee.prop.mb_info = nil
            lastUnchangedMacroblocks = 0
        }

        var nals: UnsafeMutablePointer<x264_nal_t>? = nil
        var nalCount: Int32 = 0
        let size = x264_encoder_encode(encoder.handle, &nals, &nalCount, pic, pictureOut.pointer)
        pic.pointee.prop.mb_info = nil
        if usesMacroblockHints {
            // The array just given may still be read by x264's slice threads until the
            // next x264_encoder_encode; collect the next picture's hints in the other one.
            pendingInfoIndex ^= 1
            pendingInfo.update(repeating: constantFlag, count: macroblockColumns * macroblockRows)
        }
        pendingAnyChanged = false
        if size < 0 {
            replay.invalidate()
            throw CaptureError(.encoderError, "x264_encoder_encode failed (pts \(pts.ticks), returned \(size)); see x264's message on stderr")
        }
        encodedFrames += 1
        guard size > 0, let nals else { return }
        let isKeyframe = pictureOut.pointer.pointee.b_keyframe != 0
        lastSentKeyframe = isKeyframe
        if replaysKeyframes {
            replay.encoded(UnsafeRawBufferPointer(start: nals[0].p_payload, count: Int(size)),
                           keyframe: isKeyframe, unchanged: unchanged)
        }
        try emitPacket(nals, Int(size), emit)
    }

    /// Sends chain frame bytes (see `KeyframeReplay`) as this frame's packet.
    private func emitReplayed(_ bytes: UnsafeRawBufferPointer, keyframe: Bool, pts: Ticks90k,
                              _ emit: (borrowing EncodedPacket) throws(CaptureError) -> Void) throws(CaptureError) {
        let p = packet.raw
        p.pointee.data = UnsafeMutablePointer(mutating: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self))
        p.pointee.size = Int32(bytes.count)
        p.pointee.buf = nil
        p.pointee.pts = pts.ticks
        p.pointee.dts = pts.ticks
        p.pointee.duration = frameDuration.ticks
        p.pointee.flags = keyframe ? AV_PKT_FLAG_KEY : 0
        p.pointee.stream_index = 0
        defer {
            p.pointee.data = nil
            p.pointee.size = 0
        }
        try emit(EncodedPacket(p))
    }

    /// Drains the encoder at the end of a stream (normally emits nothing, as
    /// there is no delay). The encoder cannot be used afterwards.
    public func flush(emit: (borrowing EncodedPacket) throws(CaptureError) -> Void) throws(CaptureError) {
        if flushed { return }
        flushed = true
        while x264_encoder_delayed_frames(encoder.handle) > 0 {
            var nals: UnsafeMutablePointer<x264_nal_t>? = nil
            var nalCount: Int32 = 0
            let size = x264_encoder_encode(encoder.handle, &nals, &nalCount, nil, pictureOut.pointer)
            if size < 0 { throw CaptureError(.encoderError, "flushing libx264 failed (returned \(size))") }
            if size > 0, let nals { try emitPacket(nals, Int(size), emit) }
        }
    }

    /// Wraps x264's output (all NALs of one picture, contiguous, Annex B) in the
    /// reused AVPacket without copying, and hands it to `emit`.
    private func emitPacket(_ nals: UnsafeMutablePointer<x264_nal_t>, _ size: Int,
                            _ emit: (borrowing EncodedPacket) throws(CaptureError) -> Void) throws(CaptureError) {
        let out = pictureOut.pointer.pointee
        let p = packet.raw
        p.pointee.data = nals[0].p_payload
        p.pointee.size = Int32(size)
        p.pointee.buf = nil
        p.pointee.pts = out.i_pts
        p.pointee.dts = out.i_dts
        p.pointee.duration = frameDuration.ticks
        p.pointee.flags = out.b_keyframe != 0 ? AV_PKT_FLAG_KEY : 0
        p.pointee.stream_index = 0
        defer {
            p.pointee.data = nil
            p.pointee.size = 0
        }
        try emit(EncodedPacket(p))
    }

    // MARK: test support

    /// The persistent picture's Y, U and V planes (rows without padding), for tests.
    func copyPicture() -> [UInt8] {
        var out: [UInt8] = []
        let w = outputWidth, h = outputHeight
        let planes: [(UnsafeMutablePointer<UInt8>, Int, Int, Int)] = [
            (yuv.y, yuv.yStride, w, h),
            (yuv.u, yuv.uStride, w / 2, h / 2),
            (yuv.v, yuv.vStride, w / 2, h / 2),
        ]
        for (base, stride, pw, ph) in planes {
            for y in 0..<ph {
                out.append(contentsOf: UnsafeBufferPointer(start: base + y * stride, count: pw))
            }
        }
        return out
    }
}
