import CaptureCore
import CaptureConcurrency
@testable import CapturePipeline
import CaptureSpool
import CaptureUplink
import Foundation
import MediaEncoding
import XCTest

/// The chunk grid, without a screen or a sound server: real encoders and a real spool, packets
/// whose times are known, and the chunk metadata checked against the arithmetic the chunker has
/// always done on raw integers (`ticks * 1e9 / rate`, truncated). Unlike the recording tests,
/// nothing here depends on how busy the machine is.
final class ChunkerTests: XCTestCase {
    /// What the chunker did before its timestamps had types, packet by packet.
    private struct LegacyModel {
        let chunkNs: Int64, rate: Int64, closesAtGridEnd: Bool
        var chunks: [(start: Int64, duration: Int64, frames: Int, isFinal: Bool)] = []
        var isOpen = false, index: Int64 = 0, start: Int64 = 0, end: Int64 = 0, frames = 0, flushing = false

        func ns(_ t: Int64) -> Int64 { t * 1_000_000_000 / rate }

        mutating func write(pts: Int64, duration: Int64) {
            let ptsNs = ns(pts)
            if isOpen && ptsNs / chunkNs > index { close(next: ptsNs, isFinal: false) }
            if !isOpen { isOpen = true; index = ptsNs / chunkNs; start = ptsNs; frames = 0 }
            frames += 1
            end = ptsNs + ns(duration)
            if closesAtGridEnd && !flushing && end >= (index + 1) * chunkNs { close(next: end, isFinal: false) }
        }

        mutating func close(next: Int64?, isFinal: Bool) {
            chunks.append(((start, (next ?? end) - start, frames, isFinal)))
            isOpen = false
        }
    }

    /// Records what a flush emits on its way to the chunker.
    private struct Tee<E: FlushableEncoder>: FlushableEncoder {
        let encoder: E
        let record: (Int64, Int64) -> Void
        func flush(emit: (borrowing EncodedPacket) throws(CaptureError) -> Void) throws(CaptureError) {
            try encoder.flush { (p) throws(CaptureError) in
                record(p.pts, p.duration)
                try emit(p)
            }
        }
    }

    private func spool(_ name: String) throws -> (SpoolWriter, ConditionLock<[ChunkMetadata]>, String) {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("capture-agent-chunker-\(getpid())-\(name)-\(UInt32.random(in: 0...UInt32.max))").path
        let collected = ConditionLock<[ChunkMetadata]>([])
        let writer = try SpoolWriter(sessionId: "chunker", sessionDirectory: dir, sessionStartMonotonic: 0,
                                     sessionStartUnixNs: 0, onChunk: { m in collected.withLock { $0.append(m) } })
        return (writer, collected, dir)
    }

    private func assertSame(_ got: [ChunkMetadata], _ model: LegacyModel, file: StaticString = #filePath, line: UInt = #line) {
        let sorted = got.sorted { $0.seq < $1.seq }
        XCTAssertEqual(sorted.count, model.chunks.count, "chunks", file: file, line: line)
        for (m, want) in zip(sorted, model.chunks) {
            XCTAssertEqual(m.startPtsNs, want.start, "chunk \(m.seq) start", file: file, line: line)
            XCTAssertEqual(m.durationNs, want.duration, "chunk \(m.seq) duration", file: file, line: line)
            XCTAssertEqual(m.frames, want.frames, "chunk \(m.seq) packets", file: file, line: line)
            XCTAssertEqual(m.isFinal, want.isFinal, "chunk \(m.seq) final", file: file, line: line)
        }
    }

    /// 30 fps frame slots rounded to ticks the way the video channel does, a stall that skips
    /// slots across a chunk boundary, and chunks of 0.7 s (not a whole number of frames).
    func testVideoChunksLieWhereTheRawArithmeticPutThem() throws {
        let (writer, collected, dir) = try spool("video")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let encoder = try VideoEncoder(sourceWidth: 64, sourceHeight: 48, settings: VideoEncoderSettings(fps: 30))
        let chunkNs: Int64 = 700_000_000
        let chunker = Chunker(muxer: try TSChunkMuxer(stream: encoder.stream),
                              outlet: try writer.addChannel(.display(1), codec: "h264"),
                              chunkDuration: MediaTime(nanoseconds: chunkNs),
                              nominalPacketDuration: Ticks90k.framePeriod(fps: 30), stats: ChannelStats(channel: .display(1)))
        var model = LegacyModel(chunkNs: chunkNs, rate: 90_000, closesAtGridEnd: false)
        var lastChunk: Int64 = -1
        let slots = Array(0..<18) + Array(23..<75)   // five slots lost to a stall around 0.7 s
        for n in slots {
            let pts = Ticks90k(rounding: .frameSlot(Int64(n), fps: 30))
            XCTAssertEqual(pts.ticks, (Int64(n) * 1_000_000_000 / 30 * 9 + 50_000) / 100_000, "slot \(n)")
            let chunk = chunker.chunkIndex(of: pts)
            defer { lastChunk = chunk }
            try encoder.encode(pts: pts, keyframe: chunk != lastChunk) { (p) throws(CaptureError) in
                model.write(pts: p.pts, duration: p.duration)
                try chunker.write(p)
            }
        }
        model.flushing = true
        try chunker.finish(flushing: Tee(encoder: encoder) { model.write(pts: $0, duration: $1) })
        if model.isOpen { model.close(next: nil, isFinal: true) }
        try writer.flush()
        XCTAssertEqual(model.chunks.count, 4)
        assertSame(collected.withLock { $0 }, model)
    }

    /// AAC blocks back to back from a start that is not on a block boundary, chunks closed at the
    /// grid's end, and the encoder's tail at the stop.
    func testAudioChunksLieWhereTheRawArithmeticPutThem() throws {
        let (writer, collected, dir) = try spool("audio")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let encoder = try AudioEncoder()
        let chunkNs: Int64 = 1_000_000_000
        let id = try ChannelID(parsing: "mic:default")
        let chunker = Chunker(muxer: try TSChunkMuxer(stream: encoder.stream),
                              outlet: try writer.addChannel(id, codec: "aac"),
                              chunkDuration: MediaTime(nanoseconds: chunkNs), nominalPacketDuration: SampleFrames.block,
                              stats: ChannelStats(channel: id), closesAtGridEnd: true)
        var model = LegacyModel(chunkNs: chunkNs, rate: 48_000, closesAtGridEnd: true)
        let block = [Float](repeating: 0.1, count: AudioFormat.blockSamples)
        try block.withUnsafeBufferPointer { samples in
            for k in 0..<150 {
                let pts = SampleFrames(frames: 1_500 + Int64(k) * 1024)
                try encoder.encode(interleaved: samples, pts: pts) { (p) throws(CaptureError) in
                    model.write(pts: p.pts, duration: p.duration)
                    try chunker.write(p)
                }
            }
        }
        model.flushing = true
        try chunker.finish(flushing: Tee(encoder: encoder) { model.write(pts: $0, duration: $1) })
        if model.isOpen { model.close(next: nil, isFinal: true) }
        try writer.flush()
        XCTAssertGreaterThanOrEqual(model.chunks.count, 3)
        assertSame(collected.withLock { $0 }, model)
    }
}
