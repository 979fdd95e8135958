import CaptureCore
import CaptureTestSupport
import Foundation
@testable import MediaEncoding
import XCTest

final class VideoEncodingTests: TemporaryDirectoryTestCase {

    struct Chunk {
        var path: String; var firstPTS: Int64; var pts: [Int64]; var keyframes: [Bool]
        var firstPacketNALTypes: [UInt8] = []
    }

    /// H.264 NAL unit types in an Annex B packet, in order.
    private static func nalTypes(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var types: [UInt8] = []
        var i = 0
        while i + 3 < bytes.count {
            if bytes[i] == 0 && bytes[i + 1] == 0 && bytes[i + 2] == 1 {
                types.append(bytes[i + 3] & 0x1F)
                i += 3
            } else {
                i += 1
            }
        }
        return types
    }

    /// Encodes `chunks` chunks of `framesPerChunk` frames of a moving box, a
    /// forced IDR at each chunk start, and writes each chunk to its own file.
    private func encodeChunks(width: Int, height: Int, settings: VideoEncoderSettings = VideoEncoderSettings(),
                              chunks: Int = 3, framesPerChunk: Int = 30, firstPTS: Int64,
                              partialUpdates: Bool = true) throws -> (VideoEncoder, [Chunk]) {
        let encoder = try VideoEncoder(sourceWidth: width, sourceHeight: height, settings: settings)
        let muxer = try TSChunkMuxer(stream: encoder.stream)
        let image = TestImage(width: width, height: height)
        let step = Ticks90k.hz / Int64(settings.fps)
        var result: [Chunk] = []
        var n = 0
        for c in 0..<chunks {
            try muxer.beginChunk()
            var chunk = Chunk(path: directory.appendingPathComponent("v\(c).ts").path, firstPTS: 0, pts: [], keyframes: [])
            for i in 0..<framesPerChunk {
                if n == 0 || !partialUpdates {
                    image.drawMoving(frame: n)
                    encoder.updatePicture(from: image.view, dirty: nil)
                } else {
                    encoder.updatePicture(from: image.view, dirty: image.advance(to: n))
                }
                try encoder.encode(pts: Ticks90k(ticks: firstPTS + Int64(n) * step), keyframe: i == 0) { (packet) throws(CaptureError) in
                    if chunk.pts.isEmpty { chunk.firstPacketNALTypes = packet.withUnsafeBytes { Self.nalTypes($0) } }
                    chunk.pts.append(packet.pts)
                    chunk.keyframes.append(packet.isKeyframe)
                    try muxer.write(packet)
                }
                n += 1
            }
            if c == chunks - 1 {
                try encoder.flush { (packet) throws(CaptureError) in
                    chunk.pts.append(packet.pts)
                    chunk.keyframes.append(packet.isKeyframe)
                    try muxer.write(packet)
                }
            }
            chunk.firstPTS = muxer.chunkFirstPTS ?? -1
            let bytes = try muxer.finishChunk()
            try Data(bytes).write(to: URL(fileURLWithPath: chunk.path))
            result.append(chunk)
        }
        return (encoder, result)
    }

    func testThreeChunksDecodeAloneAndConcatenated() throws {
        let firstPTS: Int64 = 7_654_321     // ~85 s into a session: timestamps must stay verbatim
        let (encoder, chunks) = try encodeChunks(width: 640, height: 360, firstPTS: firstPTS)
        XCTAssertEqual(encoder.outputWidth, 640)
        XCTAssertEqual(encoder.outputHeight, 360)
        XCTAssertEqual(encoder.stream.codecName, "h264")
        XCTAssertEqual(encoder.stream.timeBaseDenominator, 90_000)

        var concatenated = Data()
        for (c, chunk) in chunks.enumerated() {
            // zerolatency: one packet per frame, at once, IDR exactly where asked.
            XCTAssertEqual(chunk.pts.count, 30, "chunk \(c)")
            XCTAssertEqual(chunk.keyframes, [true] + Array(repeating: false, count: 29), "chunk \(c)")
            XCTAssertEqual(chunk.firstPTS, firstPTS + Int64(c * 30) * 3000)
            // Access unit delimiter, then SPS and PPS, then the IDR slice(s).
            let nals = chunk.firstPacketNALTypes
            XCTAssertEqual(nals.first, 9, "chunk \(c) first packet NALs \(nals)")
            let sps = nals.firstIndex(of: 7), pps = nals.firstIndex(of: 8), idr = nals.firstIndex(of: 5)
            XCTAssertNotNil(sps, "chunk \(c): SPS in front of the IDR, NALs \(nals)")
            XCTAssertNotNil(pps, "chunk \(c): PPS in front of the IDR, NALs \(nals)")
            if let sps, let pps, let idr { XCTAssertTrue(sps < idr && pps < idr, "NALs \(nals)") } else { XCTFail("no IDR slice: \(nals)") }

            let s = try Tools.probeStream(chunk.path)
            XCTAssertEqual(s.codec, "h264")
            XCTAssertEqual(s.width, 640)
            XCTAssertEqual(s.height, 360)
            XCTAssertEqual(s.frames, 30, "chunk \(c) decoded frame count")
            XCTAssertEqual(s.startTime, Double(chunk.firstPTS) / 90_000, accuracy: 1e-6, "chunk \(c) start_time")

            let packets = try Tools.packets(chunk.path)
            XCTAssertEqual(packets.map(\.pts), chunk.pts, "chunk \(c): pts written verbatim")
            XCTAssertEqual(packets.map(\.dts), chunk.pts, "chunk \(c): dts == pts (no B-frames)")
            XCTAssertEqual(packets.first?.key, true, "chunk \(c) starts with a keyframe")
            XCTAssertEqual(try Media.decodeErrors(chunk.path), "", "chunk \(c) decodes on its own")

            concatenated.append(try assertSelfContainedChunk(chunk.path, index: c))
        }

        let all = directory.appendingPathComponent("all.ts").path
        try concatenated.write(to: URL(fileURLWithPath: all))
        XCTAssertEqual(try Media.decodeErrors(all), "", "concatenated chunks decode without a message")
        XCTAssertEqual(try TransportStreamSummary(concatenated).continuityBreaks, [],
                       "continuity counters run on across chunks")
        let packets = try Tools.packets(all)
        XCTAssertEqual(packets.count, 90)
        for i in 1..<packets.count {
            XCTAssertEqual(packets[i].pts - packets[i - 1].pts, 3000, "pts continuous at packet \(i)")
        }
        XCTAssertEqual(packets.first?.pts, firstPTS)
        let s = try Tools.probeStream(all)
        XCTAssertEqual(s.frames, 90)
        XCTAssertEqual(s.startTime, Double(firstPTS) / 90_000, accuracy: 1e-6)
    }

