import CaptureCore
import CaptureTestSupport
import Foundation
@testable import MediaEncoding
import XCTest

/// A monitor that changes size under a running encoder: the stream keeps its size, the new
/// picture is scaled in with its aspect kept, the rest is black.
final class SourceChangeTests: XCTestCase {
    func testFitKeepsTheAspectAndCentresOnEvenPixels() {
        let cases: [(Int, Int, Int, Int, PixelRect)] = [
            (1680, 1050, 1920, 1080, PixelRect(x: 96, y: 0, width: 1728, height: 1080)),     // 16:10 in 16:9: pillars
            (1280, 1024, 1920, 1080, PixelRect(x: 284, y: 0, width: 1350, height: 1080)),    // 5:4
            (1920, 1080, 1280, 1024, PixelRect(x: 0, y: 152, width: 1280, height: 720)),     // 16:9 in 5:4: bars
            (1920, 1080, 1920, 1080, PixelRect(x: 0, y: 0, width: 1920, height: 1080)),
            (3840, 2160, 1920, 1080, PixelRect(x: 0, y: 0, width: 1920, height: 1080)),      // same aspect, smaller
            (1366, 768, 1920, 1080, PixelRect(x: 0, y: 0, width: 1920, height: 1080)),       // within a pixel of 16:9
        ]
        for (sw, sh, ow, oh, want) in cases {
            let got = VideoEncoder.fit(sourceWidth: sw, sourceHeight: sh, into: ow, oh)
            XCTAssertEqual(got, want, "\(sw)x\(sh) into \(ow)x\(oh)")
            XCTAssertEqual(Int(got.x) % 2, 0); XCTAssertEqual(Int(got.y) % 2, 0)
            XCTAssertEqual(Int(got.width) % 2, 0); XCTAssertEqual(Int(got.height) % 2, 0)
            XCTAssertLessThanOrEqual(Int(got.maxX), ow); XCTAssertLessThanOrEqual(Int(got.maxY), oh)
        }
    }

    /// 1920x1080 encoder, then a white 1680x1050 source: the picture is white inside
    /// 1728x1080+96+0 and black in the pillars; back to 1920x1080, all of it is the source again.
    func testAChangedSourceIsPillarboxedThenWholeAgain() throws {
        let encoder = try VideoEncoder(sourceWidth: 1920, sourceHeight: 1080, settings: VideoEncoderSettings())
        let white = TestImage(width: 1680, height: 1050)
        white.fill(PixelRect(x: 0, y: 0, width: 1680, height: 1050), r: 255, g: 255, b: 255)
        try encoder.changeSource(width: 1680, height: 1050)
        XCTAssertEqual(encoder.outputWidth, 1920)
        XCTAssertEqual(encoder.outputHeight, 1080)
        XCTAssertEqual(encoder.pictureRect, PixelRect(x: 96, y: 0, width: 1728, height: 1080))
        encoder.updatePicture(from: white.view, dirty: nil)
        var y = encoder.copyPicture()
        func luma(_ x: Int, _ row: Int) -> UInt8 { y[row * 1920 + x] }
        for row in [0, 540, 1079] {
            XCTAssertEqual(luma(10, row), 16, "left pillar, row \(row)")
            XCTAssertEqual(luma(95, row), 16)
            XCTAssertEqual(luma(1830, row), 16, "right pillar")
            XCTAssertEqual(luma(100, row), 235, "picture, row \(row)")
            XCTAssertEqual(luma(960, row), 235)
            XCTAssertEqual(luma(1820, row), 235)
        }
        var packets = 0
        try encoder.encode(pts: Ticks90k(ticks: 0), keyframe: true) { _ in packets += 1 }
        XCTAssertEqual(packets, 1)

        let full = TestImage(width: 1920, height: 1080)
        full.fill(PixelRect(x: 0, y: 0, width: 1920, height: 1080), r: 255, g: 255, b: 255)
        try encoder.changeSource(width: 1920, height: 1080)
        XCTAssertEqual(encoder.pictureRect, PixelRect(x: 0, y: 0, width: 1920, height: 1080))
        encoder.updatePicture(from: full.view, dirty: nil)
        y = encoder.copyPicture()
        XCTAssertEqual(luma(10, 540), 235, "no pillar once the source has the stream's size again")
        try encoder.encode(pts: Ticks90k(ticks: 3000), keyframe: false) { _ in packets += 1 }
        XCTAssertEqual(packets, 2)
    }
}
