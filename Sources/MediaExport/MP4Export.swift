internal import CFFmpeg
public import CaptureCore
import Dispatch
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
public import Foundation
#endif

/// What goes into an export: one video channel and any number of audio
/// channels, each as its chunk files in seq order (self-contained MPEG-TS
/// segments on one session timeline, so their concatenation is one stream).
public struct ExportInput: Sendable {
    public struct Track: Sendable {
        public var name: String
        public var files: [String]
        public init(name: String, files: [String]) {
            self.name = name
            self.files = files
        }
    }

    public var video: Track
    public var audio: [Track]
    /// The mix is encoded in segments of about this length, in parallel.
    public var mixSegmentSeconds: Double
    /// Where the session's timeline ends, as its chunks declared it (with some tolerance):
    /// packets whose timestamps lie beyond it, or before 0 by more than the tolerance, are
    /// left out and counted. The chunks come from clients; their media timestamps are not
    /// trusted to size the work (nil: no limit, for trusted input only).
    public var timelineLimitSeconds: Double?

    public init(video: Track, audio: [Track], mixSegmentSeconds: Double = 30, timelineLimitSeconds: Double? = nil) {
        self.video = video
        self.audio = audio
        self.mixSegmentSeconds = mixSegmentSeconds
        self.timelineLimitSeconds = timelineLimitSeconds
    }

    /// How far before 0 a timestamp may lie (an AAC frame's priming, a rounding).
    public static let earlyToleranceSeconds = 1.0
}

/// What the export wrote.
public struct ExportSummary: Sendable, Equatable {
    public var durationSeconds: Double
    public var videoPackets: Int
    public var mixFrames: Int
    public var audioPackets: [Int]
    public var bytes: Int
    /// Packets left out because their timestamps lay outside the declared timeline.
    public var packetsOutsideTimeline: Int
}

/// One MP4 from a session's chunks, with libavformat: the video copied as it
/// is (no re-encode); track 2, the default audio, the stored audio channels
/// decoded, summed sample by sample on the session timeline (clipped at full
/// scale) and encoded as AAC; then every audio channel copied as a track of
/// its own. `+faststart`, so a player can start before the whole file arrived.
///
/// The chunks come from clients, so nothing in them sizes the work: only H.264 video
/// and AAC audio are read (no other decoder is ever opened, not even to probe), packets
/// outside the declared timeline are left out, and a gap in a channel costs no memory
/// (decoded audio is kept in blocks placed on the timeline; silence is never stored).
public enum MP4Exporter {
    public static func export(_ input: ExportInput, to path: String) throws(CaptureError) -> ExportSummary {
        av_log_set_level(AV_LOG_ERROR)
        let job = try ExportJob(input: input, path: path)
        return try job.run()
    }
}

// MARK: The job

/// Every FFmpeg object of one export, freed when it goes away.
private final class ExportJob {
    var output: UnsafeMutablePointer<AVFormatContext>?
    var video: Demuxer
    var audio: [Demuxer] = []
    var decoders: [AudioDecoder] = []
    var mixer: Mixer
    let path: String
    var opened = false

    /// Packets outside [-earlyTolerance, limit] (seconds) are left out.
    let timeline: ClosedRange<Double>
    var outsideTimeline = 0