    func testSessionStartingAtZero() throws {
        let (_, chunks) = try encodeChunks(width: 320, height: 240, chunks: 2, framesPerChunk: 15, firstPTS: 0)
        let s0 = try Tools.probeStream(chunks[0].path)
        XCTAssertEqual(s0.startTime, 0, accuracy: 1e-9, "no muxer delay added")
        let s1 = try Tools.probeStream(chunks[1].path)
        XCTAssertEqual(s1.startTime, 0.5, accuracy: 1e-6)
    }

    func testOddSourceIsCroppedToEven() throws {
        let width = 1366, height = 767
        let encoder = try VideoEncoder(sourceWidth: width, sourceHeight: height, settings: VideoEncoderSettings())
        XCTAssertEqual(encoder.outputWidth, 1366)
        XCTAssertEqual(encoder.outputHeight, 766)
        XCTAssertEqual(encoder.stream.width, 1366)
        XCTAssertEqual(encoder.stream.height, 766)
        let muxer = try TSChunkMuxer(stream: encoder.stream)
        let image = TestImage(width: width, height: height, rowPadding: 8)
        image.fill(PixelRect(x: 0, y: 0, width: width, height: height), r: 255, g: 0, b: 0)
        // The last row is outside the even output; it must not show.
        image.fill(PixelRect(x: 0, y: height - 1, width: width, height: 1), r: 0, g: 255, b: 0)
        encoder.updatePicture(from: image.view, dirty: nil)
        try muxer.beginChunk()
        for i in 0..<5 {
            try encoder.encode(pts: Ticks90k(ticks: Int64(i) * 3000), keyframe: i == 0) { (p) throws(CaptureError) in try muxer.write(p) }
        }
        let path = directory.appendingPathComponent("odd.ts").path
        try Data(try muxer.finishChunk()).write(to: URL(fileURLWithPath: path))
        let s = try Tools.probeStream(path)
        XCTAssertEqual(s.width, 1366)
        XCTAssertEqual(s.height, 766)
        XCTAssertEqual(s.frames, 5)
        XCTAssertEqual(try Media.decodeErrors(path), "")
        // Colours survive (BT.709 conversion and VUI tags agree): red stays red, bottom row too.
        let rgb = try Tools.decodeFirstFrameRGB(path)
        XCTAssertEqual(rgb.count, 1366 * 766 * 3)
        for (x, y) in [(683, 383), (10, 765), (1365, 765), (0, 0)] {
            let i = (y * 1366 + x) * 3
            XCTAssertEqual(Double(rgb[i]), 255, accuracy: 12, "R at \(x),\(y)")
            XCTAssertEqual(Double(rgb[i + 1]), 0, accuracy: 12, "G at \(x),\(y)")
            XCTAssertEqual(Double(rgb[i + 2]), 0, accuracy: 12, "B at \(x),\(y)")
        }
    }

    func testMaxHeightDownscales() throws {
        let (encoder, chunks) = try encodeChunks(width: 1280, height: 720, settings: VideoEncoderSettings(maxHeight: 360),
                                                 chunks: 1, framesPerChunk: 10, firstPTS: 90_000)
        XCTAssertEqual(encoder.outputWidth, 640)
        XCTAssertEqual(encoder.outputHeight, 360)
        let s = try Tools.probeStream(chunks[0].path)
        XCTAssertEqual(s.width, 640)
        XCTAssertEqual(s.height, 360)
        XCTAssertEqual(s.frames, 10)
        XCTAssertEqual(try Media.decodeErrors(chunks[0].path), "")
        // Odd source with odd scaled width: 1001x563 at max 300 -> 534x300 (both even).
        let odd = try VideoEncoder(sourceWidth: 1001, sourceHeight: 563, settings: VideoEncoderSettings(maxHeight: 301))
        XCTAssertEqual(odd.outputHeight, 300)
        XCTAssertEqual(odd.outputWidth % 2, 0)
        XCTAssertEqual(Double(odd.outputWidth), 1001.0 * 300 / 563, accuracy: 2)
    }

