import CaptureCore
import SHA256
import Foundation
import XCTest

final class ChannelIDTests: XCTestCase {
    func testParsesTheRuntimeVocabulary() throws {
        XCTAssertEqual(try ChannelID(parsing: "display:1"), .display(1))
        XCTAssertEqual(try ChannelID(parsing: "screen:2"), .display(2))
        XCTAssertEqual(try ChannelID(parsing: "mic:default"), .microphone(nil))
        XCTAssertEqual(try ChannelID(parsing: "mic:alsa_input.usb-foo"), .microphone("alsa_input.usb-foo"))
        XCTAssertEqual(try ChannelID(parsing: "system_audio:default"), .systemAudio(nil))
        XCTAssertEqual(try ChannelID(parsing: "system_audio:spk"), .systemAudio("spk"))
        XCTAssertEqual(ChannelID.display(3).description, "display:3")
        XCTAssertEqual(ChannelID.systemAudio(nil).directoryName, "system_audio-default")
        XCTAssertEqual(ChannelID.microphone("a/b c").directoryName, "mic-a_b_c")
    }

    func testRejectsMalformedIDsWithInvalidChannels() {
        for bad in ["", "display", "display:", "display:0", "display:-1", "display:x", "camera:1", "mic:", ":x"] {
            XCTAssertThrowsError(try ChannelID(parsing: bad), bad) { error in
                XCTAssertEqual((error as? CaptureError)?.code, .invalidChannels, bad)
            }
        }
    }

    func testChannelInfoEncodesLikeTheSDK() throws {
        let info = ChannelInfo(id: .microphone(nil), name: "Built-in mic")
        let json = String(decoding: try JSONEncoder().encode(info), as: UTF8.self)
        XCTAssertTrue(json.contains("\"channel_id\":\"mic:default\""), json)
        XCTAssertTrue(json.contains("\"type\":\"audio\""), json)
    }
}

final class DirtyRegionTests: XCTestCase {
    func testAddsAndBounds() {
        var r = DirtyRegion()
        XCTAssertTrue(r.isEmpty)
        r.add(PixelRect(x: 10, y: 10, width: 5, height: 5))
        r.add(PixelRect(x: 100, y: 50, width: 10, height: 10))
        XCTAssertEqual(r.count, 2)
        XCTAssertEqual(r.bounds, PixelRect(x: 10, y: 10, width: 100, height: 50))
        r.add(PixelRect(x: 11, y: 11, width: 2, height: 2))
        XCTAssertEqual(r.count, 2, "a contained rect adds nothing")
        r.add(PixelRect(x: 0, y: 0, width: 0, height: 9))
        XCTAssertEqual(r.count, 2, "an empty rect adds nothing")
    }

    func testOverflowMergesButNeverLosesCoverage() {
        var r = DirtyRegion()
        var rects: [PixelRect] = []
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let rect = PixelRect(x: Int.random(in: 0..<1900, using: &rng), y: Int.random(in: 0..<1060, using: &rng),
                                 width: Int.random(in: 1...20, using: &rng), height: Int.random(in: 1...20, using: &rng))
            rects.append(rect)
            r.add(rect)
        }
        XCTAssertLessThanOrEqual(r.count, DirtyRegion.capacity)
        for rect in rects {
            var covered = false
            for i in 0..<r.count where r[i].union(rect) == r[i] { covered = true }
            XCTAssertTrue(covered, "\(rect) must stay covered")
        }
    }

    func testIntersectionAndFull() {
        let a = PixelRect(x: 0, y: 0, width: 10, height: 10)
        XCTAssertEqual(a.intersection(PixelRect(x: 5, y: 5, width: 10, height: 10)), PixelRect(x: 5, y: 5, width: 5, height: 5))
        XCTAssertTrue(a.intersection(PixelRect(x: 10, y: 0, width: 5, height: 5)).isEmpty)
        XCTAssertEqual(DirtyRegion.full(width: 1366, height: 767).bounds, PixelRect(x: 0, y: 0, width: 1366, height: 767))
    }
}

final class SHA256Tests: XCTestCase {
    private func digest(_ s: String) -> String {
        var h = SHA256()
        h.update(Array(s.utf8))
        return SHA256.hex(h.finalize())
    }

    func testKnownVectors() {
        XCTAssertEqual(digest(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(digest(String(repeating: "a", count: 1_000_000)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    func testIncrementalEqualsOneShotAndSha256sum() throws {
        var bytes = [UInt8](repeating: 0, count: 100_003)
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i &* 31 &+ i >> 7) }
        var whole = SHA256()
        whole.update(bytes)
        let expected = SHA256.hex(whole.finalize())
        for split in [1, 63, 64, 65, 4096, 99_999] {
            var h = SHA256()
            bytes[..<split].withUnsafeBytes { h.update($0) }
            bytes[split...].withUnsafeBytes { h.update($0) }
            XCTAssertEqual(SHA256.hex(h.finalize()), expected, "split at \(split)")
        }
        // Cross-check against coreutils.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sha-\(getpid()).bin").path
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        p.arguments = [path]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        p.waitUntilExit()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(String(out.prefix(64)), expected)
    }
}

final class DurationAndClockTests: XCTestCase {
    func testParsesDurations() throws {
        XCTAssertEqual(try parseDuration("10s"), 10_000_000_000)
        XCTAssertEqual(try parseDuration("500ms"), 500_000_000)
        XCTAssertEqual(try parseDuration("1.5s"), 1_500_000_000)
        XCTAssertEqual(try parseDuration("2m"), 120_000_000_000)
        XCTAssertEqual(try parseDuration("3"), 3_000_000_000)
        for bad in ["", "abc", "-1s", "1x", "s"] {
            XCTAssertThrowsError(try parseDuration(bad), bad) { XCTAssertEqual(($0 as? CaptureError)?.code, .invalidRequest) }
        }
    }

    func testMonotonicSleepUntilDeadline() {
        let start = MonotonicClock.now()
        MonotonicClock.sleep(until: start + 20_000_000)
        XCTAssertGreaterThanOrEqual(MonotonicClock.now() - start, 20_000_000, "never wakes before the deadline")
        MonotonicClock.sleep(until: start - 1) // past deadline returns at once
    }

    func testIso8601() {
        XCTAssertEqual(WallClock.iso8601(nanoseconds: 0), "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(WallClock.iso8601(nanoseconds: 1_795_000_000_123_000_000), "2026-11-18T11:06:40.123Z")
    }
}
