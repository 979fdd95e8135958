internal import CFFmpeg
import CaptureCore
import CaptureConcurrency
import Dispatch
internal import FFmpegObjects

/// Encodes PCM segments to AAC on worker threads (at most three segments' PCM
/// in flight, so memory stays at a few segments), each with an encoder of its own.
final class SegmentEncoders: @unchecked Sendable {
    // @unchecked: `results` is only touched under its lock; the packet lists in it
    // belong to whoever takes them out (the export thread), after the worker let go.
    struct Result {
        /// The segment's packets without the overlaps, freed with the list.
        var packets: FFPacketList
        var failure: CaptureError?
    }

    private let results = ConditionLock<[Int: Result]>([:])
    private let slots = DispatchSemaphore(value: 3)

    static func openEncoder() throws(CaptureError) -> FFCodecContext {
        guard let codec = avcodec_find_encoder(AV_CODEC_ID_AAC) else {
            throw CaptureError(.encoderError, "no AAC encoder")
        }
        let context = try FFCodecContext(codec: codec)
        let encoder = context.raw
        encoder.pointee.sample_fmt = AV_SAMPLE_FMT_FLTP
        encoder.pointee.sample_rate = Int32(Mixer.sampleRate)
        av_channel_layout_default(&encoder.pointee.ch_layout, 2)
        encoder.pointee.bit_rate = 128_000
        encoder.pointee.time_base = AVRational(num: 1, den: Int32(Mixer.sampleRate))
        encoder.pointee.flags |= Int32(AV_CODEC_FLAG_GLOBAL_HEADER)
        var options = FFDictionary()
        // The "fast" coder: about twice the speed of the default two-loop search.
        try options.set("aac_coder", "fast")
        let rc = avcodec_open2(encoder, codec, &options.raw)
        guard rc >= 0 else { throw ffmpegError(rc, "opening the AAC encoder") }
        return context
    }

    func submit(index: Int, firstSample: Int64, left: [Float], right: [Float], keep: Range<Int64>) {
        slots.wait()
        DispatchQueue.global(qos: .userInitiated).async {
            let result: Result
            do throws(CaptureError) {
                result = Result(packets: try Self.encode(firstSample: firstSample, left: left, right: right, keep: keep))
            } catch {
                result = Result(packets: FFPacketList(), failure: error)
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
        -> FFPacketList {
        // The segment's own encoder, and the frame and packet reused for all its frames.
        let encoder = try openEncoder()
        let reusedFrame = try FFFrame()
        let reusedPacket = try FFPacket()
        let kept = FFPacketList()
        func drain() throws(CaptureError) {
            let packet = reusedPacket.raw
            while true {
                let rc = avcodec_receive_packet(encoder.raw, packet)
                if rc == cffmpeg_averror_eagain() || rc == cffmpeg_averror_eof() { return }
                guard rc >= 0 else { throw ffmpegError(rc, "encoding the mix") }
                if keep.contains(packet.pointee.pts) { try kept.append(referencing: packet) }
                av_packet_unref(packet)
            }
        }
        let context = encoder.raw, frame = reusedFrame.raw
        var offset = 0
        while offset < left.count {
            let count = min(Mixer.frameSize, left.count - offset)
            frame.pointee.nb_samples = Int32(count)
            frame.pointee.format = AV_SAMPLE_FMT_FLTP.rawValue
            frame.pointee.sample_rate = Int32(Mixer.sampleRate)
            var rc = av_channel_layout_copy(&frame.pointee.ch_layout, &context.pointee.ch_layout)
            guard rc >= 0 else { throw ffmpegError(rc, "describing a mix frame") }
            rc = av_frame_get_buffer(frame, 0)
            guard rc >= 0 else { throw ffmpegError(rc, "allocating a mix frame") }
            let l = UnsafeMutableRawPointer(frame.pointee.extended_data[0]!).assumingMemoryBound(to: Float.self)
            let r = UnsafeMutableRawPointer(frame.pointee.extended_data[1]!).assumingMemoryBound(to: Float.self)
            left.withUnsafeBufferPointer { l.update(from: $0.baseAddress! + offset, count: count) }
            right.withUnsafeBufferPointer { r.update(from: $0.baseAddress! + offset, count: count) }
            frame.pointee.pts = firstSample + Int64(offset)
            rc = avcodec_send_frame(context, frame)
            av_frame_unref(frame)
            guard rc >= 0 else { throw ffmpegError(rc, "encoding the mix") }
            try drain()
            offset += count
        }
        avcodec_send_frame(context, nil)
        try drain()
        return kept
    }
}
