import CaptureControl
import CaptureTestSupport
import XCTest

final class LineSplitterTests: XCTestCase {
    /// Feeds `chunks` one append at a time; returns every event in order.
    private func split(_ chunks: [[UInt8]], cap: Int = ControlFraming.maxLineBytes,
                       afterEach: ((LineSplitter) -> Void)? = nil) -> [LineSplitter.Event] {
        var splitter = LineSplitter(maxLineBytes: cap)
        var events: [LineSplitter.Event] = []
        for chunk in chunks {
            splitter.append(chunk) { events.append($0) }
            afterEach?(splitter)
        }
        return events
    }

    private func lines(_ strings: String...) -> [LineSplitter.Event] {
        strings.map { .line(Array($0.utf8)) }
    }

    func testSplitsLinesAcrossArbitraryChunkBoundaries() {
        let text = Array("videodb_recorder|{\"command\":\"ping\"}\nsecond line\r\n\nthird\n\r\nü🎥 unicode\nno newline yet".utf8)
        let expected = lines("videodb_recorder|{\"command\":\"ping\"}", "second line", "third", "ü🎥 unicode")
        XCTAssertEqual(split([text]), expected)
        XCTAssertEqual(split(text.map { [$0] }), expected, "byte by byte")

        let seed = UInt64.random(in: 1...UInt64.max)
        var rng = SeededRNG(seed: seed)
        for round in 0..<500 {
            var chunks: [[UInt8]] = []
            var i = 0
            while i < text.count {
                let n = Int.random(in: 0...min(12, text.count - i), using: &rng)   // empty appends too
                chunks.append(Array(text[i..<(i + n)]))
                i += n
            }
            XCTAssertEqual(split(chunks), expected, "seed \(seed), round \(round), chunks \(chunks.map(\.count))")
        }
        // The unterminated tail is held, not delivered.
        var splitter = LineSplitter()
        splitter.append(text) { _ in }
        XCTAssertEqual(splitter.pendingBytes, "no newline yet".utf8.count)
    }

    func testCarriageReturnNewlineAndEmptyLines() {
        XCTAssertEqual(split([Array("a\r\nb\n".utf8)]), lines("a", "b"))
        // "\r" and "\n" in different appends.
        XCTAssertEqual(split([Array("a\r".utf8), Array("\nb\r".utf8), Array("\n".utf8)]), lines("a", "b"))
        XCTAssertEqual(split([Array("\n\n\r\n\r\n\na\n\n".utf8)]), lines("a"), "empty lines are skipped")
        XCTAssertEqual(split([Array("\n".utf8), Array("\r\n".utf8)]), [])
        // Only one trailing '\r' is a terminator; an inner '\r' stays.
        XCTAssertEqual(split([Array("a\rb\r\r\n".utf8)]), [.line(Array("a\rb\r".utf8))])
    }

    func testLineOfExactlyTheCapIsAcceptedAndOneMoreIsOversizedOnce() {
        for cap in [16, ControlFraming.maxLineBytes] {
            let exact = [UInt8](repeating: UInt8(ascii: "x"), count: cap)
            let over = [UInt8](repeating: UInt8(ascii: "y"), count: cap + 1)
            let next = Array("next".utf8)
            let input = exact + [0x0A] + over + [0x0A] + next + [0x0A]
            let expected: [LineSplitter.Event] = [.line(exact), .oversized(bytes: cap + 1), .line(next)]
            XCTAssertEqual(split([input], cap: cap), expected, "cap \(cap), one append")
            // Same in 1000-byte pieces (and byte by byte for the small cap).
            let pieceSize = cap < 100 ? 1 : 1000
            let pieces = stride(from: 0, to: input.count, by: pieceSize).map { Array(input[$0..<min($0 + pieceSize, input.count)]) }
            XCTAssertEqual(split(pieces, cap: cap), expected, "cap \(cap), pieces of \(pieceSize)")
            // A line of exactly the cap terminated by "\r\n" is still accepted.
            XCTAssertEqual(split([exact + [0x0D, 0x0A]], cap: cap), [.line(exact)], "cap \(cap) with \\r\\n")
            // cap + 1 bytes followed by "\r\n" is over.
            XCTAssertEqual(split([over + [0x0D, 0x0A], next + [0x0A]], cap: cap), [.oversized(bytes: cap + 2), .line(next)])
        }
    }

    func testOversizedLineAcrossManyAppendsStoresAtMostTheCap() {
        let cap = 1000
        var rng = SeededRNG(seed: 7)
        var total = 0
        var events: [LineSplitter.Event] = []
        var splitter = LineSplitter(maxLineBytes: cap)
        var maxPending = 0
        for _ in 0..<2000 {
            let n = Int.random(in: 1...97, using: &rng)
            total += n
            splitter.append([UInt8](repeating: UInt8(ascii: "z"), count: n)) { events.append($0) }
            maxPending = max(maxPending, splitter.pendingBytes)
        }
        XCTAssertEqual(events, [], "an oversized line is reported when it ends, not before")
        // +1: room for the '\r' of a "\r\n" terminator.
        XCTAssertLessThanOrEqual(maxPending, cap + 1)
        XCTAssertGreaterThan(total, 50 * cap)
        splitter.append(Array("\nafter\n".utf8)) { events.append($0) }
        XCTAssertEqual(events, [.oversized(bytes: total), .line(Array("after".utf8))])
        XCTAssertEqual(splitter.pendingBytes, 0)

        // With the real cap: 8 MiB in 64 KiB appends never holds more than 1 MiB.
        var big = LineSplitter()
        let block = [UInt8](repeating: UInt8(ascii: "{"), count: 65536)
        var bigEvents: [LineSplitter.Event] = []
        for _ in 0..<128 {
            big.append(block) { bigEvents.append($0) }
            XCTAssertLessThanOrEqual(big.pendingBytes, ControlFraming.maxLineBytes + 1)
        }
        big.append([0x0A]) { bigEvents.append($0) }
        XCTAssertEqual(bigEvents, [.oversized(bytes: 128 * 65536)])
    }

    func testFrameAddsPrefixAndNewline() {
        XCTAssertEqual(ControlFraming.frame(Array("{}".utf8)), Array("videodb_recorder|{}\n".utf8))
        XCTAssertEqual(ControlFraming.maxLineBytes, 1 << 20)
    }
}
