import CaptureCore
import Foundation
@testable import MediaEncoding
import XCTest

/// CPU cost of the video encoder at 1080p, printed, not asserted (timings on a
/// shared 2-core machine are too noisy to assert). Runs only with
/// MEDIA_ENCODING_MEASURE=1, best in a release build:
///
///     swift build -c release --scratch-path .build-x264 --build-tests
///     MEDIA_ENCODING_MEASURE=1 swift test -c release --scratch-path .build-x264 --skip-build \
///         --filter EncoderCostMeasurement
///
/// The moving content is ffmpeg's testsrc2 (what the benchmark rig plays) in the
/// top-left quarter of a desktop-like still background.
final class EncoderCostMeasurement: XCTestCase {
    private static func processCPUms() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
        return Double(t.tv_sec) * 1000 + Double(t.tv_nsec) / 1e6
    }

    private static func wallMs() -> Double { Double(MonotonicClock.now()) / 1e6 }

    /// `count` frames of testsrc2 at `width`x`height`, BGR0.
    private static func testsrc2(width: Int, height: Int, count: Int) throws -> [UInt8] {
        let r = try Tools.run("/usr/bin/ffmpeg", ["-nostdin", "-v", "error", "-f", "lavfi",
                                                   "-i", "testsrc2=size=\(width)x\(height):rate=30",
                                                   "-frames:v", "\(count)", "-f", "rawvideo", "-pix_fmt", "bgr0", "-"])
        guard r.status == 0 else { throw ToolError("ffmpeg testsrc2: \(r.stderr)") }
        return [UInt8](r.stdout)
    }

    struct Result { var encodeCPU: Double; var encodeWall: Double; var convertCPU: Double; var bytes: Int; var frames: Int }

    private func run(_ name: String, hints: Bool, rateControl: VideoEncoder.QualityRateControl,
                     moving: [UInt8]?, fullUpdates: Bool = false, frames: Int = 300) throws -> Result {
        let w = 1920, h = 1080, qw = 960, qh = 540
        let encoder = try VideoEncoder(sourceWidth: w, sourceHeight: h, settings: VideoEncoderSettings(),
                                       macroblockHints: hints, rateControl: rateControl)
        let image = TestImage(width: w, height: h)
        image.drawMoving(frame: 0)
        var rng = SeededGenerator(seed: 1)
        for _ in 0..<3000 {   // text-like strokes
            image.fill(PixelRect(x: Int.random(in: 0..<w, using: &rng), y: Int.random(in: 0..<h, using: &rng),
                                 width: Int.random(in: 2...40, using: &rng), height: 2), r: 20, g: 20, b: 20)
        }
        encoder.updatePicture(from: image.view, dirty: nil)
        var bytes = 0
        var pts: Int64 = 0
        var encodeCPU = 0.0, encodeWall = 0.0, convertCPU = 0.0
        let warmup = 10
        let quarter = PixelRect(x: 0, y: 0, width: qw, height: qh)
        for n in 0..<(frames + warmup) {
            if let moving {
                let frameBytes = qw * qh * 4
                let src = (n % (moving.count / frameBytes)) * frameBytes
                moving.withUnsafeBytes { m in
                    for y in 0..<qh {
                        (image.pixels + y * image.bytesPerRow).copyMemory(from: m.baseAddress! + src + y * qw * 4,
                                                                         byteCount: qw * 4)
                    }
                }
                var d = DirtyRegion()
                d.add(quarter)
                let c0 = Self.processCPUms()
                encoder.updatePicture(from: image.view, dirty: fullUpdates ? nil : d)
                if n >= warmup { convertCPU += Self.processCPUms() - c0 }
            }
            let c0 = Self.processCPUms(), w0 = Self.wallMs()
            try encoder.encode(pts90k: pts, keyframe: n == 0) { (p) throws(CaptureError) in bytes += p.byteCount }
            if n >= warmup {
                encodeCPU += Self.processCPUms() - c0
                encodeWall += Self.wallMs() - w0
            }
            pts += 3000
        }
        let r = Result(encodeCPU: encodeCPU / Double(frames), encodeWall: encodeWall / Double(frames),
                       convertCPU: convertCPU / Double(frames), bytes: bytes, frames: frames + warmup)
        let kbps = Double(r.bytes) * 8 / (Double(r.frames) / 30) / 1000
        print(String(format: "%-46@ encode CPU %5.2f ms (wall %5.2f) | convert CPU %5.2f ms | %6.0f kbit/s",
                     name as NSString, r.encodeCPU, r.encodeWall, r.convertCPU, kbps))
        return r
    }

    func testMeasureEncodeCost1080p() throws {
        guard ProcessInfo.processInfo.environment["MEDIA_ENCODING_MEASURE"] == "1" else {
            throw XCTSkip("set MEDIA_ENCODING_MEASURE=1 to measure")
        }
        let moving = try Self.testsrc2(width: 960, height: 540, count: 30)
        print("1080p, ultrafast/zerolatency, quality 23, x264 threads auto (sliced), per encode():")
        for round in 1...2 {
            print("round \(round)")
            _ = try run("static repeat, hints (constant QP)", hints: true, rateControl: .constantQuantizer, moving: nil)
            _ = try run("static repeat, no hints (constant QP)", hints: false, rateControl: .constantQuantizer, moving: nil)
            _ = try run("quarter change, hints (constant QP)", hints: true, rateControl: .constantQuantizer, moving: moving)
            _ = try run("quarter change, no hints (constant QP)", hints: false, rateControl: .constantQuantizer, moving: moving)
            _ = try run("static repeat, hints (CRF)", hints: true, rateControl: .constantRateFactor, moving: nil)
            _ = try run("quarter change, hints (CRF)", hints: true, rateControl: .constantRateFactor, moving: moving)
            _ = try run("quarter change, no hints (CRF = old settings)", hints: false, rateControl: .constantRateFactor, moving: moving)
            _ = try run("quarter content, full updates (constant QP)", hints: true, rateControl: .constantQuantizer,
                        moving: moving, fullUpdates: true, frames: 100)
        }
    }
}
