import CaptureCore
import CaptureTestSupport
import Foundation
@testable import MediaEncoding
import XCTest

final class AudioEncodingTests: TemporaryDirectoryTestCase {

    struct Chunk { var path: String; var firstPTS: Int64; var pts: [Int64] }

    /// A `frequency` Hz sine of `amplitude` on both channels, sample n at session time (start + n)/48000.
    private func encodeSine(frequency: Double, amplitude: Float, startSample: Int64,
                            chunks: Int = 3, blocksPerChunk: Int = 47) throws -> (AudioEncoder, [Chunk]) {
        let encoder = try AudioEncoder(bitrate: 128_000)
        XCTAssertEqual(encoder.frameSize, 1024)
        let muxer = try TSChunkMuxer(stream: encoder.stream)
        var block = [Float](repeating: 0, count: 2048)
        var result: [Chunk] = []
        var n: Int64 = 0
        for c in 0..<chunks {
            try muxer.beginChunk()
            var chunk = Chunk(path: directory.appendingPathComponent("a\(c).ts").path, firstPTS: -1, pts: [])
            let emit = { (packet: borrowing EncodedPacket) throws(CaptureError) -> Void in
                chunk.pts.append(packet.pts)
                try muxer.write(packet)
            }
            for _ in 0..<blocksPerChunk {
                for i in 0..<1024 {
                    let t = Double(startSample + n + Int64(i)) / 48_000
                    let v = amplitude * Float(sin(2 * Double.pi * frequency * t))
                    block[2 * i] = v
                    block[2 * i + 1] = v
                }
                try block.withUnsafeBufferPointer { (samples) throws(CaptureError) in
                    try encoder.encode(interleaved: samples, pts: SampleFrames(frames: startSample + n), emit: emit)
                }
                n += 1024
            }
            if c == chunks - 1 { try encoder.flush(emit: emit) }
            chunk.firstPTS = muxer.chunkFirstPTS ?? -1
            try Data(try muxer.finishChunk()).write(to: URL(fileURLWithPath: chunk.path))
            result.append(chunk)
        }
        return (encoder, result)
    }

    func testSineInThreeChunks() throws {
        let (encoder, chunks) = try encodeSine(frequency: 440, amplitude: 0.5, startSample: 0)
        XCTAssertEqual(encoder.stream.codecName, "aac")
        XCTAssertEqual(encoder.stream.sampleRate, 48_000)
        XCTAssertEqual(encoder.stream.channelCount, 2)
        XCTAssertEqual(encoder.primingSamples, 1024)
        // Session starts at 0: the one priming packet (pts -1024) is dropped, nothing negative leaks.
        XCTAssertEqual(encoder.droppedPrimingPackets, 1)
        XCTAssertEqual(chunks[0].pts.first, 0)
        let allPTS = chunks.flatMap(\.pts)
        XCTAssertTrue(allPTS.allSatisfy { $0 >= 0 })
        for i in 1..<allPTS.count { XCTAssertEqual(allPTS[i] - allPTS[i - 1], 1024, "pts step at \(i)") }

        var concatenated = Data()
        for (c, chunk) in chunks.enumerated() {
            let s = try Tools.probeStream(chunk.path)
            XCTAssertEqual(s.codec, "aac")
            XCTAssertEqual(s.sampleRate, 48_000)
            XCTAssertEqual(s.channels, 2)
            XCTAssertEqual(s.frames, chunk.pts.count, "chunk \(c) decoded frame count")
            XCTAssertEqual(s.startTime, Double(chunk.firstPTS) / 48_000, accuracy: 1.0 / 90_000, "chunk \(c) start_time")
            XCTAssertEqual(try Media.decodeErrors(chunk.path), "", "chunk \(c) decodes on its own")
            concatenated.append(try assertSelfContainedChunk(chunk.path, index: c))
        }
        let all = directory.appendingPathComponent("all.ts").path
        try concatenated.write(to: URL(fileURLWithPath: all))
        XCTAssertEqual(try Media.decodeErrors(all), "")
        XCTAssertEqual(try TransportStreamSummary(concatenated).continuityBreaks, [])
        let packets = try Tools.packets(all)
        XCTAssertEqual(packets.count, allPTS.count)
        XCTAssertEqual(packets.map(\.pts), allPTS.map { $0 * 90_000 / 48_000 }, "pts continuous, in 90 kHz")

        let samples = try Tools.decodeAudio(all)
        XCTAssertGreaterThanOrEqual(samples.count, 3 * 47 * 1024)
        let middle = samples[4096..<(samples.count - 4096)]
        XCTAssertEqual(Media.dominantFrequency(samples: middle), 440, accuracy: 2)
        // 0.5 amplitude sine: RMS 0.354 = -9.03 dBFS.
        XCTAssertEqual(Media.rmsDB(samples: middle), -9.03, accuracy: 0.5)
        // Timing: decoded sample i is at start_time + i/48000 = i/48000; the tone's phase
        // there must match the input's (sin, phase 0), i.e. priming did not shift audio.
        var inPhase = 0.0, quadrature = 0.0
        for (k, x) in zip(middle.indices, middle) {
            let t = Double(k) / 48_000
            inPhase += Double(x) * sin(2 * Double.pi * 440 * t)
            quadrature += Double(x) * cos(2 * Double.pi * 440 * t)
        }
        let phase = atan2(quadrature, inPhase)
        XCTAssertEqual(phase, 0, accuracy: 0.1, "phase error \(phase) rad = \(phase / (2 * .pi * 440) * 48_000) samples")
    }

