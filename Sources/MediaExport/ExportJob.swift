internal import CFFmpeg
import CaptureCore
internal import FFmpegObjects

/// One export: its inputs, the mixer and the MP4 muxer, each freeing its own FFmpeg
/// objects. They do not depend on each other's (packets are reference counted apart
/// from the demuxers and encoders that made them), so they may go in any order.
final class ExportJob {
    /// The MP4 muxer and, once the header is to be written, the file it writes to
    /// (closed after the muxer is freed; `run` writes the trailer before that).
    var output: FFOutputFormatContext
    var video: Demuxer
    var audio: [Demuxer] = []
    var decoders: [AudioDecoder] = []
    var mixer: Mixer
    let path: String

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
        output = try FFOutputFormatContext(format: "mp4", path: path, step: "creating the MP4 muxer")
        let context = output.raw
        // The mix trails the other tracks by up to a segment: let the interleaver wait for it
        // (memory: about a segment of the copied tracks) instead of writing out of order.
        context.pointee.max_interleave_delta = 0

        // Stream 0: the video, copied.
        try addCopy(of: video, title: input.video.name, disposition: AV_DISPOSITION_DEFAULT)
        // Stream 1: the mix, encoded (only when there is audio).
        if !audio.isEmpty {
            guard let stream = avformat_new_stream(context, nil) else { throw CaptureError(.encoderError, "no memory for a stream") }
            let rc = avcodec_parameters_copy(stream.pointee.codecpar, mixer.parameters)
            guard rc >= 0 else { throw ffmpegError(rc, "describing the mixed track") }
            stream.pointee.time_base = AVRational(num: 1, den: Int32(Mixer.sampleRate))
            stream.pointee.disposition = AV_DISPOSITION_DEFAULT
            Self.name(stream, "mix")
        }
        // Streams 2...: each audio channel, copied.
        for (index, demuxer) in audio.enumerated() {
            try addCopy(of: demuxer, title: input.audio[index].name, disposition: 0)
        }

        output.attach(try FFIOContext(writingFile: path, step: "opening \(path)"))
        var options = FFDictionary()
        try options.set("movflags", "+faststart")
        let rc = avformat_write_header(context, &options.raw)
        guard rc >= 0 else { throw ffmpegError(rc, "writing the MP4 header") }
    }

    private func addCopy(of demuxer: Demuxer, title: String, disposition: Int32) throws(CaptureError) {
        guard let stream = avformat_new_stream(output.raw, nil) else { throw CaptureError(.encoderError, "no memory for a stream") }
        let rc = avcodec_parameters_copy(stream.pointee.codecpar, demuxer.stream.pointee.codecpar)
        guard rc >= 0 else { throw ffmpegError(rc, "copying the parameters of \(title)") }
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
        let output = output.raw
        // The one packet every input's packets pass through on their way to the muxer.
        let reused = try FFPacket()
        let packet = reused.raw
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
        guard rc >= 0 else { throw ffmpegError(rc, "flushing the MP4 muxer") }
        rc = av_write_trailer(output)
        guard rc >= 0 else { throw ffmpegError(rc, "finishing the MP4") }
        return ExportSummary(durationSeconds: videoEnd, videoPackets: videoPackets, mixFrames: mixer.framesEncoded,
                             audioPackets: audioPackets, bytes: Int(avio_size(output.pointee.pb)),
                             packetsOutsideTimeline: outsideTimeline)
    }

    private func write(_ packet: UnsafeMutablePointer<AVPacket>, from timeBase: AVRational, to index: Int32) throws(CaptureError) {
        let output = output.raw
        guard let stream = output.pointee.streams[Int(index)] else { return }
        packet.pointee.stream_index = index
        av_packet_rescale_ts(packet, timeBase, stream.pointee.time_base)
        packet.pointee.pos = -1
        let rc = av_interleaved_write_frame(output, packet)
        guard rc >= 0 else { throw ffmpegError(rc, "writing a packet of stream \(index)") }
    }
}