    init(input: ExportInput, path: String) throws(CaptureError) {
        self.path = path
        timeline = -ExportInput.earlyToleranceSeconds...(input.timelineLimitSeconds ?? .infinity)
        video = try Demuxer(input.video, mediaType: AVMEDIA_TYPE_VIDEO)
        for track in input.audio {
            audio.append(try Demuxer(track, mediaType: AVMEDIA_TYPE_AUDIO))
        }
        for demuxer in audio { decoders.append(try AudioDecoder(demuxer.stream)) }
        mixer = try Mixer(mixing: !audio.isEmpty, segmentSeconds: input.mixSegmentSeconds)
        var context: UnsafeMutablePointer<AVFormatContext>?
        var rc = avformat_alloc_output_context2(&context, nil, "mp4", path)
        guard rc >= 0, let context else { throw exportError(rc, "creating the MP4 muxer") }
        output = context
        // The mix trails the other tracks by up to a segment: let the interleaver wait for it
        // (memory: about a segment of the copied tracks) instead of writing out of order.
        context.pointee.max_interleave_delta = 0

        // Stream 0: the video, copied.
        try addCopy(of: video, title: input.video.name, disposition: AV_DISPOSITION_DEFAULT)
        // Stream 1: the mix, encoded (only when there is audio).
        if !audio.isEmpty {
            guard let stream = avformat_new_stream(context, nil) else { throw CaptureError(.encoderError, "no memory for a stream") }
            rc = avcodec_parameters_copy(stream.pointee.codecpar, mixer.parameters)
            guard rc >= 0 else { throw exportError(rc, "describing the mixed track") }
            stream.pointee.time_base = AVRational(num: 1, den: Int32(Mixer.sampleRate))
            stream.pointee.disposition = AV_DISPOSITION_DEFAULT
            Self.name(stream, "mix")
        }
        // Streams 2...: each audio channel, copied.
        for (index, demuxer) in audio.enumerated() {
            try addCopy(of: demuxer, title: input.audio[index].name, disposition: 0)
        }

        rc = avio_open(&context.pointee.pb, path, AVIO_FLAG_WRITE)
        guard rc >= 0 else { throw exportError(rc, "opening \(path)") }
        opened = true
        var options: OpaquePointer?
        av_dict_set(&options, "movflags", "+faststart", 0)
        rc = avformat_write_header(context, &options)
        av_dict_free(&options)
        guard rc >= 0 else { throw exportError(rc, "writing the MP4 header") }
    }

    private func addCopy(of demuxer: Demuxer, title: String, disposition: Int32) throws(CaptureError) {
        guard let stream = avformat_new_stream(output, nil) else { throw CaptureError(.encoderError, "no memory for a stream") }
        let rc = avcodec_parameters_copy(stream.pointee.codecpar, demuxer.stream.pointee.codecpar)
        guard rc >= 0 else { throw exportError(rc, "copying the parameters of \(title)") }
        stream.pointee.codecpar.pointee.codec_tag = 0
        stream.pointee.time_base = demuxer.stream.pointee.time_base
        stream.pointee.disposition = disposition
        Self.name(stream, title)
    }

    /// A track's name: MP4 keeps it as the handler name (what players list), "title" is
    /// what other muxers read.
    static func name(_ stream: UnsafeMutablePointer<AVStream>, _ title: String) {
        av_dict_set(&stream.pointee.metadata, "title", title, 0)
        av_dict_set(&stream.pointee.metadata, "handler_name", title, 0)
    }

