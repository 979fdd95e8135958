import CaptureUplink
import XCTest

/// The ingest check's reader of PES timestamps (`MPEGTSTimestamps`).
final class MPEGTSTimestampsTests: XCTestCase {
    /// One packet starting a PES with `ptsNs`, with an adaptation field when asked.
    static func packet(ptsNs: Int64, adaptation: Int = 0, streamId: UInt8 = 0xC0) -> [UInt8] {
        var out: [UInt8] = [0x47, 0x41, 0x00, adaptation > 0 ? 0x30 : 0x10]
        if adaptation > 0 { out += [UInt8(adaptation - 1)] + [UInt8](repeating: 0xFF, count: adaptation - 1) }
        out += MPEGTSTimestamps.pesHeader(streamId: streamId, ptsNs: ptsNs)
        out += [UInt8](repeating: 0xAA, count: 188 - out.count)
        return out
    }

    static func check(_ bytes: [UInt8], start: Int64, duration: Int64 = 1_000_000_000) -> Result<Int, MPEGTSTimestamps.Failure> {
        bytes.withUnsafeBytes { MPEGTSTimestamps.check($0, startNs: start, durationNs: duration, toleranceNs: 2_000_000_000) }
    }

    func testTimestampsInsideTheWindowAndItsToleranceAreAccepted() {
        let start: Int64 = 5_000_000_000
        let inside = Self.packet(ptsNs: start) + Self.packet(ptsNs: start + 900_000_000, adaptation: 8)
            + Self.packet(ptsNs: start + 2_900_000_000, streamId: 0xE0) + Self.packet(ptsNs: start - 1_900_000_000)
        XCTAssertEqual(try Self.check(inside, start: start).get(), 4)
        // A continuation packet (no unit start) and a non-media stream are not read...
        var continuation = Self.packet(ptsNs: 99_000_000_000)
        continuation[1] = 0x01
        let unread = continuation + Self.packet(ptsNs: 99_000_000_000, streamId: 0xBD)
        XCTAssertEqual(try Self.check(unread + Self.packet(ptsNs: start), start: start).get(), 1)
        // ... and packets without one readable timestamp place nothing: refused.
        XCTAssertEqual(Self.check(unread, start: start), .failure(.noTimestamps))
        // A DTS is checked like the PTS.
        var withDTS = Self.packet(ptsNs: start)
        withDTS[4 + 7] = 0xC0
        withDTS[4 + 8] = 10
        let dts = MPEGTSTimestamps.pesHeader(streamId: 0xC0, ptsNs: start + 30_000_000_000).suffix(5)
        withDTS.replaceSubrange((4 + 14)..<(4 + 19), with: dts)
        guard case .failure(.outside) = Self.check(withDTS, start: start) else { return XCTFail("a DTS 30 s off passed") }
    }

    func testTimestampsOutsideAreRefusedWithWhereTheyAre() {
        let start: Int64 = 5_000_000_000
        XCTAssertEqual(Self.check(Self.packet(ptsNs: start + 3_100_000_000), start: start),
                       .failure(.outside(ptsNs: start + 3_100_000_000)))
        XCTAssertEqual(Self.check(Self.packet(ptsNs: start - 2_100_000_000), start: start),
                       .failure(.outside(ptsNs: start - 2_100_000_000)))
        guard case .failure(.outside) = Self.check(Self.packet(ptsNs: 46_800_000_000_000), start: start) else {
            return XCTFail("13 hours in passed")
        }
    }

    /// PTS wrap every 2^33 ticks (26.5 h): a chunk of a long session, and a window across the wrap.
    func testTheWrapIsTakenIntoAccount() {
        let wrapNs = MPEGTSTimestamps.wrapTicks * 1_000_000_000 / MPEGTSTimestamps.clockHz
        for start in [wrapNs + 10_000_000_000, wrapNs - 500_000_000, 3 * wrapNs + 1] {
            XCTAssertEqual(try Self.check(Self.packet(ptsNs: start + 500_000_000), start: start).get(), 1, "\(start)")
            guard case .failure = Self.check(Self.packet(ptsNs: start + 10_000_000_000), start: start) else {
                return XCTFail("10 s off passed at \(start)")
            }
        }
    }

    func testWhatIsNotATransportStreamIsSaidSo() {
        XCTAssertEqual(Self.check([UInt8](repeating: 0x47, count: 100), start: 0), .failure(.notTransportStream))
        var bad = Self.packet(ptsNs: 0) + Self.packet(ptsNs: 0)
        bad[188] = 0x46
        XCTAssertEqual(Self.check(bad, start: 0), .failure(.notTransportStream))
        XCTAssertEqual(try Self.check([], start: 0).get(), 0)
    }
}
