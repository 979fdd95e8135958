import CaptureCore
@testable import MediaEncoding
import CaptureTestSupport
import XCTest

/// Partial (dirty-tile) conversion must give the same bytes as a full conversion.
final class ConversionTests: XCTestCase {
    private func check(width: Int, height: Int, rounds: Int, seed: UInt64, rowPadding: Int = 0) throws {
        var rng = SeededRNG(seed: seed)
        let image = TestImage(width: width, height: height, rowPadding: rowPadding)
        image.randomize(PixelRect(x: 0, y: 0, width: width, height: height), using: &rng)
        let settings = VideoEncoderSettings()
        let partial = try VideoEncoder(sourceWidth: width, sourceHeight: height, settings: settings)
        partial.updatePicture(from: image.view, dirty: nil)
        XCTAssertEqual(partial.lastConvertedPixels, partial.outputWidth * partial.outputHeight)

        var totalPartialPixels = 0
        for round in 0..<rounds {
            // Change random rectangles (some odd-sized, some at or past the edges).
            var dirty = DirtyRegion()
            let n = Int.random(in: 1...20, using: &rng)   // > 16 exercises merging
            for _ in 0..<n {
                let w = Int.random(in: 1...max(1, width / 3), using: &rng)
                let h = Int.random(in: 1...max(1, height / 3), using: &rng)
                var x = Int.random(in: 0..<width, using: &rng)
                var y = Int.random(in: 0..<height, using: &rng)
                switch Int.random(in: 0..<6, using: &rng) {
                case 0: x = 0
                case 1: y = 0
                case 2: x = max(0, width - w)             // touches the right edge
                case 3: y = max(0, height - h)            // touches the bottom edge
                default: break
                }
                let rect = PixelRect(x: x, y: y, width: w, height: h)
                    .intersection(PixelRect(x: 0, y: 0, width: width, height: height))
                image.randomize(rect, using: &rng)
                dirty.add(rect)
            }
            partial.updatePicture(from: image.view, dirty: dirty)
            totalPartialPixels += partial.lastConvertedPixels

            let full = try VideoEncoder(sourceWidth: width, sourceHeight: height, settings: settings)
            full.updatePicture(from: image.view, dirty: nil)
            let a = partial.copyPicture(), b = full.copyPicture()
            XCTAssertEqual(a.count, b.count)
            if a != b {
                var differing = 0, maxDiff = 0
                for i in 0..<min(a.count, b.count) where a[i] != b[i] {
                    differing += 1
                    maxDiff = max(maxDiff, abs(Int(a[i]) - Int(b[i])))
                }
                XCTFail("\(width)x\(height) round \(round): \(differing) bytes differ (max \(maxDiff)) between partial and full conversion")
                return
            }
        }
        // The partial path really ran (did not fall back to converting everything).
        if width >= 512 && height >= 128 {
            XCTAssertLessThan(totalPartialPixels, rounds * partial.outputWidth * partial.outputHeight,
                              "\(width)x\(height): dirty updates converted the whole frame every time")
        }
    }

    func testPartialConversionEqualsFull1080p() throws {
        try check(width: 1920, height: 1080, rounds: 6, seed: 1)
    }

    func testPartialConversionEqualsFullOddSizes() throws {
        try check(width: 1366, height: 767, rounds: 6, seed: 2)
        try check(width: 333, height: 201, rounds: 10, seed: 3, rowPadding: 12)
        try check(width: 130, height: 35, rounds: 10, seed: 4)
        try check(width: 257, height: 33, rounds: 10, seed: 5, rowPadding: 4)
    }

    func testSmallSizes() throws {
        for (w, h) in [(2, 2), (3, 3), (7, 5), (129, 31), (128, 32), (130, 66)] {
            try check(width: w, height: h, rounds: 8, seed: UInt64(w * 1000 + h))
        }
    }

