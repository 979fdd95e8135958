import CaptureCore
import CaptureSpool
import MediaEncoding
import Synchronization

/// Cuts one channel's packets into self-contained MPEG-TS chunks on a fixed
/// grid of the session timeline (chunk k covers [k*D, (k+1)*D)) and hands each
/// finished chunk to the spool. Runs on the channel's encoder queue.
///
/// `Timestamp` is the stream's time base (`Ticks90k` for video, `SampleFrames` for audio): the
/// packets' raw pts become that type here, once, and only `MediaTime` (nanoseconds) reaches the
/// grid and the chunk metadata.
final class Chunker<Timestamp: StreamTimestamp> {
    private let muxer: TSChunkMuxer
    private let outlet: ChannelOutlet
    private let chunkDuration: MediaTime
    private let stats: ChannelStats
    /// Packet length to assume when the encoder does not say (one frame).
    private let nominalPacketDuration: Timestamp
    /// Close a chunk as soon as a packet reaches the end of its grid cell, instead of
    /// when the first packet of the next one arrives. For audio, whose packets run back
    /// to back: the chunk is complete then, and waiting for the next packet would add one
    /// AAC frame plus the encoder's look-ahead (and often a capture batch) to every
    /// chunk's way to the endpoint. Not while flushing at the stop: the last packets
    /// come out of the encoder there, and the chunk they end is the final one.
    private let closesAtGridEnd: Bool
    private var flushing = false

    private var isOpen = false
    private var seq = 0
    private var chunkIndex: Int64 = 0
    private var start = MediaTime.zero
    private var end = MediaTime.zero
    private var frames = 0

    init(muxer: TSChunkMuxer, outlet: ChannelOutlet, chunkDuration: MediaTime, nominalPacketDuration: Timestamp,
         stats: ChannelStats, closesAtGridEnd: Bool = false) {
        // Once per channel: a muxer whose packets are in another time base than `Timestamp`
        // would put every chunk boundary in the wrong place.
        precondition(Int64(muxer.stream.timeBaseDenominator) == Timestamp.rate,
                     "a \(Timestamp.self) chunker for a stream in 1/\(muxer.stream.timeBaseDenominator) s")
        self.nominalPacketDuration = nominalPacketDuration
        self.closesAtGridEnd = closesAtGridEnd
        self.muxer = muxer
        self.outlet = outlet
        self.chunkDuration = chunkDuration
        self.stats = stats
    }

    /// Which chunk a timestamp falls into.
    @inline(__always)
    func chunkIndex(of pts: Timestamp) -> Int64 {
        pts.mediaTime / chunkDuration
    }

    func write(_ packet: borrowing EncodedPacket) throws(CaptureError) {
        let pts = Timestamp(streamUnits: packet.pts)
        let index = chunkIndex(of: pts)
        let ptsTime = pts.mediaTime
        if isOpen && index > chunkIndex {
            try close(nextStart: ptsTime, isFinal: false)
        }
        if !isOpen {
            try muxer.beginChunk()
            isOpen = true
            chunkIndex = index
            start = ptsTime
            frames = 0
        }
        try muxer.write(packet)
        frames += 1
        let duration = packet.duration > 0 ? Timestamp(streamUnits: packet.duration) : nominalPacketDuration
        end = ptsTime + duration.mediaTime
        stats.encoded.add(1, ordering: .relaxed)
        if closesAtGridEnd && !flushing && end >= chunkDuration * (chunkIndex + 1) {
            // The next packet starts where this one ends: the same duration the next start would give.
            try close(nextStart: end, isFinal: false)
        }
    }

    /// Drains `encoder` and ends the open chunk, if any, as the channel's last.
    func finish(flushing encoder: some FlushableEncoder) throws(CaptureError) {
        flushing = true
        try encoder.flush { (packet) throws(CaptureError) in try write(packet) }
        if isOpen { try close(nextStart: nil, isFinal: true) }
    }

    private func close(nextStart: MediaTime?, isFinal: Bool) throws(CaptureError) {
        let bytes = try muxer.finishChunk()
        // Chunks tile the timeline: a chunk lasts until the next one starts.
        let duration = (nextStart ?? end) - start
        let info = ChunkInfo(seq: seq, startPtsNs: start.nanoseconds, durationNs: duration.nanoseconds, frames: frames,
                             isFinal: isFinal)
        try outlet.submit(bytes, info: info)
        seq += 1
        isOpen = false
    }
}

/// An encoder that may still hold packets when its input ends.
protocol FlushableEncoder {
    func flush(emit: (borrowing EncodedPacket) throws(CaptureError) -> Void) throws(CaptureError)
}

extension VideoEncoder: FlushableEncoder {}
extension AudioEncoder: FlushableEncoder {}
