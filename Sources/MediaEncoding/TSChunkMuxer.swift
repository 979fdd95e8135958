internal import CFFmpeg
public import CaptureCore
internal import FFmpegObjects

/// Writes self-contained MPEG-TS chunks of ONE stream into memory.
///
/// One libavformat mpegts muxer lives for the whole session, so continuity
/// counters and timestamps carry on from chunk to chunk and `cat c0.ts c1.ts ...`
/// is one clean transport stream. Each chunk:
///  - starts with the SI tables, SDT then PAT then PMT (the muxer's
///    resend_headers flag is raised at every `beginChunk`; without it an audio
///    chunk would start without them), and its first PES carries a PCR;
///  - for video must start with a keyframe (an IDR with SPS/PPS, see
///    `VideoEncoder.encode(keyframe: true)`), otherwise `write` throws;
///  - keeps the packets' timestamps verbatim: `mpegts_copyts=1`, `max_delay=0`
///    (so no 1.4 s offset and PCR == DTS of the packet carrying it) and
///    `avoid_negative_ts=disabled`; a chunk whose first packet has pts P (in
///    1/90000 s) shows start_time P/90000 in ffprobe. Negative pts are refused
///    (AudioEncoder never emits them: it drops priming-only packets).
///
/// AAC packets are wrapped in ADTS headers here, in a reused buffer (libavformat
/// would otherwise run an ADTS sub-muxer with a fresh dynamic buffer per packet).
/// Video packets carry their own access unit delimiters (x264 aud=1), so the
/// muxer does not copy them to insert one. Nothing is allocated per packet in
/// this code; the chunk buffer only grows when a chunk is bigger than any before.
///
/// Not thread-safe: use an instance from one thread at a time.
public final class TSChunkMuxer {
    public let stream: StreamDescription
    /// Packets written into the current (or last finished) chunk.
    public private(set) var packetsInChunk: Int = 0
    /// pts (in the stream's time base) of the first packet of the current chunk, if any.
    public private(set) var chunkFirstPTS: Int64? = nil

    /// The mpegts muxer and the custom AVIOContext it writes into `output` through.
    /// Neither writes anything when it goes away, so `output` may go before them.
    private let format: FFOutputFormatContext
    /// The one packet every written packet is described in (pointing at the caller's bytes).
    private let muxPacket: FFPacket
    private let output: ChunkBuffer
    private let isAAC: Bool
    private let adts: ADTSWriter?
    private var resendHeadersFlag: Int64 = 0
    private var chunkOpen = false
    private var lastDTS: Int64 = .min

    public init(stream: StreamDescription) throws(CaptureError) {
        ffmpegSetup
        self.stream = stream
        output = ChunkBuffer(initialCapacity: stream.mediaType == .video ? 1 << 20 : 64 << 10)
        isAAC = stream.parameters.codecID == AV_CODEC_ID_AAC
        adts = isAAC ? try ADTSWriter(audioSpecificConfig: stream.parameters.extradata) : nil

        // Whatever is made below is freed by its owner if a later step throws.
        var format = try FFOutputFormatContext(format: "mpegts", step: "avformat_alloc_output_context2(mpegts)")
        muxPacket = try FFPacket()
        let fmt = format.raw

        guard let st = avformat_new_stream(fmt, nil) else {
            throw CaptureError(.encoderError, "avformat_new_stream failed: out of memory")
        }
        try stream.parameters.copy(into: st.pointee.codecpar)
        st.pointee.time_base = stream.timeBase

        // The ChunkBuffer is passed unretained: this muxer owns both, and the IO context
        // only writes inside our muxer calls.
        format.attach(try FFIOContext(bufferSize: 188 * 64, opaque: Unmanaged.passUnretained(output).toOpaque(),
                                      write: chunkBufferWrite))
        fmt.pointee.flags |= AVFMT_FLAG_CUSTOM_IO
        fmt.pointee.max_delay = 0

        var options = FFDictionary()
        try options.set("mpegts_copyts", "1")
        try options.set("avoid_negative_ts", "disabled")
        if stream.mediaType == .audio {
            // The muxer cannot derive AAC's frame duration from codecpar alone and
            // would warn "frame size not set"; give the PCR interval directly.
            try options.set("pcr_period", "100")
        }
        let rc = avformat_write_header(fmt, &options.raw)
        if rc < 0 { throw ffmpegError(rc, "avformat_write_header (mpegts, \(stream.codecName))") }
        let unused = options.leftovers()
        if !unused.isEmpty {
            throw CaptureError(.encoderError, "the mpegts muxer did not accept the options \(unused.joined(separator: ", "))")
        }
        guard let flagOption = av_opt_find(fmt.pointee.priv_data, "resend_headers", "mpegts_flags", 0, 0) else {
            throw CaptureError(.encoderError, "this libavformat's mpegts muxer has no mpegts_flags=resend_headers")
        }
        resendHeadersFlag = flagOption.pointee.default_val.i64
        // Whatever the header wrote is dropped: every chunk re-sends PAT/PMT itself.
        avio_flush(fmt.pointee.pb)
        output.count = 0
        self.format = format
    }

