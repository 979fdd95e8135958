import CaptureCore
import Foundation
@testable import MediaEncoding
import CaptureTestSupport
import XCTest

/// The per-macroblock "unchanged" hints (x264 mb_info) must never leave a stale
/// picture: every decoded frame must show what was fed to the encoder for that
/// very frame, including rectangles that changed only in that frame, at odd
/// positions, on the partial last macroblock row/column, and across several
/// updates between two encodes.
final class MacroblockHintTests: TemporaryDirectoryTestCase {

    // MARK: recording a sequence

    enum Step {
        /// Flip the pixels of these rectangles (dark <-> light, in source pixels) and
        /// tell the encoder exactly these rectangles changed.
        case change([PixelRect])
        /// Encode; `lie`: claim (test-only) that no macroblock changed.
        case encode(keyframe: Bool, lie: Bool = false)
    }

    /// What one encode was given: the exact YUV picture and the rectangles
    /// (output coordinates) that changed since the previous encode.
    struct EncodedFrame {
        var picture: [UInt8]
        var changed: [PixelRect]
        var unchangedMacroblocks: Int
        /// The packet was an IDR.
        var keyframe: Bool
        /// The packet was the still picture's earlier encoding sent again (KeyframeReplay).
        var replayed: Bool
    }

    struct Recording {
        var width: Int
        var height: Int
        var path: String
        var frames: [EncodedFrame]
        var bytes: Int
        /// One MPEG-TS file per chunk (a chunk starts at each encode that asks for a
        /// keyframe); `path` is their concatenation, as a channel's chunks are.
        var chunkPaths: [String]
    }

    /// Sets every pixel of `rect` to white where it is dark and to black where it
    /// is light (by luma): each changed pixel moves by at least ~128 levels.
    private static func flip(_ image: TestImage, _ rect: PixelRect) {
        let r = rect.intersection(PixelRect(x: 0, y: 0, width: image.width, height: image.height))
        if r.isEmpty { return }
        for y in Int(r.y)..<Int(r.maxY) {
            let row = (image.pixels + y * image.bytesPerRow).assumingMemoryBound(to: UInt8.self)
            for x in Int(r.x)..<Int(r.maxX) {
                let p = row + x * 4
                let luma = (Int(p[2]) * 54 + Int(p[1]) * 183 + Int(p[0]) * 19) >> 8
                let v: UInt8 = luma < 128 ? 255 : 0
                p[0] = v; p[1] = v; p[2] = v
            }
        }
    }

    /// A desktop-like background: smooth gradient, some text-like strokes.
    private static func drawBackground(_ image: TestImage) {
        image.drawMoving(frame: 0)
        var rng = SeededRNG(seed: 77)
        for _ in 0..<(image.width * image.height / 4000) {
            let x = Int.random(in: 0..<image.width, using: &rng), y = Int.random(in: 0..<image.height, using: &rng)
            let dark = Bool.random(using: &rng)
            image.fill(PixelRect(x: x, y: y, width: Int.random(in: 2...30, using: &rng), height: 2),
                       r: dark ? 20 : 240, g: dark ? 20 : 240, b: dark ? 30 : 235)
        }
    }

