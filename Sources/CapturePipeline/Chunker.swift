import CaptureCore
import CaptureSpool
import MediaEncoding
import Synchronization

/// Cuts one channel's packets into self-contained MPEG-TS chunks on a fixed
/// grid of the session timeline (chunk k covers [k*D, (k+1)*D)) and hands each
/// finished chunk to the spool. Runs on the channel's encoder queue.
final class Chunker {
    private let muxer: TSChunkMuxer
    private let outlet: ChannelOutlet
    private let chunkNs: Int64
    /// Stream time base: ticks per second (90 000 for video, 48 000 for audio).
    private let ticksPerSecond: Int64
    private let stats: ChannelStats
    /// Packet length to assume when the encoder does not say (one frame).
    private let nominalPacketTicks: Int64
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
    private var startNs: Int64 = 0
    private var endNs: Int64 = 0
    private var frames = 0

    init(muxer: TSChunkMuxer, outlet: ChannelOutlet, chunkNs: Int64, ticksPerSecond: Int64, nominalPacketTicks: Int64,
         stats: ChannelStats, closesAtGridEnd: Bool = false) {
        self.nominalPacketTicks = nominalPacketTicks
        self.closesAtGridEnd = closesAtGridEnd
        self.muxer = muxer
        self.outlet = outlet
        self.chunkNs = chunkNs
        self.ticksPerSecond = ticksPerSecond
        self.stats = stats
    }

    @inline(__always)
    func nanoseconds(ticks: Int64) -> Int64 {
        ticks * 1_000_000_000 / ticksPerSecond
    }

    /// Which chunk a timestamp (stream ticks) falls into.
    @inline(__always)
    func chunkIndex(ticks: Int64) -> Int64 {
        nanoseconds(ticks: ticks) / chunkNs
    }

    func write(_ packet: borrowing EncodedPacket) throws(CaptureError) {
        let index = chunkIndex(ticks: packet.pts)
        let ptsNs = nanoseconds(ticks: packet.pts)
        if isOpen && index > chunkIndex {
            try close(nextStartNs: ptsNs, isFinal: false)
        }
        if !isOpen {
            try muxer.beginChunk()
            isOpen = true
            chunkIndex = index
            startNs = ptsNs
            frames = 0
        }
        try muxer.write(packet)
        frames += 1
        endNs = ptsNs + nanoseconds(ticks: packet.duration > 0 ? packet.duration : nominalPacketTicks)
        stats.encoded.add(1, ordering: .relaxed)
        if closesAtGridEnd && !flushing && endNs >= (chunkIndex + 1) * chunkNs {
            // The next packet starts where this one ends: the same duration the next start would give.
            try close(nextStartNs: endNs, isFinal: false)
        }
    }

    /// Drains `encoder` and ends the open chunk, if any, as the channel's last.
    func finish(flushing encoder: some FlushableEncoder) throws(CaptureError) {
        flushing = true
        try encoder.flush { (packet) throws(CaptureError) in try write(packet) }
        if isOpen { try close(nextStartNs: nil, isFinal: true) }
    }

    private func close(nextStartNs: Int64?, isFinal: Bool) throws(CaptureError) {
        let bytes = try muxer.finishChunk()
        // Chunks tile the timeline: a chunk lasts until the next one starts.
        let duration = (nextStartNs ?? endNs) - startNs
        let info = ChunkInfo(seq: seq, startPtsNs: startNs, durationNs: duration, frames: frames, isFinal: isFinal)
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