    /// Packets go out in timeline order: the input whose next packet is earliest goes next,
    /// so the muxer's interleaving queue stays short whatever the session's length.
    func run() throws(CaptureError) -> ExportSummary {
        guard let output else { throw CaptureError(.internalError, "export without an output") }
        let packet = av_packet_alloc()
        defer {
            var p = packet
            av_packet_free(&p)
        }
        guard let packet else { throw CaptureError(.encoderError, "no memory for a packet") }
        var videoPackets = 0
        var videoEnd = 0.0
        var audioPackets = [Int](repeating: 0, count: audio.count)
        let mixStream = 1
        let firstCopy = audio.isEmpty ? 1 : 2

        while true {
            // The input with the earliest pending packet.
            var best: Int? = nil  // -1 = video, i = audio i
            var bestTime: (Int64, AVRational)?
            if let t = try video.peekTime() { best = -1; bestTime = t }
            for i in audio.indices {
                if let t = try audio[i].peekTime(), bestTime == nil || av_compare_ts(t.0, t.1, bestTime!.0, bestTime!.1) < 0 {
                    best = i
                    bestTime = t
                }
            }
            guard let chosen = best, let time = bestTime else { break }
            if !timeline.contains(Double(time.0) * av_q2d(time.1)) {
                // A timestamp the declared timeline does not have: mixing or interleaving up
                // to it would size memory and work by what a client claims.
                if chosen == -1 { try video.take(into: packet) } else { try audio[chosen].take(into: packet) }
                av_packet_unref(packet)
                outsideTimeline += 1
                continue
            }
            if chosen == -1 {
                try video.take(into: packet)
                let end = packet.pointee.pts + packet.pointee.duration
                videoEnd = max(videoEnd, Double(end) * av_q2d(video.stream.pointee.time_base))
                try write(packet, from: video.stream.pointee.time_base, to: 0)
                videoPackets += 1
            } else {
                try audio[chosen].take(into: packet)
                try decoders[chosen].decode(packet)
                try write(packet, from: audio[chosen].stream.pointee.time_base, to: Int32(firstCopy + chosen))
                audioPackets[chosen] += 1
                // Mix whatever every channel has delivered.
                try mixer.encodeReady(decoders, final: false) { mixed throws(CaptureError) in
                    try write(mixed, from: AVRational(num: 1, den: Int32(Mixer.sampleRate)), to: Int32(mixStream))
                }
            }
        }
        for decoder in decoders { try decoder.flush() }
        if !audio.isEmpty {
            try mixer.encodeReady(decoders, final: true) { mixed throws(CaptureError) in
                try write(mixed, from: AVRational(num: 1, den: Int32(Mixer.sampleRate)), to: Int32(mixStream))
            }
        }
        var rc = av_interleaved_write_frame(output, nil)
        guard rc >= 0 else { throw exportError(rc, "flushing the MP4 muxer") }
        rc = av_write_trailer(output)
        guard rc >= 0 else { throw exportError(rc, "finishing the MP4") }
        return ExportSummary(durationSeconds: videoEnd, videoPackets: videoPackets, mixFrames: mixer.framesEncoded,
                             audioPackets: audioPackets, bytes: Int(avio_size(output.pointee.pb)),
                             packetsOutsideTimeline: outsideTimeline)
    }

    private func write(_ packet: UnsafeMutablePointer<AVPacket>, from timeBase: AVRational, to index: Int32) throws(CaptureError) {
        guard let output, let stream = output.pointee.streams[Int(index)] else { return }
        packet.pointee.stream_index = index
        av_packet_rescale_ts(packet, timeBase, stream.pointee.time_base)
        packet.pointee.pos = -1
        let rc = av_interleaved_write_frame(output, packet)
        guard rc >= 0 else { throw exportError(rc, "writing a packet of stream \(index)") }
    }

    deinit {
        if let output {
            if opened { avio_closep(&output.pointee.pb) }
            avformat_free_context(output)
        }
    }
}

// MARK: Reading a channel

/// One channel's chunks read as one MPEG-TS stream through FFmpeg's concat protocol.
private final class Demuxer {
    var context: UnsafeMutablePointer<AVFormatContext>?
    let stream: UnsafeMutablePointer<AVStream>
    var pending: UnsafeMutablePointer<AVPacket>?
    var hasPending = false
    var finished = false