    func testLateStartKeepsTimestampsVerbatim() throws {
        // Audio that starts 10 s (+37 samples) into the session: pts >= 0 from the
        // start, so nothing is dropped; the priming packet sits 1024 samples early.
        let start: Int64 = 480_037
        let (encoder, chunks) = try encodeSine(frequency: 1000, amplitude: 0.25, startSample: start,
                                               chunks: 2, blocksPerChunk: 20)
        XCTAssertEqual(encoder.droppedPrimingPackets, 0)
        XCTAssertEqual(chunks[0].firstPTS, start - 1024)
        let s0 = try Tools.probeStream(chunks[0].path)
        XCTAssertEqual(s0.startTime, Double(start - 1024) / 48_000, accuracy: 1.0 / 90_000)
        let s1 = try Tools.probeStream(chunks[1].path)
        XCTAssertEqual(s1.startTime, Double(chunks[1].firstPTS) / 48_000, accuracy: 1.0 / 90_000)
        var data = Data()
        for c in chunks { data.append(try Data(contentsOf: URL(fileURLWithPath: c.path))) }
        let all = directory.appendingPathComponent("late.ts")
        try data.write(to: all)
        XCTAssertEqual(try Media.decodeErrors(all.path), "")
        let packets = try Tools.packets(all.path)
        for i in 1..<packets.count { XCTAssertEqual(packets[i].pts - packets[i - 1].pts, 1920) }
        let samples = try Tools.decodeAudio(all.path)
        XCTAssertEqual(Media.dominantFrequency(samples: samples[4096..<(samples.count - 4096)]), 1000, accuracy: 2)
    }

    func testWrongBlockSizeIsRejected() throws {
        let encoder = try AudioEncoder()
        let short = [Float](repeating: 0, count: 100)
        XCTAssertThrowsError(try short.withUnsafeBufferPointer { (s) throws(CaptureError) in
            try encoder.encode(interleaved: s, pts: SampleFrames(frames: 0)) { (_) throws(CaptureError) in }
        }) { XCTAssertEqual(($0 as? CaptureError)?.code, .invalidRequest) }
        XCTAssertThrowsError(try AudioEncoder(bitrate: 5)) {
            XCTAssertEqual(($0 as? CaptureError)?.code, .invalidRequest)
        }
    }
}