    /// Starts a chunk; the bytes returned by the previous `finishChunk` become invalid.
    public func beginChunk() throws(CaptureError) {
        output.count = 0
        packetsInChunk = 0
        chunkFirstPTS = nil
        var flags: Int64 = 0
        let muxer = format.raw.pointee.priv_data
        var rc = av_opt_get_int(muxer, "mpegts_flags", 0, &flags)
        if rc >= 0 { rc = av_opt_set_int(muxer, "mpegts_flags", flags | resendHeadersFlag, 0) }
        if rc < 0 { throw ffmpegError(rc, "setting mpegts_flags=resend_headers") }
        chunkOpen = true
    }

    /// Writes one packet (inside the encoder's `emit` callback). Timestamps are
    /// kept verbatim (rescaled to the 90 kHz MPEG-TS clock).
    public func write(_ packet: borrowing EncodedPacket) throws(CaptureError) {
        guard chunkOpen else { throw CaptureError(.internalError, "TSChunkMuxer.write outside beginChunk/finishChunk") }
        let src = packet.raw
        guard src.pointee.pts >= 0, src.pointee.dts >= 0 else {
            throw CaptureError(.internalError, "TSChunkMuxer.write got negative pts \(src.pointee.pts)/dts \(src.pointee.dts); timestamps must be >= 0 on the session timeline")
        }
        if packetsInChunk == 0 && stream.mediaType == .video && !packet.isKeyframe {
            throw CaptureError(.internalError, "a video chunk must start with a keyframe: encode its first frame with keyframe: true")
        }
        let format = format.raw
        guard let st = format.pointee.streams[0] else { throw CaptureError(.internalError, "mpegts muxer lost its stream") }
        let dst = muxPacket.raw
        if let adts {
            let r = adts.wrap(src.pointee.data, Int(src.pointee.size))
            dst.pointee.data = r.data
            dst.pointee.size = Int32(r.count)
        } else {
            dst.pointee.data = src.pointee.data
            dst.pointee.size = src.pointee.size
        }
        // Not reference counted and no side data: libavformat uses the bytes
        // in place (no copy, no allocation); they are ours until we return.
        dst.pointee.buf = nil
        dst.pointee.side_data = nil
        dst.pointee.side_data_elems = 0
        dst.pointee.flags = src.pointee.flags
        dst.pointee.stream_index = 0
        dst.pointee.pts = av_rescale_q(src.pointee.pts, stream.timeBase, st.pointee.time_base)
        dst.pointee.dts = av_rescale_q(src.pointee.dts, stream.timeBase, st.pointee.time_base)
        dst.pointee.duration = av_rescale_q(src.pointee.duration, stream.timeBase, st.pointee.time_base)
        dst.pointee.pos = -1
        if dst.pointee.dts <= lastDTS {
            throw CaptureError(.internalError, "TSChunkMuxer.write: dts \(src.pointee.dts) does not increase (after \(lastDTS) in 90 kHz)")
        }
        let rc = av_write_frame(format, dst)
        dst.pointee.data = nil
        dst.pointee.size = 0
        if rc < 0 { throw ffmpegError(rc, "av_write_frame (mpegts, pts \(src.pointee.pts))") }
        lastDTS = dst.pointee.dts
        if packetsInChunk == 0 { chunkFirstPTS = src.pointee.pts }
        packetsInChunk += 1
    }