    init(_ track: ExportInput.Track, mediaType: AVMediaType) throws(CaptureError) {
        guard !track.files.isEmpty else { throw CaptureError(.invalidRequest, "\(track.name) has no chunks to export") }
        guard track.files.allSatisfy({ !$0.contains("|") }) else {
            throw CaptureError(.invalidRequest, "a chunk path contains '|'")
        }
        var context: UnsafeMutablePointer<AVFormatContext>?
        var options: OpaquePointer?
        av_dict_set(&options, "protocol_whitelist", "concat,file", 0)
        // Probing opens a decoder for every stream it finds: only the two we export.
        av_dict_set(&options, "codec_whitelist", "h264,aac", 0)
        let format = av_find_input_format("mpegts")
        var rc = avformat_open_input(&context, "concat:" + track.files.joined(separator: "|"), format, &options)
        av_dict_free(&options)
        guard rc >= 0, let context else { throw exportError(rc, "opening the chunks of \(track.name)") }
        self.context = context
        rc = avformat_find_stream_info(context, nil)
        guard rc >= 0 else {
            var c: UnsafeMutablePointer<AVFormatContext>? = context
            avformat_close_input(&c)
            throw exportError(rc, "reading the streams of \(track.name)")
        }
        let expected = mediaType == AVMEDIA_TYPE_VIDEO ? AV_CODEC_ID_H264 : AV_CODEC_ID_AAC
        // A stream of another codec has no parameters (its decoder may not probe): named here.
        for i in 0..<Int(context.pointee.nb_streams) {
            guard let parameters = context.pointee.streams[i]?.pointee.codecpar.pointee,
                  parameters.codec_type == mediaType, parameters.codec_id != expected else { continue }
            let found = String(cString: avcodec_get_name(parameters.codec_id))
            var c: UnsafeMutablePointer<AVFormatContext>? = context
            avformat_close_input(&c)
            throw CaptureError(.invalidRequest, "\(track.name) is \(found), not \(mediaType == AVMEDIA_TYPE_VIDEO ? "H.264" : "AAC"): only what the agent records is exported")
        }
        let index = av_find_best_stream(context, mediaType, -1, -1, nil, 0)
        guard index >= 0, let stream = context.pointee.streams[Int(index)] else {
            var c: UnsafeMutablePointer<AVFormatContext>? = context
            avformat_close_input(&c)
            throw CaptureError(.invalidRequest, "\(track.name) has no \(mediaType == AVMEDIA_TYPE_VIDEO ? "video" : "audio") stream")
        }
        // Every stream of this type was checked above: the best one is H.264 or AAC.
        self.stream = stream
        pending = av_packet_alloc()
    }

    /// The next packet's decoding time, reading it if needed; nil at the end.
    func peekTime() throws(CaptureError) -> (Int64, AVRational)? {
        if !hasPending && !finished {
            guard let context, let pending else { return nil }
            while true {
                let rc = av_read_frame(context, pending)
                if rc == cffmpeg_averror_eof() {
                    finished = true
                    break
                }
                guard rc >= 0 else { throw exportError(rc, "reading a chunk") }
                if pending.pointee.stream_index == stream.pointee.index {
                    hasPending = true
                    break
                }
                av_packet_unref(pending)
            }
        }
        guard hasPending, let pending else { return nil }
        let time = pending.pointee.dts != cffmpeg_nopts_value() ? pending.pointee.dts : pending.pointee.pts
        return (time, stream.pointee.time_base)
    }

    /// Moves the pending packet into `packet`.
    func take(into packet: UnsafeMutablePointer<AVPacket>) throws(CaptureError) {
        guard hasPending, let pending else { throw CaptureError(.internalError, "no packet to take") }
        av_packet_unref(packet)
        av_packet_move_ref(packet, pending)
        hasPending = false
    }

    deinit {
        if pending != nil { av_packet_free(&pending) }
        if context != nil { avformat_close_input(&context) }
    }
}

/// Decodes one channel's AAC into float stereo placed on the timeline (`pending`).
private final class AudioDecoder {
    var context: UnsafeMutablePointer<AVCodecContext>?
    var frame: UnsafeMutablePointer<AVFrame>?
    var copy: UnsafeMutablePointer<AVPacket>?
    let timeBase: AVRational
    /// Decoded, not mixed yet.
    var pending = MixBuffer()