    private func record(width: Int, height: Int, steps: [Step], macroblockHints: Bool = true,
                        keyframeReplay: Bool = true, name: String) throws -> Recording {
        let encoder = try VideoEncoder(sourceWidth: width, sourceHeight: height, settings: VideoEncoderSettings(),
                                       macroblockHints: macroblockHints, keyframeReplay: keyframeReplay)
        let muxer = try TSChunkMuxer(stream: encoder.stream)
        let image = TestImage(width: width, height: height, rowPadding: 12)
        Self.drawBackground(image)
        encoder.updatePicture(from: image.view, dirty: nil)
        let output = PixelRect(x: 0, y: 0, width: encoder.outputWidth, height: encoder.outputHeight)
        var frames: [EncodedFrame] = []
        var pending: [PixelRect] = [output]
        var pts: Int64 = 0
        var packets = 0
        var bytes = 0
        var chunks: [[UInt8]] = []
        for step in [Step.encode(keyframe: true)] + steps {
            switch step {
            case .change(let rects):
                var dirty = DirtyRegion()
                for r in rects {
                    Self.flip(image, r)
                    dirty.add(r)
                    let clipped = r.intersection(output)
                    if !clipped.isEmpty { pending.append(clipped) }
                }
                encoder.updatePicture(from: image.view, dirty: dirty)
            case .encode(let keyframe, let lie):
                encoder.claimNothingChangedOnce = lie
                if keyframe || frames.isEmpty {
                    if !frames.isEmpty { chunks.append(Array(try muxer.finishChunk())) }
                    try muxer.beginChunk()
                }
                var got = 0
                var isKeyframe = false
                let replayedBefore = encoder.replayedFrames
                try encoder.encode(pts: Ticks90k(ticks: pts), keyframe: keyframe) { (p) throws(CaptureError) in
                    got += 1
                    bytes += p.byteCount
                    isKeyframe = p.isKeyframe
                    XCTAssertEqual(p.pts, pts)
                    // A keyframe when asked; otherwise only after a replay left x264 behind.
                    if keyframe || frames.isEmpty { XCTAssertTrue(p.isKeyframe, "encode \(frames.count): an IDR") }
                    try muxer.write(p)
                }
                XCTAssertEqual(got, 1, "one packet per encode, at once")
                packets += got
                frames.append(EncodedFrame(picture: encoder.copyPicture(), changed: pending,
                                           unchangedMacroblocks: encoder.lastUnchangedMacroblocks,
                                           keyframe: isKeyframe, replayed: encoder.replayedFrames > replayedBefore))
                pending = []
                pts += 3000
            }
        }
        try encoder.flush { (p) throws(CaptureError) in
            XCTFail("flush emitted a packet (pts \(p.pts)): the encoder had a delay")
            try muxer.write(p)
        }
        chunks.append(Array(try muxer.finishChunk()))
        let path = directory.appendingPathComponent("\(name).ts").path
        try Data(chunks.joined()).write(to: URL(fileURLWithPath: path))
        var chunkPaths: [String] = []
        for (i, chunk) in chunks.enumerated() {
            let chunkPath = directory.appendingPathComponent("\(name)-chunk\(i).ts").path
            try Data(chunk).write(to: URL(fileURLWithPath: chunkPath))
            chunkPaths.append(chunkPath)
        }
        XCTAssertEqual(packets, frames.count)
        return Recording(width: encoder.outputWidth, height: encoder.outputHeight, path: path, frames: frames,
                         bytes: bytes, chunkPaths: chunkPaths)
    }

    // MARK: checking a recording

    struct FrameCheck {
        var psnrY: Double
        /// PSNR (luma) of the worst 16x16 block.
        var worstBlockPSNR: Double
        /// Changed rectangles whose decoded pixels look like the previous picture, not this one.
        var staleRects: [PixelRect]
    }

