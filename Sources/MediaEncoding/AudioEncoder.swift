internal import CFFmpeg
public import CaptureCore
internal import FFmpegObjects

/// 48 kHz stereo interleaved Float32 (CaptureCore.AudioFormat) -> AAC-LC with
/// FFmpeg's native "aac" encoder. The samples are de-interleaved into the
/// encoder's reused planar-float (fltp) frame by a plain loop. Time base 1/48000.
///
/// Encoder priming: the AAC encoder delays its output by `initial_padding`
/// (1024) samples and stamps the first packet `pts = firstPts - 1024`. Packets
/// stamped so that they would start before 0 on the session timeline hold only
/// that priming; they are DROPPED here (counted in `droppedPrimingPackets`), so
/// `emit` never sees a negative pts and the muxer never needs to shift
/// timestamps. Every packet that is emitted keeps its encoder timestamp, which
/// already accounts for the delay: decoded audio lands at the same time as the
/// input. (When the first block's pts is >= 1024 frames, the priming packet has
/// pts >= 0 and is kept; it decodes to near silence just before the input.)
/// AAC frames overlap, so a decoder that starts at a packet without its
/// predecessor (the session's first emitted packet, or any chunk decoded on
/// its own) renders that packet's 1024 samples only partly: ~21 ms fade-in.
///
/// Not thread-safe: use an instance from one thread at a time.
public final class AudioEncoder {
    public let bitrate: Int
    /// Samples per channel in each `encode` call: 1024 (one AAC frame).
    public var frameSize: Int { Int(context.raw.pointee.frame_size) }
    /// Encoder delay in samples (priming), 1024 for FFmpeg's aac.
    public var primingSamples: Int { Int(context.raw.pointee.initial_padding) }
    /// What a muxer needs (codec parameters incl. AudioSpecificConfig, time base 1/48000).
    public let stream: StreamDescription
    /// Packets with pts < 0 (priming only) that were dropped instead of emitted.
    public private(set) var droppedPrimingPackets: Int = 0

    // Independent of each other (the frame's buffers and the packets are reference
    // counted apart from the codec), so the order they go in does not matter.
    private let context: FFCodecContext
    /// The one frame every block is copied into, and the one packet every output lands in.
    private let frame: FFFrame
    private let packet: FFPacket
    private var flushed = false

    public init(bitrate: Int = 128_000) throws(CaptureError) {
        ffmpegSetup
        guard (16_000...512_000).contains(bitrate) else {
            throw CaptureError(.invalidRequest, "AAC bitrate \(bitrate) bit/s is out of range (16000...512000)")
        }
        self.bitrate = bitrate
        guard let codec = avcodec_find_encoder_by_name("aac") else {
            throw CaptureError(.encoderError, "FFmpeg has no native aac encoder; install libavcodec59")
        }
        // Whatever is made below is freed by its owner if a later step throws.
        context = try FFCodecContext(codec: codec)
        frame = try FFFrame()
        packet = try FFPacket()

        let ctx = context.raw
        ctx.pointee.sample_fmt = AV_SAMPLE_FMT_FLTP
        ctx.pointee.sample_rate = Int32(AudioFormat.sampleRate)
        av_channel_layout_default(&ctx.pointee.ch_layout, Int32(AudioFormat.channels))
        ctx.pointee.bit_rate = Int64(bitrate)
        ctx.pointee.time_base = AVRational(1, Int32(SampleFrames.rate))
        ctx.pointee.profile = FF_PROFILE_AAC_LOW
        var rc = avcodec_open2(ctx, codec, nil)
        if rc < 0 { throw ffmpegError(rc, "opening the aac encoder (48 kHz stereo, \(bitrate) bit/s)") }
        guard Int(ctx.pointee.frame_size) == AudioFormat.blockFrames else {
            throw CaptureError(.internalError, "aac frame size is \(ctx.pointee.frame_size), expected \(AudioFormat.blockFrames)")
        }

        let f = frame.raw
        f.pointee.format = AV_SAMPLE_FMT_FLTP.rawValue
        f.pointee.sample_rate = ctx.pointee.sample_rate
        f.pointee.nb_samples = ctx.pointee.frame_size
        rc = av_channel_layout_copy(&f.pointee.ch_layout, &ctx.pointee.ch_layout)
        if rc < 0 { throw ffmpegError(rc, "av_channel_layout_copy") }
        rc = av_frame_get_buffer(f, 0)
        if rc < 0 { throw ffmpegError(rc, "av_frame_get_buffer (aac fltp)") }

        stream = try StreamDescription(from: ctx, mediaType: .audio,
                                       nominalPacketDuration: SampleFrames.block.frames)
    }

    /// Encodes one block. `samples`: exactly frameSize*2 interleaved floats (L R L R ...);
    /// `pts`: its first sample frame's place on the session timeline,
    /// normally the previous block's + 1024 (gaps are allowed; overlaps are not).
    /// Emits 0...n packets (the encoder runs one block behind) synchronously.
    public func encode(interleaved samples: UnsafeBufferPointer<Float>, pts: SampleFrames,
                       emit: (borrowing EncodedPacket) throws(CaptureError) -> Void) throws(CaptureError) {
        if flushed { throw CaptureError(.internalError, "AudioEncoder.encode called after flush") }
        let n = frameSize
        guard samples.count == n * 2, let src = samples.baseAddress else {
            throw CaptureError(.invalidRequest, "AudioEncoder.encode needs exactly \(n * 2) interleaved floats, got \(samples.count)")
        }
        let frame = frame.raw
        if av_frame_is_writable(frame) == 0 {
            let rc = av_frame_make_writable(frame)
            if rc < 0 { throw ffmpegError(rc, "av_frame_make_writable (audio)") }
        }
        guard let l0 = frame.pointee.data.0, let r0 = frame.pointee.data.1 else {
            throw CaptureError(.internalError, "aac frame has no planes")
        }
        let left = UnsafeMutableRawPointer(l0).assumingMemoryBound(to: Float.self)
        let right = UnsafeMutableRawPointer(r0).assumingMemoryBound(to: Float.self)
        for i in 0..<n {
            left[i] = src[2 * i]
            right[i] = src[2 * i + 1]
        }
        frame.pointee.pts = pts.frames
        let rc = avcodec_send_frame(context.raw, frame)
        if rc < 0 { throw ffmpegError(rc, "avcodec_send_frame (aac, pts \(pts.frames))") }
        try drain(emit)
    }

    /// Drains the encoder (its last block and the padding). Cannot encode afterwards.
    public func flush(emit: (borrowing EncodedPacket) throws(CaptureError) -> Void) throws(CaptureError) {
        if flushed { return }
        flushed = true
        let rc = avcodec_send_frame(context.raw, nil)
        if rc < 0 && rc != cffmpeg_averror_eof() { throw ffmpegError(rc, "flushing the aac encoder") }
        try drain(emit)
    }

    private func drain(_ emit: (borrowing EncodedPacket) throws(CaptureError) -> Void) throws(CaptureError) {
        let context = context.raw, packet = packet.raw
        while true {
            let rc = avcodec_receive_packet(context, packet)
            if rc == cffmpeg_averror_eagain() || rc == cffmpeg_averror_eof() { return }
            if rc < 0 { throw ffmpegError(rc, "avcodec_receive_packet (aac)") }
            defer { av_packet_unref(packet) }
            if packet.pointee.pts < 0 {
                droppedPrimingPackets += 1
                continue
            }
            try emit(EncodedPacket(packet))
        }
    }
}