    init(_ stream: UnsafeMutablePointer<AVStream>) throws(CaptureError) {
        // The demuxer checked the stream is AAC; the decoder is named, not looked up by what
        // the stream says.
        guard stream.pointee.codecpar.pointee.codec_id == AV_CODEC_ID_AAC, let codec = avcodec_find_decoder(AV_CODEC_ID_AAC) else {
            throw CaptureError(.encoderError, "no AAC decoder for the audio")
        }
        context = avcodec_alloc_context3(codec)
        var rc = avcodec_parameters_to_context(context, stream.pointee.codecpar)
        guard rc >= 0 else { throw exportError(rc, "configuring the audio decoder") }
        context?.pointee.pkt_timebase = stream.pointee.time_base
        rc = avcodec_open2(context, codec, nil)
        guard rc >= 0 else { throw exportError(rc, "opening the audio decoder") }
        timeBase = stream.pointee.time_base
        frame = av_frame_alloc()
        copy = av_packet_alloc()
    }

    /// Feeds one packet (a reference to it; the caller keeps the packet).
    func decode(_ packet: UnsafeMutablePointer<AVPacket>) throws(CaptureError) {
        guard let copy else { return }
        av_packet_ref(copy, packet)
        let rc = avcodec_send_packet(context, copy)
        av_packet_unref(copy)
        guard rc >= 0 || rc == cffmpeg_averror_eagain() else { throw exportError(rc, "decoding audio") }
        try receive()
    }

    func flush() throws(CaptureError) {
        avcodec_send_packet(context, nil)
        try receive()
    }

    private func receive() throws(CaptureError) {
        guard let context, let frame else { return }
        while true {
            let rc = avcodec_receive_frame(context, frame)
            if rc == cffmpeg_averror_eagain() || rc == cffmpeg_averror_eof() { return }
            guard rc >= 0 else { throw exportError(rc, "decoding audio") }
            let count = Int(frame.pointee.nb_samples)
            let channels = Int(frame.pointee.ch_layout.nb_channels)
            guard frame.pointee.format == AV_SAMPLE_FMT_FLTP.rawValue, count > 0, channels >= 1 else {
                av_frame_unref(frame)
                throw CaptureError(.encoderError, "the audio decoder gave sample format \(frame.pointee.format), not float planar")
            }
            let l = UnsafeRawPointer(frame.pointee.extended_data[0]!).assumingMemoryBound(to: Float.self)
            let r = UnsafeRawPointer(frame.pointee.extended_data[channels > 1 ? 1 : 0]!).assumingMemoryBound(to: Float.self)
            let pts = frame.pointee.pts != cffmpeg_nopts_value() ? frame.pointee.pts : frame.pointee.best_effort_timestamp
            let position = av_rescale_q(pts, timeBase, AVRational(num: 1, den: Int32(Mixer.sampleRate)))
            pending.append(left: UnsafeBufferPointer(start: l, count: count), right: UnsafeBufferPointer(start: r, count: count),
                           at: position)
            av_frame_unref(frame)
        }
    }

    deinit {
        if frame != nil { av_frame_free(&frame) }
        if copy != nil { av_packet_free(&copy) }
        if context != nil { avcodec_free_context(&context) }
    }
}

// MARK: Mixing

/// Sums the decoded audio channels on the timeline, sample by sample, into PCM
/// segments, and has `SegmentEncoders` encode the segments as AAC on all cores.
private final class Mixer {
    static let sampleRate = 48_000
    /// A whole number of AAC frames, at least 4.
    let segmentSamples: Int64
    /// Each segment is encoded with this much of its neighbours around it, and the
    /// packets over the overlap are dropped, so the seams decode like one stream.
    static let overlap: Int64 = 2048
    static let frameSize = 1024

    /// The output stream's parameters, from an encoder configured like the segments' ones.
    var parameters: UnsafeMutablePointer<AVCodecParameters>?
    /// Mixed, not yet handed to a segment: samples from `pcmStart`.
    var pcmStart: Int64 = 0
    var left: [Float] = []
    var right: [Float] = []
    /// Mixed up to here.
    var position: Int64 = 0
    var submitted = 0
    var written = 0
    var framesEncoded = 0
    let encoders = SegmentEncoders()