    /// Decodes the recording with ffmpeg to raw YUV420P and compares every frame
    /// with the picture that was encoded for it.
    private func check(_ rec: Recording) throws -> [FrameCheck] {
        let r = try Tools.run("/usr/bin/ffmpeg", ["-nostdin", "-v", "error", "-i", rec.path, "-fps_mode", "passthrough",
                                                   "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        guard r.status == 0, r.stderr.isEmpty else { throw ToolError("ffmpeg decode: status \(r.status) \(r.stderr)") }
        let w = rec.width, h = rec.height
        let frameBytes = w * h * 3 / 2
        let decoded = [UInt8](r.stdout)
        XCTAssertEqual(decoded.count, frameBytes * rec.frames.count, "decoded frame count")
        guard decoded.count == frameBytes * rec.frames.count else { return [] }

        var checks: [FrameCheck] = []
        for (i, frame) in rec.frames.enumerated() {
            let dec = decoded[(i * frameBytes)..<(i * frameBytes + w * h)]
            let src = frame.picture
            XCTAssertEqual(src.count, frameBytes)
            func mse(_ a: ArraySlice<UInt8>, _ b: [UInt8], _ rect: PixelRect) -> Double {
                var sum = 0, n = 0
                let base = a.startIndex
                for y in Int(rect.y)..<Int(rect.maxY) {
                    for x in Int(rect.x)..<Int(rect.maxX) {
                        let d = Int(a[base + y * w + x]) - Int(b[y * w + x])
                        sum += d * d
                        n += 1
                    }
                }
                return Double(sum) / Double(max(1, n))
            }
            func psnr(_ m: Double) -> Double { m == 0 ? 99 : 10 * log10(255 * 255 / m) }
            let whole = PixelRect(x: 0, y: 0, width: w, height: h)
            var worst = 99.0
            for by in stride(from: 0, to: h, by: 16) {
                for bx in stride(from: 0, to: w, by: 16) {
                    let block = PixelRect(x: bx, y: by, width: 16, height: 16).intersection(whole)
                    worst = min(worst, psnr(mse(dec, src, block)))
                }
            }
            var stale: [PixelRect] = []
            if i > 0 {
                let previous = rec.frames[i - 1].picture
                for rect in frame.changed {
                    // Closer to the previous picture than to this one: the change did not show.
                    let toCurrent = mse(dec, src, rect), toPrevious = mse(dec, previous, rect)
                    if !(toCurrent * 4 < toPrevious) { stale.append(rect) }
                }
            }
            checks.append(FrameCheck(psnrY: psnr(mse(dec, src, whole)), worstBlockPSNR: worst, staleRects: stale))
        }
        return checks
    }

    /// A sequence that changes small rectangles each frame: odd positions and
    /// sizes, single pixels, the partial last macroblock column and row, the
    /// bottom-right corner, several updates between two encodes, repeated
    /// frames (no update), and a forced IDR in the middle.
    private func changingSequence(width: Int, height: Int, frames: Int, seed: UInt64) -> [Step] {
        var rng = SeededRNG(seed: seed)
        var steps: [Step] = []
        let w = width & ~1, h = height & ~1   // the output (cropped) size
        for f in 1...frames {
            var rects: [PixelRect] = []
            switch f % 7 {
            case 0: rects.append(PixelRect(x: w - 1, y: h - 1, width: 1, height: 1))          // last output pixel
            case 1: rects.append(PixelRect(x: w - 5, y: Int.random(in: 0..<(h - 20), using: &rng), width: 5, height: 19))
            case 2: rects.append(PixelRect(x: Int.random(in: 0..<(w - 40), using: &rng), y: h - 3, width: 37, height: 3))
            case 3: rects.append(PixelRect(x: 15, y: 15, width: 2, height: 2))              // straddles 4 macroblocks
            default:
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    let rw = Int.random(in: 1...45, using: &rng), rh = Int.random(in: 1...33, using: &rng)
                    rects.append(PixelRect(x: Int.random(in: 0..<(w - rw), using: &rng),
                                           y: Int.random(in: 0..<(h - rh), using: &rng), width: rw, height: rh))
                }
            }
            if f % 4 == 0 {
                // Two updates before one encode: both must show.
                steps.append(.change([rects[0]]))
                steps.append(.change([PixelRect(x: Int.random(in: 0..<(w - 30), using: &rng),
                                                y: Int.random(in: 0..<(h - 30), using: &rng), width: 29, height: 17)]))
                if rects.count > 1 { steps.append(.change(Array(rects.dropFirst()))) }
            } else {
                steps.append(.change(rects))
            }
            steps.append(.encode(keyframe: f == frames / 2))
            if f % 5 == 0 { steps.append(.encode(keyframe: false)) }   // a repeat: nothing changed
        }
        return steps
    }

    private func assertClean(_ checks: [FrameCheck], _ rec: Recording, minPSNR: Double = 35,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(checks.count, rec.frames.count, file: file, line: line)
        for (i, c) in checks.enumerated() {
            XCTAssertGreaterThanOrEqual(c.psnrY, minPSNR, "frame \(i): luma PSNR", file: file, line: line)
            XCTAssertGreaterThanOrEqual(c.worstBlockPSNR, 22, "frame \(i): worst 16x16 block", file: file, line: line)
            XCTAssertEqual(c.staleRects, [], "frame \(i): changed rectangles not shown in their own frame",
                           file: file, line: line)
        }
    }

    // MARK: tests

    func testChangesShowInTheirOwnFrame() throws {
        // 632x358: a partial last macroblock column (8 px) and row (6 px).
        let steps = changingSequence(width: 632, height: 358, frames: 40, seed: 11)
        let hinted = try record(width: 632, height: 358, steps: steps, name: "hinted")
        let plain = try record(width: 632, height: 358, steps: steps, macroblockHints: false, name: "plain")
        let hintedChecks = try check(hinted), plainChecks = try check(plain)
        assertClean(hintedChecks, hinted)
        assertClean(plainChecks, plain)

        // The hints were really given: most macroblocks unchanged in the P-frames, all in repeats.
        let mbCount = ((632 + 15) / 16) * ((358 + 15) / 16)
        XCTAssertEqual(hinted.frames[0].unchangedMacroblocks, 0, "first picture: everything changed")
        let pFrames = hinted.frames.dropFirst()
        XCTAssertTrue(pFrames.allSatisfy { $0.unchangedMacroblocks > mbCount * 9 / 10 },
                      "unchanged counts \(pFrames.map(\.unchangedMacroblocks)) of \(mbCount)")
        let repeats = pFrames.filter { $0.changed.isEmpty }
        XCTAssertEqual(repeats.count, 8)
        XCTAssertTrue(repeats.allSatisfy { $0.unchangedMacroblocks == mbCount })
        XCTAssertEqual(plain.frames.map(\.unchangedMacroblocks).max(), 0)

        // And cost no quality against an encode without hints.
        let minHinted = hintedChecks.map(\.psnrY).min() ?? 0, minPlain = plainChecks.map(\.psnrY).min() ?? 0
        XCTAssertGreaterThan(minHinted, minPlain - 1.0, "min PSNR with hints \(minHinted), without \(minPlain)")
        let avg = { (c: [FrameCheck]) in c.map(\.psnrY).reduce(0, +) / Double(c.count) }
        let worst = hintedChecks.map(\.worstBlockPSNR).min() ?? 0
        print("mb hints 632x358: min PSNR \(minHinted) (without \(minPlain)), mean \(avg(hintedChecks)) (without \(avg(plainChecks))), worst block \(worst), bytes \(hinted.bytes) (without \(plain.bytes))")
    }

    func testAWrongHintWouldShowAsStale() throws {
        // The check above can fail: claim at one frame that nothing changed while a
        // rectangle did change. The decoded frame keeps the old pixels there.
        var steps = changingSequence(width: 320, height: 240, frames: 12, seed: 5)
        let lieAt = steps.lastIndex { if case .encode = $0 { return true } else { return false } }!
        steps.insert(.change([PixelRect(x: 101, y: 67, width: 40, height: 30)]), at: lieAt + 1)
        steps.insert(.encode(keyframe: false, lie: true), at: lieAt + 2)
        let rec = try record(width: 320, height: 240, steps: steps, name: "lie")
        let checks = try check(rec)
        let last = try XCTUnwrap(checks.last)
        XCTAssertEqual(last.staleRects, [PixelRect(x: 101, y: 67, width: 40, height: 30)],
                       "the lie must show as a stale rectangle")
        XCTAssertLessThan(last.worstBlockPSNR, 15, "a stale block is far off")
        // Every frame before the lie is clean (the lie is the only difference).
        for (i, c) in checks.dropLast().enumerated() {
            XCTAssertEqual(c.staleRects, [], "frame \(i)")
            XCTAssertGreaterThanOrEqual(c.worstBlockPSNR, 22, "frame \(i)")
        }
        // Without the lie the same sequence is clean.
        steps[lieAt + 2] = .encode(keyframe: false)
        let honest = try record(width: 320, height: 240, steps: steps, name: "honest")
        assertClean(try check(honest), honest)
    }

    func testOddSizeCropsWithHints() throws {
        // 1366x767 -> 1366x766: 86x48 macroblocks, last column 6 px, last row 14 px.
        var steps = changingSequence(width: 1366, height: 767, frames: 12, seed: 3)
        // A change only in the cropped-off last source row changes nothing.
        steps.append(.change([PixelRect(x: 0, y: 766, width: 1366, height: 1)]))
        steps.append(.encode(keyframe: false))
        // A change reaching past the crop still shows above it.
        steps.append(.change([PixelRect(x: 1300, y: 740, width: 66, height: 27)]))
        steps.append(.encode(keyframe: false))
        let rec = try record(width: 1366, height: 767, steps: steps, name: "odd")
        XCTAssertEqual(rec.width, 1366)
        XCTAssertEqual(rec.height, 766)
        let s = try Tools.probeStream(rec.path)
        XCTAssertEqual(s.width, 1366)
        XCTAssertEqual(s.height, 766)
        XCTAssertEqual(s.frames, rec.frames.count)
        let n = rec.frames.count
        XCTAssertEqual(rec.frames[n - 2].changed, [], "the cropped row is outside the output")
        XCTAssertEqual(rec.frames[n - 2].unchangedMacroblocks, 86 * 48)
        XCTAssertEqual(rec.frames[n - 2].picture, rec.frames[n - 3].picture)
        XCTAssertEqual(rec.frames[n - 1].changed, [PixelRect(x: 1300, y: 740, width: 66, height: 26)])
        XCTAssertEqual(rec.frames[n - 1].unchangedMacroblocks, 86 * 48 - 5 * 2)
        assertClean(try check(rec), rec)
    }

    /// A still picture's encoding is sent again at later chunk starts instead of
    /// x264 coding the same IDR each time (KeyframeReplay). Every path: a chunk
    /// that starts still and stays still (all replayed), a change in the middle of
    /// a replay (x264 must code an IDR: its state is behind the replayed stream),
    /// a replay that reaches the end of what was kept (x264 takes over with
    /// P-frames that continue it), a change right there (a plain P-frame), and two
    /// chunk starts in a row (no replayed IDR right after an IDR: idr_pic_id). The
    /// stream must decode cleanly to exactly the pictures given, concatenated and
    /// chunk by chunk.
    func testStillPicturesReplayTheirEncoding() throws {
        let w = 640, h = 360
        let change = Step.change([PixelRect(x: 200, y: 100, width: 37, height: 21)])
        let key = Step.encode(keyframe: true), still = Step.encode(keyframe: false)
        var steps: [Step] = []
        // chunk 0 (the first IDR is record()'s): still, still, a change, still, still
        steps += [still, still, change, still, still, still]
        // chunk 1: nothing changed, but the kept encoding ended at the change: x264
        steps += [key, still, still, still, still, still]
        // chunk 2: all six replayed
        steps += [key, still, still, still, still, still]
        // chunk 3: replayed IDR and P1, then a change: x264 must code an IDR
        steps += [key, still, change, still, still, still, still]
        // chunk 4: replay of chunk 3's IDR and three stills, then x264 continues (P-frames)
        steps += [key, still, still, still, still, still]
        // chunk 5: six replayed, then a change at the end of the kept chain: a plain P-frame
        steps += [key, still, still, still, still, still, change, still, still]
        // chunk 6 keeps [IDR, P]; chunk 7 replays its IDR; chunk 8 starts right after that
        // IDR, so x264 codes its IDR (the ids of consecutive IDRs must differ)
        steps += [key, still, key, key, still]
        let rec = try record(width: w, height: h, steps: steps, name: "replay")
        let plain = try record(width: w, height: h, steps: steps, keyframeReplay: false, name: "replay-off")

        let kinds = rec.frames.map { ($0.replayed ? "R" : "x") + ($0.keyframe ? "I" : "P") }
        let expected = [
            "xI", "xP", "xP", "xP", "xP", "xP",     // chunk 0
            "xI", "xP", "xP", "xP", "xP", "xP",     // 1
            "RI", "RP", "RP", "RP", "RP", "RP",     // 2
            "RI", "RP", "xI", "xP", "xP", "xP",     // 3: the change forces an IDR
            "RI", "RP", "RP", "RP", "xP", "xP",     // 4: x264 continues after the chain's end
            "RI", "RP", "RP", "RP", "RP", "RP", "xP", "xP",   // 5: change at the chain's end: P
            "xI", "xP", "RI", "xI", "xP",           // 6, 7, 8
        ]
        XCTAssertEqual(kinds, expected)
        XCTAssertEqual(plain.frames.filter(\.replayed).count, 0)
        XCTAssertEqual(plain.frames.filter(\.keyframe).count, 9, "without replay: one IDR per chunk start")

        assertClean(try check(rec), rec)
        assertClean(try check(plain), plain)
        // Each chunk decodes on its own, without a message from the decoder.
        XCTAssertEqual(rec.chunkPaths.count, 9)
        for path in rec.chunkPaths {
            XCTAssertEqual(try Media.decodeErrors(path), "", path)
        }
        XCTAssertEqual(try Media.decodeErrors(rec.path), "", "the concatenated stream decodes without a message")
        print("keyframe replay: \(rec.frames.filter(\.replayed).count) of \(rec.frames.count) frames replayed; bytes \(rec.bytes) (without replay \(plain.bytes))")
    }

    func testScaledModeMarksEverythingChanged() throws {
        let encoder = try VideoEncoder(sourceWidth: 640, sourceHeight: 360, settings: VideoEncoderSettings(maxHeight: 180))
        let image = TestImage(width: 640, height: 360)
        image.drawMoving(frame: 0)
        encoder.updatePicture(from: image.view, dirty: nil)
        try encoder.encode(pts: Ticks90k(ticks: 0), keyframe: true) { (_) throws(CaptureError) in }
        encoder.updatePicture(from: image.view, dirty: image.advance(to: 1))
        try encoder.encode(pts: Ticks90k(ticks: 3000), keyframe: false) { (_) throws(CaptureError) in }
        XCTAssertEqual(encoder.lastUnchangedMacroblocks, 0, "scaled: a partial update changes every macroblock")
        try encoder.encode(pts: Ticks90k(ticks: 6000), keyframe: false) { (_) throws(CaptureError) in }
        XCTAssertEqual(encoder.lastUnchangedMacroblocks, 20 * 12, "a repeat: nothing changed")
        encoder.updatePicture(from: image.view, dirty: DirtyRegion())
        try encoder.encode(pts: Ticks90k(ticks: 9000), keyframe: false) { (_) throws(CaptureError) in }
        XCTAssertEqual(encoder.lastUnchangedMacroblocks, 20 * 12, "an empty update changes nothing")
    }
}
