internal import CFFmpeg
import CaptureCore
internal import FFmpegObjects

/// One channel's chunks read as one MPEG-TS stream through FFmpeg's concat protocol.
final class Demuxer {
    let context: FFInputFormatContext
    /// One of `context`'s streams (valid as long as the context).
    let stream: UnsafeMutablePointer<AVStream>
    /// The packet read ahead (`peekTime`), reused for every packet.
    let pending: FFPacket
    var hasPending = false
    var finished = false

    init(_ track: ExportInput.Track, mediaType: AVMediaType) throws(CaptureError) {
        guard !track.files.isEmpty else { throw CaptureError(.invalidRequest, "\(track.name) has no chunks to export") }
        guard track.files.allSatisfy({ !$0.contains("|") }) else {
            throw CaptureError(.invalidRequest, "a chunk path contains '|'")
        }
        var options = FFDictionary()
        try options.set("protocol_whitelist", "concat,file")
        // Probing opens a decoder for every stream it finds: only the two we export.
        try options.set("codec_whitelist", "h264,aac")
        // Closed again (by its owner) if any check below refuses the input.
        let input = try FFInputFormatContext(opening: "concat:" + track.files.joined(separator: "|"),
                                             format: av_find_input_format("mpegts"), options: &options,
                                             step: "opening the chunks of \(track.name)")
        let context = input.raw
        let rc = avformat_find_stream_info(context, nil)
        guard rc >= 0 else { throw ffmpegError(rc, "reading the streams of \(track.name)") }
        let expected = mediaType == AVMEDIA_TYPE_VIDEO ? AV_CODEC_ID_H264 : AV_CODEC_ID_AAC
        // A stream of another codec has no parameters (its decoder may not probe): named here.
        for i in 0..<Int(context.pointee.nb_streams) {
            guard let parameters = context.pointee.streams[i]?.pointee.codecpar.pointee,
                  parameters.codec_type == mediaType, parameters.codec_id != expected else { continue }
            let found = String(cString: avcodec_get_name(parameters.codec_id))
            throw CaptureError(.invalidRequest, "\(track.name) is \(found), not \(mediaType == AVMEDIA_TYPE_VIDEO ? "H.264" : "AAC"): only what the agent records is exported")
        }
        let index = av_find_best_stream(context, mediaType, -1, -1, nil, 0)
        guard index >= 0, let stream = context.pointee.streams[Int(index)] else {
            throw CaptureError(.invalidRequest, "\(track.name) has no \(mediaType == AVMEDIA_TYPE_VIDEO ? "video" : "audio") stream")
        }
        // Every stream of this type was checked above: the best one is H.264 or AAC.
        self.stream = stream
        pending = try FFPacket()
        self.context = input
    }

    /// The next packet's decoding time, reading it if needed; nil at the end.
    func peekTime() throws(CaptureError) -> (Int64, AVRational)? {
        if !hasPending && !finished {
            let context = context.raw, pending = pending.raw
            while true {
                let rc = av_read_frame(context, pending)
                if rc == cffmpeg_averror_eof() {
                    finished = true
                    break
                }
                guard rc >= 0 else { throw ffmpegError(rc, "reading a chunk") }
                if pending.pointee.stream_index == stream.pointee.index {
                    hasPending = true
                    break
                }
                av_packet_unref(pending)
            }
        }
        guard hasPending else { return nil }
        let pending = pending.raw
        let time = pending.pointee.dts != cffmpeg_nopts_value() ? pending.pointee.dts : pending.pointee.pts
        return (time, stream.pointee.time_base)
    }

    /// Moves the pending packet into `packet`.
    func take(into packet: UnsafeMutablePointer<AVPacket>) throws(CaptureError) {
        guard hasPending else { throw CaptureError(.internalError, "no packet to take") }
        av_packet_unref(packet)
        av_packet_move_ref(packet, pending.raw)
        hasPending = false
    }
}
