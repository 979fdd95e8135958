internal import CFFmpeg
import CaptureCore
internal import FFmpegObjects

/// Sums the decoded audio channels on the timeline, sample by sample, into PCM
/// segments, and has `SegmentEncoders` encode the segments as AAC on all cores.
final class Mixer {
    static let sampleRate = 48_000
    /// A whole number of AAC frames, at least 4.
    let segmentSamples: Int64
    /// Each segment is encoded with this much of its neighbours around it, and the
    /// packets over the overlap are dropped, so the seams decode like one stream.
    static let overlap: Int64 = 2048
    static let frameSize = 1024

    /// The output stream's parameters, from an encoder configured like the segments' ones
    /// (none without audio to mix).
    private let mixParameters: FFCodecParameters?
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
        guard mixing else {
            mixParameters = nil
            return
        }
        let probe = try SegmentEncoders.openEncoder()
        let parameters = try FFCodecParameters()
        let rc = avcodec_parameters_from_context(parameters.raw, probe.raw)
        guard rc >= 0 else { throw ffmpegError(rc, "describing the mixed track") }
        mixParameters = .some(parameters)
    }

    /// The mixed track's parameters, to copy into its stream; nil when not mixing.
    var parameters: UnsafeMutablePointer<AVCodecParameters>? {
        switch mixParameters {
        case .some(let p): p.raw
        case .none: nil
        }
    }

    /// Mixes every frame all inputs have covered (with `final`, everything left, silence
    /// where an input has nothing), starts the segments that are complete, and hands
    /// out the packets of finished segments in order (all of them, with `final`).
    func encodeReady(_ inputs: [AudioDecoder], final: Bool,
                     _ write: (UnsafeMutablePointer<AVPacket>) throws(CaptureError) -> Void) throws(CaptureError) {
        guard mixParameters != nil else { return }
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
            if let failure = result.failure { throw failure }
            try result.packets.forEach(write)
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
}