    init(mixing: Bool, segmentSeconds: Double) throws(CaptureError) {
        let frames = max(4, Int64((segmentSeconds * Double(Self.sampleRate) / 1024).rounded()))
        segmentSamples = frames * 1024
        guard mixing else { return }
        let probe = try SegmentEncoders.openEncoder()
        defer {
            var e: UnsafeMutablePointer<AVCodecContext>? = probe
            avcodec_free_context(&e)
        }
        parameters = avcodec_parameters_alloc()
        let rc = avcodec_parameters_from_context(parameters, probe)
        guard rc >= 0 else { throw exportError(rc, "describing the mixed track") }
    }

    /// Mixes every frame all inputs have covered (with `final`, everything left, silence
    /// where an input has nothing), starts the segments that are complete, and hands
    /// out the packets of finished segments in order (all of them, with `final`).
    func encodeReady(_ inputs: [AudioDecoder], final: Bool,
                     _ write: (UnsafeMutablePointer<AVPacket>) throws(CaptureError) -> Void) throws(CaptureError) {
        guard parameters != nil else { return }
        let covered = inputs.map(\.pending.end).min() ?? 0
        let furthest = inputs.map(\.pending.end).max() ?? 0
        let frame = Int64(Self.frameSize)
        while position + frame <= covered || (final && position < furthest) {
            let base = left.count
            left.append(contentsOf: repeatElement(0, count: Self.frameSize))
            right.append(contentsOf: repeatElement(0, count: Self.frameSize))
            left.withUnsafeMutableBufferPointer { l in
                right.withUnsafeMutableBufferPointer { r in
                    for input in inputs {
                        input.pending.mix(into: l.baseAddress! + base, r.baseAddress! + base, from: position, count: Self.frameSize)
                    }
                    for k in base..<(base + Self.frameSize) {
                        l[k] = min(max(l[k], -1), 1)
                        r[k] = min(max(r[k], -1), 1)
                    }
                }
            }
            position += frame
            framesEncoded += 1
            for input in inputs { input.pending.discard(before: position) }
            // A segment is complete once its trailing overlap is mixed too.
            let segmentEnd = Int64(submitted + 1) * segmentSamples
            if position >= segmentEnd + Self.overlap { submit(last: false) }
        }
        if final && !left.isEmpty { submit(last: true) }
        while written < submitted {
            guard let result = final ? encoders.wait(written) : encoders.take(written) else { break }
            defer { for packet in result.packets { var p: UnsafeMutablePointer<AVPacket>? = packet; av_packet_free(&p) } }
            if let failure = result.failure { throw failure }
            for packet in result.packets { try write(packet) }
            written += 1
        }
    }

    /// Hands segment `submitted` (with its overlaps) to the encoders.
    private func submit(last: Bool) {
        let index = Int64(submitted)
        let keepFrom = index == 0 ? Int64.min : index * segmentSamples
        let keepUntil = last ? Int64.max : (index + 1) * segmentSamples
        let inputEnd = last ? pcmStart + Int64(left.count) : keepUntil + Self.overlap
        let count = Int(inputEnd - pcmStart)
        encoders.submit(index: submitted, firstSample: pcmStart, left: Array(left[0..<count]), right: Array(right[0..<count]),
                        keep: keepFrom..<keepUntil)
        submitted += 1
        // The next segment starts `overlap` before its own start.
        let nextStart = last ? inputEnd : keepUntil - Self.overlap
        let drop = Int(nextStart - pcmStart)
        left.removeFirst(drop)
        right.removeFirst(drop)
        pcmStart = nextStart
    }

    deinit {
        if parameters != nil { avcodec_parameters_free(&parameters) }
    }
}

/// Encodes PCM segments to AAC on worker threads (at most three segments' PCM
/// in flight, so memory stays at a few segments), each with an encoder of its own.
private final class SegmentEncoders: @unchecked Sendable {
    // @unchecked: `results` is only touched under its lock; the packet pointers in it
    // belong to whoever takes them out (the export thread), after the worker let go.
    struct Result {
        var packets: [UnsafeMutablePointer<AVPacket>] = []
        var failure: CaptureError?
    }