    func testEmptyDirtyRegionConvertsNothing() throws {
        let image = TestImage(width: 64, height: 64)
        let enc = try VideoEncoder(sourceWidth: 64, sourceHeight: 64, settings: VideoEncoderSettings())
        image.fill(PixelRect(x: 0, y: 0, width: 64, height: 64), r: 200, g: 10, b: 10)
        enc.updatePicture(from: image.view, dirty: nil)
        let before = enc.copyPicture()
        image.fill(PixelRect(x: 0, y: 0, width: 64, height: 64), r: 10, g: 200, b: 10)
        enc.updatePicture(from: image.view, dirty: DirtyRegion())
        XCTAssertEqual(enc.lastConvertedPixels, 0)
        XCTAssertEqual(enc.copyPicture(), before)
        // A small rect only converts its tile run, and only changes that area.
        var d = DirtyRegion()
        d.add(PixelRect(x: 3, y: 5, width: 4, height: 4))
        enc.updatePicture(from: image.view, dirty: d)
        XCTAssertEqual(enc.lastConvertedPixels, 16 * 16)   // one tile
        let after = enc.copyPicture()
        XCTAssertNotEqual(after[0], before[0])                 // luma of (0,0) changed
        XCTAssertEqual(after[40 * 64], before[40 * 64])        // luma of row 40 did not
    }

    /// BT709Conversion against swscale (SWS_AREA | SWS_ACCURATE_RND, BT.709, limited
    /// range), which it replaced where nothing is scaled: random pictures and flat
    /// patches of the extreme colours, at most 1 apart in every sample. (Not at a
    /// height of 2: swscale then computes its one chroma row differently, off by up
    /// to 15 here; the old tile converter had to avoid 2-row tiles for that reason.)
    func testBT709ConversionMatchesSwscale() throws {
        for (w, h, seed) in [(1920, 1080, 21), (638, 358, 22), (1366, 767, 23), (18, 6, 24), (4, 4, 25)] as [(Int, Int, UInt64)] {
            let image = TestImage(width: w, height: h, rowPadding: 8)
            var rng = SeededRNG(seed: seed)
            image.randomize(PixelRect(x: 0, y: 0, width: w, height: h), using: &rng)
            let colours: [(UInt8, UInt8, UInt8)] = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255),
                                                    (255, 255, 0), (0, 255, 255), (255, 0, 255), (128, 128, 128)]
            for (i, c) in colours.enumerated() where (i + 1) * 16 <= w && h >= 16 {
                image.fill(PixelRect(x: i * 16, y: 0, width: 16, height: 16), r: c.0, g: c.1, b: c.2)
            }
            let ours = try VideoEncoder(sourceWidth: w, sourceHeight: h, settings: VideoEncoderSettings())
            let reference = try VideoEncoder(sourceWidth: w, sourceHeight: h, settings: VideoEncoderSettings(),
                                             converter: .swscale)
            ours.updatePicture(from: image.view, dirty: nil)
            reference.updatePicture(from: image.view, dirty: nil)
            let a = ours.copyPicture(), b = reference.copyPicture()
            XCTAssertEqual(a.count, b.count)
            var differing = 0, maxDiff = 0
            for i in 0..<min(a.count, b.count) where a[i] != b[i] {
                differing += 1
                maxDiff = max(maxDiff, abs(Int(a[i]) - Int(b[i])))
            }
            XCTAssertLessThanOrEqual(maxDiff, 1, "\(w)x\(h): \(differing) of \(a.count) samples differ, by up to \(maxDiff)")
            if w >= 16 * colours.count && h >= 16 {
                // Black is exactly (16, 128, 128), white (235, 128, 128).
                XCTAssertEqual(a[0], 16)
                XCTAssertEqual(a[16], 235)
                XCTAssertEqual(a[w * h], 128)
                XCTAssertEqual(a[w * h + 8], 128)
            }
        }
    }

    func testScaledConversionFallsBackToFull() throws {
        let image = TestImage(width: 640, height: 360)
        var rng = SeededRNG(seed: 9)
        image.randomize(PixelRect(x: 0, y: 0, width: 640, height: 360), using: &rng)
        let enc = try VideoEncoder(sourceWidth: 640, sourceHeight: 360, settings: VideoEncoderSettings(maxHeight: 180))
        XCTAssertEqual(enc.outputWidth, 320)
        XCTAssertEqual(enc.outputHeight, 180)
        var d = DirtyRegion()
        d.add(PixelRect(x: 10, y: 10, width: 20, height: 20))
        enc.updatePicture(from: image.view, dirty: d)
        XCTAssertEqual(enc.lastConvertedPixels, 320 * 180)
    }
}