    func testBitrateModeWithoutZerolatencyHasNoDelay() throws {
        // No zerolatency tune, a slower preset, ABR: still one packet per encode() at once,
        // and forced IDRs land on the asked frames.
        let settings = VideoEncoderSettings(fps: 25, preset: "veryfast", tune: nil, crf: nil, bitrate: 800_000)
        let (_, chunks) = try encodeChunks(width: 320, height: 240, settings: settings,
                                           chunks: 2, framesPerChunk: 25, firstPTS: 36_000, partialUpdates: false)
        for c in chunks { XCTAssertEqual(c.pts.count, 25) }
        let pts = chunks.flatMap(\.pts), keys = chunks.flatMap(\.keyframes)
        XCTAssertEqual(pts, (0..<50).map { 36_000 + Int64($0) * 3600 })
        for (i, k) in keys.enumerated() { XCTAssertEqual(k, i % 25 == 0, "keyframe flag of frame \(i)") }
        let all = directory.appendingPathComponent("abr.ts")
        var data = Data()
        for c in chunks { data.append(try Data(contentsOf: URL(fileURLWithPath: c.path))) }
        try data.write(to: all)
        XCTAssertEqual(try Media.decodeErrors(all.path), "")
        XCTAssertEqual(try Tools.probeStream(all.path).frames, 50)
    }

    func testIrregularTimestampsPassThroughVerbatim() throws {
        // Dropped frames and jitter: pts/dts of every packet equal what was asked.
        let encoder = try VideoEncoder(sourceWidth: 320, sourceHeight: 240, settings: VideoEncoderSettings())
        let muxer = try TSChunkMuxer(stream: encoder.stream)
        let image = TestImage(width: 320, height: 240)
        let asked: [Int64] = [1000, 4001, 7000, 16_000, 19_001, 22_003, 40_000, 43_000, 90_000, 93_003]
        var got: [(Int64, Int64)] = []
        try muxer.beginChunk()
        for (i, pts) in asked.enumerated() {
            image.drawMoving(frame: i)
            encoder.updatePicture(from: image.view, dirty: nil)
            try encoder.encode(pts: Ticks90k(ticks: pts), keyframe: i == 0) { (p) throws(CaptureError) in
                got.append((p.pts, p.dts))
                try muxer.write(p)
            }
        }
        XCTAssertEqual(got.map(\.0), asked)
        XCTAssertEqual(got.map(\.1), asked)
        let path = directory.appendingPathComponent("irregular.ts").path
        try Data(try muxer.finishChunk()).write(to: URL(fileURLWithPath: path))
        XCTAssertEqual(try Tools.packets(path).map(\.pts), asked)
        XCTAssertEqual(try Media.decodeErrors(path), "")
    }

    func testChunkMustStartWithKeyframe() throws {
        let encoder = try VideoEncoder(sourceWidth: 64, sourceHeight: 64, settings: VideoEncoderSettings())
        let muxer = try TSChunkMuxer(stream: encoder.stream)
        let image = TestImage(width: 64, height: 64)
        encoder.updatePicture(from: image.view, dirty: nil)
        try muxer.beginChunk()
        try encoder.encode(pts: Ticks90k(ticks: 0), keyframe: true) { (p) throws(CaptureError) in try muxer.write(p) }
        _ = try muxer.finishChunk()
        try muxer.beginChunk()
        XCTAssertThrowsError(
            try encoder.encode(pts: Ticks90k(ticks: 3000), keyframe: false) { (p) throws(CaptureError) in try muxer.write(p) }
        ) { error in
            XCTAssertEqual((error as? CaptureError)?.code, .internalError)
        }
    }

    func testInvalidSettingsAreRejected() {
        XCTAssertThrowsError(try VideoEncoder(sourceWidth: 640, sourceHeight: 480, settings: VideoEncoderSettings(fps: 0))) {
            XCTAssertEqual(($0 as? CaptureError)?.code, .invalidRequest)
        }
        XCTAssertThrowsError(try VideoEncoder(sourceWidth: 1, sourceHeight: 480, settings: VideoEncoderSettings())) {
            XCTAssertEqual(($0 as? CaptureError)?.code, .invalidRequest)
        }
        XCTAssertThrowsError(try VideoEncoder(sourceWidth: 640, sourceHeight: 480,
                                              settings: VideoEncoderSettings(preset: "no-such-preset"))) {
            let e = $0 as? CaptureError
            XCTAssertEqual(e?.code, .encoderError)
            XCTAssertTrue(e?.message.contains("no-such-preset") ?? false, e?.message ?? "")
        }
    }
}