    private let results = ConditionLock<[Int: Result]>([:])
    private let slots = DispatchSemaphore(value: 3)

    static func openEncoder() throws(CaptureError) -> UnsafeMutablePointer<AVCodecContext> {
        guard let codec = avcodec_find_encoder(AV_CODEC_ID_AAC), let encoder = avcodec_alloc_context3(codec) else {
            throw CaptureError(.encoderError, "no AAC encoder")
        }
        encoder.pointee.sample_fmt = AV_SAMPLE_FMT_FLTP
        encoder.pointee.sample_rate = Int32(Mixer.sampleRate)
        av_channel_layout_default(&encoder.pointee.ch_layout, 2)
        encoder.pointee.bit_rate = 128_000
        encoder.pointee.time_base = AVRational(num: 1, den: Int32(Mixer.sampleRate))
        encoder.pointee.flags |= Int32(AV_CODEC_FLAG_GLOBAL_HEADER)
        var options: OpaquePointer?
        // The "fast" coder: about twice the speed of the default two-loop search.
        av_dict_set(&options, "aac_coder", "fast", 0)
        let rc = avcodec_open2(encoder, codec, &options)
        av_dict_free(&options)
        guard rc >= 0 else {
            var e: UnsafeMutablePointer<AVCodecContext>? = encoder
            avcodec_free_context(&e)
            throw exportError(rc, "opening the AAC encoder")
        }
        return encoder
    }

    func submit(index: Int, firstSample: Int64, left: [Float], right: [Float], keep: Range<Int64>) {
        slots.wait()
        DispatchQueue.global(qos: .userInitiated).async {
            var result = Result()
            do throws(CaptureError) {
                result.packets = try Self.encode(firstSample: firstSample, left: left, right: right, keep: keep)
            } catch {
                result.failure = error
            }
            self.results.withLock { $0[index] = result }   // and wakes `wait`
            // The slot bounds the PCM in flight; a finished segment's packets are small.
            self.slots.signal()
        }
    }

    /// Segment `index`'s result if it is done.
    func take(_ index: Int) -> Result? {
        results.withLock { $0.removeValue(forKey: index) }
    }

    /// Segment `index`'s result, waiting for it.
    func wait(_ index: Int) -> Result? {
        results.wait(until: { $0[index] != nil }) { $0.removeValue(forKey: index) } ?? nil
    }

    private static func encode(firstSample: Int64, left: [Float], right: [Float], keep: Range<Int64>) throws(CaptureError)
        -> [UnsafeMutablePointer<AVPacket>] {
        var encoder: UnsafeMutablePointer<AVCodecContext>? = try openEncoder()
        var frame = av_frame_alloc()
        var packet = av_packet_alloc()
        defer {
            avcodec_free_context(&encoder)
            av_frame_free(&frame)
            av_packet_free(&packet)
        }
        guard let context = encoder, let frame, let packet else { throw CaptureError(.encoderError, "no memory for the encoder") }
        var kept: [UnsafeMutablePointer<AVPacket>] = []
        func drain() throws(CaptureError) {
            while true {
                let rc = avcodec_receive_packet(context, packet)
                if rc == cffmpeg_averror_eagain() || rc == cffmpeg_averror_eof() { return }
                guard rc >= 0 else { throw exportError(rc, "encoding the mix") }
                if keep.contains(packet.pointee.pts), let copy = av_packet_clone(packet) { kept.append(copy) }
                av_packet_unref(packet)
            }
        }
        var offset = 0
        while offset < left.count {
            let count = min(Mixer.frameSize, left.count - offset)
            frame.pointee.nb_samples = Int32(count)
            frame.pointee.format = AV_SAMPLE_FMT_FLTP.rawValue
            frame.pointee.sample_rate = Int32(Mixer.sampleRate)
            var rc = av_channel_layout_copy(&frame.pointee.ch_layout, &context.pointee.ch_layout)
            guard rc >= 0 else { throw exportError(rc, "describing a mix frame") }
            rc = av_frame_get_buffer(frame, 0)
            guard rc >= 0 else { throw exportError(rc, "allocating a mix frame") }
            let l = UnsafeMutableRawPointer(frame.pointee.extended_data[0]!).assumingMemoryBound(to: Float.self)
            let r = UnsafeMutableRawPointer(frame.pointee.extended_data[1]!).assumingMemoryBound(to: Float.self)
            left.withUnsafeBufferPointer { l.update(from: $0.baseAddress! + offset, count: count) }
            right.withUnsafeBufferPointer { r.update(from: $0.baseAddress! + offset, count: count) }
            frame.pointee.pts = firstSample + Int64(offset)
            rc = avcodec_send_frame(context, frame)
            av_frame_unref(frame)
            guard rc >= 0 else { throw exportError(rc, "encoding the mix") }
            try drain()
            offset += count
        }
        avcodec_send_frame(context, nil)
        try drain()
        return kept
    }
}

