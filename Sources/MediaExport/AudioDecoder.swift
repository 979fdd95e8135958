internal import CFFmpeg
import CaptureCore

/// Decodes one channel's AAC into float stereo placed on the timeline (`pending`).
final class AudioDecoder {
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
