internal import CFFmpeg
import CaptureCore
internal import FFmpegObjects

/// Decodes one channel's AAC into float stereo placed on the timeline (`pending`).
final class AudioDecoder {
    let context: FFCodecContext
    /// Reused for every decoded frame and every packet fed in.
    let frame: FFFrame
    let copy: FFPacket
    let timeBase: AVRational
    /// Decoded, not mixed yet.
    var pending = MixBuffer()

    init(_ stream: UnsafeMutablePointer<AVStream>) throws(CaptureError) {
        // The demuxer checked the stream is AAC; the decoder is named, not looked up by what
        // the stream says.
        guard stream.pointee.codecpar.pointee.codec_id == AV_CODEC_ID_AAC, let codec = avcodec_find_decoder(AV_CODEC_ID_AAC) else {
            throw CaptureError(.encoderError, "no AAC decoder for the audio")
        }
        context = try FFCodecContext(codec: codec)
        var rc = avcodec_parameters_to_context(context.raw, stream.pointee.codecpar)
        guard rc >= 0 else { throw ffmpegError(rc, "configuring the audio decoder") }
        context.raw.pointee.pkt_timebase = stream.pointee.time_base
        rc = avcodec_open2(context.raw, codec, nil)
        guard rc >= 0 else { throw ffmpegError(rc, "opening the audio decoder") }
        timeBase = stream.pointee.time_base
        frame = try FFFrame()
        copy = try FFPacket()
    }

    /// Feeds one packet (a reference to it; the caller keeps the packet).
    func decode(_ packet: UnsafeMutablePointer<AVPacket>) throws(CaptureError) {
        let copy = copy.raw
        av_packet_ref(copy, packet)
        let rc = avcodec_send_packet(context.raw, copy)
        av_packet_unref(copy)
        guard rc >= 0 || rc == cffmpeg_averror_eagain() else { throw ffmpegError(rc, "decoding audio") }
        try receive()
    }

    func flush() throws(CaptureError) {
        avcodec_send_packet(context.raw, nil)
        try receive()
    }

    private func receive() throws(CaptureError) {
        let context = context.raw, frame = frame.raw
        while true {
            let rc = avcodec_receive_frame(context, frame)
            if rc == cffmpeg_averror_eagain() || rc == cffmpeg_averror_eof() { return }
            guard rc >= 0 else { throw ffmpegError(rc, "decoding audio") }
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
}