/// One input's decoded samples not yet mixed: blocks on the timeline (sample positions), in
/// order, never overlapping. A gap between two blocks is silence that is not stored, so the
/// memory is what was decoded and not mixed yet, whatever the timestamps claim.
struct MixBuffer {
    struct Block {
        var start: Int64
        var left: [Float]
        var right: [Float]
        var end: Int64 { start + Int64(left.count) }
    }

    private(set) var blocks: [Block] = []
    /// Everything before this has been appended (or skipped as an overlap).
    private(set) var end: Int64 = 0

    /// Appends a block that begins at `position`; a gap before it stays empty (silence), an
    /// overlap with what came before is dropped.
    mutating func append(left blockLeft: UnsafeBufferPointer<Float>, right blockRight: UnsafeBufferPointer<Float>, at position: Int64) {
        let skip = position < end ? Int(min(end - position, Int64(blockLeft.count))) : 0
        guard skip < blockLeft.count else { return }
        let start = max(position, end)
        if let last = blocks.indices.last, blocks[last].end == start {
            blocks[last].left.append(contentsOf: blockLeft[skip...])
            blocks[last].right.append(contentsOf: blockRight[skip...])
        } else {
            blocks.append(Block(start: start, left: Array(blockLeft[skip...]), right: Array(blockRight[skip...])))
        }
        end = start + Int64(blockLeft.count - skip)
    }

    /// Adds `count` samples from `position` into the planes (silence where there are none).
    func mix(into l: UnsafeMutablePointer<Float>, _ r: UnsafeMutablePointer<Float>, from position: Int64, count: Int) {
        let until = position + Int64(count)
        for block in blocks {
            if block.end <= position { continue }
            if block.start >= until { break }
            let first = max(position, block.start)
            let last = min(until, block.end)
            for p in first..<last {
                l[Int(p - position)] += block.left[Int(p - block.start)]
                r[Int(p - position)] += block.right[Int(p - block.start)]
            }
        }
    }

    mutating func discard(before position: Int64) {
        while let first = blocks.first, first.end <= position { blocks.removeFirst() }
        guard !blocks.isEmpty, blocks[0].start < position else { return }
        let n = Int(position - blocks[0].start)
        blocks[0].left.removeFirst(n)
        blocks[0].right.removeFirst(n)
        blocks[0].start = position
    }

    /// Samples held (what the buffer costs).
    var heldSamples: Int { blocks.reduce(0) { $0 + $1.left.count } }
}

private func exportError(_ code: Int32, _ what: String) -> CaptureError {
    var text = [CChar](repeating: 0, count: 256)
    av_strerror(code, &text, text.count)
    let message = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return CaptureError(.encoderError, "\(what) failed: \(message) (AVERROR \(code))")
}