    /// Ends the chunk (writes out what the muxer still buffers, e.g. audio PES);
    /// the bytes stay valid until the next `beginChunk()`.
    public func finishChunk() throws(CaptureError) -> UnsafeRawBufferPointer {
        guard chunkOpen else { throw CaptureError(.internalError, "TSChunkMuxer.finishChunk without beginChunk") }
        chunkOpen = false
        let format = format.raw
        let rc = av_write_frame(format, nil)
        if rc < 0 { throw ffmpegError(rc, "flushing the mpegts muxer") }
        avio_flush(format.pointee.pb)
        return UnsafeRawBufferPointer(start: output.bytes, count: output.count)
    }
}

/// The growable byte buffer an AVIOContext writes into.
final class ChunkBuffer {
    var bytes: UnsafeMutableRawPointer
    var capacity: Int
    var count = 0

    init(initialCapacity: Int) {
        capacity = initialCapacity
        bytes = .allocate(byteCount: initialCapacity, alignment: 64)
    }

    deinit { bytes.deallocate() }

    func append(_ source: UnsafeRawPointer, _ n: Int) {
        if count + n > capacity {
            var newCapacity = capacity * 2
            while newCapacity < count + n { newCapacity *= 2 }
            let fresh = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 64)
            fresh.copyMemory(from: bytes, byteCount: count)
            bytes.deallocate()
            bytes = fresh
            capacity = newCapacity
        }
        (bytes + count).copyMemory(from: source, byteCount: n)
        count += n
    }
}

/// AVIOContext write callback: appends to the ChunkBuffer passed as opaque.
private func chunkBufferWrite(_ opaque: UnsafeMutableRawPointer?, _ data: UnsafeMutablePointer<UInt8>?,
                              _ size: Int32) -> Int32 {
    guard let opaque, let data, size > 0 else { return 0 }
    let buffer = Unmanaged<ChunkBuffer>.fromOpaque(opaque).takeUnretainedValue()
    buffer.append(data, Int(size))
    return size
}

/// Prefixes raw AAC frames with a 7-byte ADTS header, in one reused buffer.
final class ADTSWriter {
    private let profile: UInt8       // audio object type - 1
    private let frequencyIndex: UInt8
    private let channelConfig: UInt8
    private var buffer: UnsafeMutablePointer<UInt8>
    private var capacity: Int

    init(audioSpecificConfig asc: UnsafeRawBufferPointer) throws(CaptureError) {
        guard asc.count >= 2 else {
            throw CaptureError(.encoderError, "AAC stream has no AudioSpecificConfig; cannot write ADTS")
        }
        let objectType = asc[0] >> 3
        let freq = ((asc[0] & 0x07) << 1) | (asc[1] >> 7)
        let channels = (asc[1] >> 3) & 0x0F
        guard (1...4).contains(objectType), freq < 13, (1...7).contains(channels) else {
            throw CaptureError(.encoderError, "unsupported AudioSpecificConfig (object type \(objectType), frequency index \(freq), channels \(channels)) for ADTS")
        }
        profile = objectType - 1
        frequencyIndex = freq
        channelConfig = channels
        capacity = 8192   // an AAC frame is at most 6144 bits per channel
        buffer = .allocate(capacity: capacity)
    }

    deinit { buffer.deallocate() }

    func wrap(_ payload: UnsafeMutablePointer<UInt8>?, _ size: Int) -> (data: UnsafeMutablePointer<UInt8>, count: Int) {
        let total = size + 7
        if total > capacity {
            buffer.deallocate()
            capacity = max(total, capacity * 2)
            buffer = .allocate(capacity: capacity)
        }
        let len = UInt32(total)
        buffer[0] = 0xFF
        buffer[1] = 0xF1                        // MPEG-4, layer 0, no CRC
        buffer[2] = (profile << 6) | (frequencyIndex << 2) | (channelConfig >> 2)
        buffer[3] = ((channelConfig & 3) << 6) | UInt8((len >> 11) & 0x03)
        buffer[4] = UInt8((len >> 3) & 0xFF)
        buffer[5] = UInt8((len & 0x07) << 5) | 0x1F   // buffer fullness 0x7FF (VBR)
        buffer[6] = 0xFC                        // fullness low bits, 1 raw data block
        if let payload, size > 0 { (buffer + 7).update(from: payload, count: size) }
        return (buffer, total)
    }
}
