internal import CFFmpeg
public import CaptureCore
internal import FFmpegObjects

/// What a muxer needs to know about an encoded stream: codec parameters and
/// the time base its packets' timestamps are in. Immutable and Sendable, so
/// it can travel from the encoding thread to whoever builds a muxer.
public struct StreamDescription: Sendable {
    public let mediaType: MediaType
    /// FFmpeg codec name: "h264" or "aac".
    public let codecName: String
    /// Video only (0 for audio).
    public let width: Int
    public let height: Int
    /// Audio only (0 for video).
    public let sampleRate: Int
    public let channelCount: Int
    /// Packet timestamps are in units of 1/timeBaseDenominator s
    /// (90000 for video, 48000 for audio).
    public let timeBaseDenominator: Int
    /// Nominal duration of one packet in time-base units (frame period / 1024 samples).
    public let nominalPacketDuration: Int64

    let parameters: CodecParametersBox

    init(from context: UnsafeMutablePointer<AVCodecContext>, mediaType: MediaType,
         nominalPacketDuration: Int64) throws(CaptureError) {
        let box = try CodecParametersBox(from: context)
        self.parameters = box
        self.mediaType = mediaType
        self.codecName = String(cString: avcodec_get_name(context.pointee.codec_id))
        self.width = Int(context.pointee.width)
        self.height = Int(context.pointee.height)
        self.sampleRate = Int(context.pointee.sample_rate)
        self.channelCount = Int(context.pointee.ch_layout.nb_channels)
        self.timeBaseDenominator = Int(context.pointee.time_base.den)
        self.nominalPacketDuration = nominalPacketDuration
        precondition(context.pointee.time_base.num == 1, "time bases here are 1/N")
    }

    /// H.264 (Annex B, from libx264 directly) in 1/90000 s: YUV420P, BT.709
    /// limited range. No extradata: SPS/PPS travel in front of every IDR, which is
    /// all the mpegts muxer needs.
    init(h264Width width: Int, height: Int, bitrate: Int?, nominalPacketDuration: Int64) throws(CaptureError) {
        parameters = try CodecParametersBox(filling: { p in
            p.pointee.codec_type = AVMEDIA_TYPE_VIDEO
            p.pointee.codec_id = AV_CODEC_ID_H264
            p.pointee.format = AV_PIX_FMT_YUV420P.rawValue
            p.pointee.width = Int32(width)
            p.pointee.height = Int32(height)
            p.pointee.color_range = AVCOL_RANGE_MPEG
            p.pointee.color_space = AVCOL_SPC_BT709
            p.pointee.color_primaries = AVCOL_PRI_BT709
            p.pointee.color_trc = AVCOL_TRC_BT709
            p.pointee.field_order = AV_FIELD_PROGRESSIVE
            p.pointee.bit_rate = Int64(bitrate ?? 0)
        })
        mediaType = .video
        codecName = String(cString: avcodec_get_name(AV_CODEC_ID_H264))
        self.width = width
        self.height = height
        sampleRate = 0
        channelCount = 0
        timeBaseDenominator = Int(Ticks90k.hz)
        self.nominalPacketDuration = nominalPacketDuration
    }

    var timeBase: AVRational { AVRational(1, Int32(timeBaseDenominator)) }
}

/// One AVCodecParameters, shared by every copy of a StreamDescription. It is filled in
/// `init` and never written again; afterwards it is only read (avcodec_parameters_copy
/// into a muxer's stream), and reading immutable memory from several threads is safe,
/// hence Sendable. It is freed with the box, after the last reference (and so the last
/// reader) is gone.
final class CodecParametersBox: @unchecked Sendable {
    private let parameters: FFCodecParameters

    init(from context: UnsafeMutablePointer<AVCodecContext>) throws(CaptureError) {
        parameters = try FFCodecParameters()
        let rc = avcodec_parameters_from_context(parameters.raw, context)
        if rc < 0 { throw ffmpegError(rc, "avcodec_parameters_from_context") }
    }

    /// Copies the parameters into `destination` (e.g. a muxer's AVStream.codecpar).
    func copy(into destination: UnsafeMutablePointer<AVCodecParameters>) throws(CaptureError) {
        let rc = avcodec_parameters_copy(destination, parameters.raw)
        if rc < 0 { throw ffmpegError(rc, "avcodec_parameters_copy") }
    }

    /// Parameters filled in by `fill` (on freshly allocated, defaulted parameters).
    init(filling fill: (UnsafeMutablePointer<AVCodecParameters>) -> Void) throws(CaptureError) {
        parameters = try FFCodecParameters()
        fill(parameters.raw)
    }

    var codecID: AVCodecID { parameters.raw.pointee.codec_id }

    /// The codec's extradata (for AAC: the AudioSpecificConfig).
    var extradata: UnsafeRawBufferPointer {
        let raw = parameters.raw
        guard let d = raw.pointee.extradata, raw.pointee.extradata_size > 0 else {
            return UnsafeRawBufferPointer(start: nil, count: 0)
        }
        return UnsafeRawBufferPointer(start: d, count: Int(raw.pointee.extradata_size))
    }
}

/// One encoded packet, borrowed for the duration of an `emit` callback. It
/// wraps the encoder's reused AVPacket: do not keep its bytes past the callback
/// (copy them, or hand the packet to `TSChunkMuxer.write` inside the callback).
public struct EncodedPacket: ~Copyable {
    /// The encoder's AVPacket (typed pointer hidden from clients).
    let raw: UnsafeMutablePointer<AVPacket>

    init(_ raw: UnsafeMutablePointer<AVPacket>) { self.raw = raw }

    /// Presentation time in the stream's time base (1/90000 s video, 1/48000 s audio).
    public var pts: Int64 { raw.pointee.pts }
    /// Decode time in the stream's time base (equals pts: no B-frames).
    public var dts: Int64 { raw.pointee.dts }
    /// Duration in the stream's time base.
    public var duration: Int64 { raw.pointee.duration }
    /// An IDR picture (video; with SPS/PPS in front) or any AAC packet.
    public var isKeyframe: Bool { raw.pointee.flags & AV_PKT_FLAG_KEY != 0 }
    public var byteCount: Int { Int(raw.pointee.size) }

    /// The encoded bytes, valid only inside `body`.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: raw.pointee.data, count: Int(raw.pointee.size)))
    }
}
