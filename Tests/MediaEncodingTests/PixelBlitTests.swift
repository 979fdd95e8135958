import CaptureCore
import CaptureTestSupport
import PixelConversion
import XCTest

/// The per-pixel loops a screencast's frames go through: the changed region of two frames
/// (GNOME sends whole frames and no damage), the copy (with RGBx swapped to BGRx) and the
/// pointer's blend.
final class PixelBlitTests: XCTestCase {
    /// Every pixel that differs lies inside the reported rectangles, and every reported band
    /// holds a difference at both ends of its columns (nothing grossly over-reported).
    func testChangedRegionCoversEveryDifferenceAndNothingElse() {
        var rng = SeededRNG(seed: 7)
        for (width, height) in [(1920, 1080), (333, 77), (16, 16), (17, 1), (1280, 721)] {
            let a = TestImage(width: width, height: height, rowPadding: 12)
            let b = TestImage(width: width, height: height, rowPadding: 0)
            a.randomize(PixelRect(x: 0, y: 0, width: width, height: height), using: &rng)
            a.copy(to: b)
            for round in 0..<20 {
                var changed: [PixelRect] = []
                for _ in 0..<Int.random(in: 0...5, using: &rng) {
                    let w = Int.random(in: 1...max(1, width / 4), using: &rng)
                    let h = Int.random(in: 1...max(1, height / 4), using: &rng)
                    let rect = PixelRect(x: Int.random(in: 0..<width, using: &rng), y: Int.random(in: 0..<height, using: &rng),
                                         width: w, height: h).intersection(PixelRect(x: 0, y: 0, width: width, height: height))
                    b.randomize(rect, using: &rng)
                    changed.append(rect)
                }
                var reported: [PixelRect] = []
                PixelBlit.changedRegion(a.pixels, a.bytesPerRow, b.pixels, b.bytesPerRow, width: width, height: height) {
                    reported.append(PixelRect(x: $0, y: $1, width: $2, height: $3))
                }
                for y in 0..<height {
                    for x in 0..<width where a.pixel(x, y) != b.pixel(x, y) {
                        XCTAssertTrue(reported.contains { $0.intersection(PixelRect(x: x, y: y, width: 1, height: 1)) != .zero },
                                      "\(width)x\(height) round \(round): (\(x),\(y)) differs but is not reported")
                    }
                }
                if changed.isEmpty { XCTAssertEqual(reported, [], "nothing changed") }
                for rect in reported {
                    // Tile-aligned, inside the frame.
                    XCTAssertEqual(rect.intersection(PixelRect(x: 0, y: 0, width: width, height: height)), rect)
                    XCTAssertEqual(Int(rect.x) % 16, 0)
                    XCTAssertEqual(Int(rect.y) % 16, 0)
                    XCTAssertTrue(b.differs(from: a, in: PixelRect(x: Int(rect.x), y: Int(rect.y), width: min(16, Int(rect.width)), height: Int(rect.height))),
                                  "the first column of \(rect) has no difference")
                }
                b.copy(to: a)
            }
        }
    }

    func testCopySwapsRedAndBlueOnlyWhenAsked() {
        var rng = SeededRNG(seed: 3)
        let source = TestImage(width: 37, height: 5, rowPadding: 4)
        source.randomize(PixelRect(x: 0, y: 0, width: 37, height: 5), using: &rng)
        let plain = TestImage(width: 37, height: 5)
        let swapped = TestImage(width: 37, height: 5, rowPadding: 8)
        PixelBlit.copy(from: source.pixels, sourceBytesPerRow: source.bytesPerRow, to: plain.pixels,
                       destinationBytesPerRow: plain.bytesPerRow, width: 37, height: 5, swapRedBlue: false)
        PixelBlit.copy(from: source.pixels, sourceBytesPerRow: source.bytesPerRow, to: swapped.pixels,
                       destinationBytesPerRow: swapped.bytesPerRow, width: 37, height: 5, swapRedBlue: true)
        for y in 0..<5 {
            for x in 0..<37 {
                let s = source.pixel(x, y)
                XCTAssertEqual(plain.pixel(x, y), s)
                XCTAssertEqual(swapped.pixel(x, y), (s & 0xFF00_FF00) | ((s & 0xFF) << 16) | ((s >> 16) & 0xFF), "(\(x),\(y))")
            }
        }
    }

    /// dst = src + dst * (255 - a) / 255 per channel, rounded, clipped at the picture's edges.
    func testBlendIsPremultipliedOverAndClipped() {
        let picture = TestImage(width: 8, height: 8)
        picture.fill(PixelRect(x: 0, y: 0, width: 8, height: 8), r: 200, g: 100, b: 50)
        // 3x3: opaque red, transparent, half-transparent white (premultiplied 128).
        var image: [UInt32] = [0xFFFF_0000, 0x0000_0000, 0x8080_8080,
                               0xFFFF_0000, 0x0000_0000, 0x8080_8080,
                               0xFFFF_0000, 0x0000_0000, 0x8080_8080]
        image.withUnsafeBufferPointer {
            PixelBlit.blendPremultiplied($0.baseAddress!, imageWidth: 3, imageHeight: 3, atX: -1, y: 6,
                                         over: picture.pixels, pictureBytesPerRow: picture.bytesPerRow, pictureWidth: 8, pictureHeight: 8)
        }
        // Column -1 is off the picture; column 0 is transparent; column 1 is half white.
        XCTAssertEqual(picture.pixel(0, 6), 0x00C8_6432)
        let blended = picture.pixel(1, 6)
        func channel(_ shift: UInt32) -> UInt32 { (blended >> shift) & 0xFF }
        XCTAssertEqual(channel(16), 128 + (200 * 127 + 127) / 255)
        XCTAssertEqual(channel(8), 128 + (100 * 127 + 127) / 255)
        XCTAssertEqual(channel(0), 128 + (50 * 127 + 127) / 255)
        XCTAssertEqual(picture.pixel(1, 5), 0x00C8_6432, "row 5 is above the image")
        XCTAssertEqual(picture.pixel(2, 7), 0x00C8_6432, "column 2 is past the image")
    }
}

private extension TestImage {
    func pixel(_ x: Int, _ y: Int) -> UInt32 {
        (pixels + y * bytesPerRow + x * 4).load(as: UInt32.self)
    }

    func copy(to other: TestImage) {
        for y in 0..<height {
            (other.pixels + y * other.bytesPerRow).copyMemory(from: pixels + y * bytesPerRow, byteCount: width * 4)
        }
    }

    func differs(from other: TestImage, in rect: PixelRect) -> Bool {
        for y in Int(rect.y)..<Int(rect.maxY) {
            for x in Int(rect.x)..<Int(rect.maxX) where pixel(x, y) != other.pixel(x, y) { return true }
        }
        return false
    }
}
