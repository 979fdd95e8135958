import CaptureCore
import SHA256
import CaptureUplink
import XCTest

/// The chunk frame and the text messages, as both sides of the uplink read them.
final class UplinkChunkFrameTests: XCTestCase {
    private func header(bytes: [UInt8], seq: Int = 3, channel: String = "display:1") -> UplinkChunkHeader {
        UplinkChunkHeader(channelId: channel, seq: seq, startPtsNs: 3_000_000_000, durationNs: 1_000_000_000, frames: 30,
                          bytes: bytes.count, sha256: bytes.withUnsafeBytes { SHA256.hexDigest($0) },
                          captureTimeUnixNs: 1_764_590_400_000_000_000, isFinal: false)
    }

    private func parse(_ frame: [UInt8], max: Int = 1 << 20) throws(UplinkError) -> UplinkChunkFrame.Parsed {
        let result: Result<UplinkChunkFrame.Parsed, UplinkError> = frame.withUnsafeBytes { raw in
            do throws(UplinkError) { return .success(try UplinkChunkFrame.parse(raw, maxChunkBytes: max)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    private func expectError(_ code: UplinkErrorCode, _ frame: [UInt8], max: Int = 1 << 20,
                             file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try parse(frame, max: max)
            XCTFail("expected \(code.rawValue)", file: file, line: line)
        } catch {
            XCTAssertEqual(error.code, code, error.message, file: file, line: line)
        }
    }

    func testAFrameRoundTripsAndPointsAtItsPayloadWithoutCopying() throws {
        let payload = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let h = header(bytes: payload)
        let frame = UplinkChunkFrame.encode(header: h, payload: payload)
        XCTAssertEqual(Array(frame[0..<4]), Array("CUF1".utf8))
        let length = Int(frame[4]) << 24 | Int(frame[5]) << 16 | Int(frame[6]) << 8 | Int(frame[7])
        XCTAssertEqual(length, frame.count - 8 - payload.count)
        let parsed = try parse(frame)
        XCTAssertEqual(parsed.header, h)
        XCTAssertEqual(parsed.payloadCount, payload.count)
        XCTAssertEqual(Array(frame[parsed.payloadOffset...]), payload)
    }

    func testTheHeaderIsThePlainJSONTheSpecShows() throws {
        let payload: [UInt8] = [1, 2, 3]
        let frame = UplinkChunkFrame.encode(header: header(bytes: payload), payload: payload)
        let json = try XCTUnwrap(String(bytes: frame[8..<(frame.count - 3)], encoding: .utf8))
        XCTAssertTrue(json.hasPrefix(#"{"bytes":3,"captureTimeUnixNs":1764590400000000000,"channelId":"display:1","#), json)
    }

    func testBrokenFramesAreBadFrames() {
        let payload: [UInt8] = [9, 9, 9, 9]
        var frame = UplinkChunkFrame.encode(header: header(bytes: payload), payload: payload)
        expectError(.badFrame, [])
        expectError(.badFrame, Array("CUF1".utf8))
        var wrongMagic = frame
        wrongMagic[0] = 0x58
        expectError(.badFrame, wrongMagic)
        var hugeHeader = frame
        hugeHeader[4] = 0x7f
        expectError(.badFrame, hugeHeader)
        var tinyHeader = frame
        tinyHeader[4...7] = [0, 0, 0, 1]
        expectError(.badFrame, tinyHeader)
        expectError(.badFrame, Array(frame[0..<20]))  // ends inside the header
        frame[9] = 0x7b  // '{' where '"' was: not JSON any more
        expectError(.badFrame, frame)
        // Valid JSON, but not a header (a field missing).
        let notHeader = Array(#"{"channelId":"display:1"}"#.utf8)
        expectError(.badFrame, Array("CUF1".utf8) + [0, 0, 0, UInt8(notHeader.count)] + notHeader + payload)
    }

    func testAHeaderThatLiesAboutItsSizeIsASizeMismatchNamingTheChunk() {
        let payload = [UInt8](repeating: 1, count: 100)
        var h = header(bytes: payload, seq: 12)
        h.bytes = 120
        do {
            _ = try parse(UplinkChunkFrame.encode(header: h, payload: payload))
            XCTFail("a lying header was accepted")
        } catch {
            XCTAssertEqual(error.code, .sizeMismatch)
            XCTAssertEqual(error.channelId, "display:1")
            XCTAssertEqual(error.seq, 12)
        }
        h.bytes = 80
        expectError(.sizeMismatch, UplinkChunkFrame.encode(header: h, payload: payload))
    }

    func testFieldsOutOfRangeAreBadChunks() {
        let payload: [UInt8] = [1, 2, 3, 4]
        var h = header(bytes: payload)
        h.seq = -1
        expectError(.badChunk, UplinkChunkFrame.encode(header: h, payload: payload))
        h = header(bytes: payload)
        h.sha256 = String(h.sha256.uppercased())
        expectError(.badChunk, UplinkChunkFrame.encode(header: h, payload: payload))
        h = header(bytes: payload)
        h.durationNs = -5
        expectError(.badChunk, UplinkChunkFrame.encode(header: h, payload: payload))
        h = header(bytes: payload)
        expectError(.badChunk, UplinkChunkFrame.encode(header: h, payload: payload), max: 3)
        h = header(bytes: [], seq: 0)
        expectError(.badChunk, UplinkChunkFrame.encode(header: h, payload: []))
    }

    func testTextMessagesDecodeByType() throws {
        let hello = UplinkHello(token: "cct_x", sessionId: "cap-" + String(repeating: "a", count: 32), agent: "test",
                                channels: [UplinkChannel(channelId: "mic:default", mediaType: .audio, codec: "aac",
                                                         chunkDurationNs: 1_000_000_000, sampleRate: 48000)])
        XCTAssertEqual(try UplinkTextMessage(decoding: UplinkTextMessage.encode(hello)), .hello(hello))
        let ack = UplinkAck(channelId: "mic:default", seq: 4, sha256: String(repeating: "0", count: 64), duplicate: true)
        XCTAssertEqual(try UplinkTextMessage(decoding: UplinkTextMessage.encode(ack)), .ack(ack))
        XCTAssertEqual(try UplinkTextMessage(decoding: #"{"type":"end"}"#), .end(UplinkEnd()))
        let error = UplinkErrorMessage(code: .seqGap, message: "m", channelId: "mic:default", seq: 9, expectedSeq: 7)
        XCTAssertEqual(try UplinkTextMessage(decoding: UplinkTextMessage.encode(error)), .error(error))

        for bad in ["", "[]", "{}", #"{"type":5}"#, #"{"type":"shout"}"#, #"{"type":"hello"}"#, "not json",
                    String(repeating: " ", count: UplinkProtocol.maxTextBytes + 1)] {
            XCTAssertThrowsError(try UplinkTextMessage(decoding: bad), bad.prefix(20).description) { error in
                XCTAssertEqual((error as? UplinkError)?.code, .badMessage)
            }
        }
    }

    func testHelloChannelRules() {
        func check(_ channels: [UplinkChannel]) -> UplinkErrorCode? {
            do { try UplinkChannelRules.validate(channels); return nil } catch { return error.code }
        }
        let video = UplinkChannel(channelId: "display:1", mediaType: .video, codec: "h264", chunkDurationNs: 1_000_000_000)
        let mic = UplinkChannel(channelId: "mic:default", mediaType: .audio, codec: "aac", chunkDurationNs: 1_000_000_000)
        XCTAssertNil(check([video, mic]))
        XCTAssertEqual(check([]), .badHello)
        XCTAssertEqual(check([video, video]), .badHello)
        var wrong = mic
        wrong.mediaType = .video
        XCTAssertEqual(check([wrong]), .badHello)
        wrong = video
        wrong.codec = "vp9"
        XCTAssertEqual(check([wrong]), .badHello)
        for id in ["display:../../etc", "mic:a/b", "camera:1", "display:0", "mic:", "mic:a b", String(repeating: "m", count: 200)] {
            var channel = mic
            channel.channelId = id
            XCTAssertEqual(check([channel]), .badHello, id)
        }
        XCTAssertEqual(check(Array(repeating: mic, count: 17)), .badHello)
    }
}
