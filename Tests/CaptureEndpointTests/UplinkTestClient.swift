import CaptureCore
import SHA256
import CaptureUplink
import Foundation
import EndpointClient
import NIOCore
import NIOWebSocket
import XCTest

/// A scripted uplink client over a real socket: send hellos, frames and raw
/// bytes, read the endpoint's messages one by one, and learn the close code.
struct UplinkTestClient {
    let connection: WebSocketClientConnection
    private var messages: AsyncThrowingStream<WebSocketClientConnection.Message, any Error>.AsyncIterator
    private let watchdog: Task<Void, Never>

    /// Connects to `ws://127.0.0.1:port/capture/uplink`. The connection is closed
    /// from this side after `deadline`, so a silent endpoint fails a test instead of hanging it.
    static func connect(port: Int, path: String = UplinkProtocol.path, deadline: Duration = .seconds(60)) async throws
        -> UplinkTestClient {
        let connection = try await WebSocketClientConnection.connect(port: port, path: path, maxMessageSize: 1 << 26)
        let watchdog = Task {
            guard (try? await Task.sleep(for: deadline)) != nil else { return }
            connection.close(code: .goingAway, reason: "test deadline")
        }
        return UplinkTestClient(connection: connection, messages: connection.messages.makeAsyncIterator(),
                                watchdog: watchdog)
    }

    func send(_ message: some Encodable) async throws {
        try await connection.send(text: UplinkTextMessage.encode(message))
    }

    func sendText(_ text: String) async throws { try await connection.send(text: text) }

    func sendBinary(_ bytes: [UInt8]) async throws { try await connection.send(binary: bytes) }

    func sendChunk(_ chunk: TestChunk) async throws { try await sendBinary(chunk.frame) }

    /// The next text message as it came; nil once the connection is closed.
    mutating func nextText() async -> String? {
        while let message = try? await messages.next() {
            if case .text(let text) = message { return text }
        }
        return nil
    }

    /// The next message from the endpoint, decoded; nil once the connection is closed.
    mutating func next() async throws -> UplinkTextMessage? {
        guard let message = try await messages.next() else { return nil }
        guard case .text(let text) = message else { throw CaptureError(.internalError, "the endpoint sent binary") }
        return try UplinkTextMessage(decoding: text)
    }

    mutating func expectWelcome(file: StaticString = #filePath, line: UInt = #line) async throws -> UplinkWelcome {
        let message = try await next()
        guard case .welcome(let welcome) = message else {
            XCTFail("expected a welcome, got \(String(describing: message))", file: file, line: line)
            throw CaptureError(.internalError, "no welcome")
        }
        return welcome
    }

    mutating func expectAck(file: StaticString = #filePath, line: UInt = #line) async throws -> UplinkAck {
        let message = try await next()
        guard case .ack(let ack) = message else {
            XCTFail("expected an ack, got \(String(describing: message))", file: file, line: line)
            throw CaptureError(.internalError, "no ack")
        }
        return ack
    }

    mutating func expectError(_ code: UplinkErrorCode, file: StaticString = #filePath, line: UInt = #line) async throws
        -> UplinkErrorMessage {
        let message = try await next()
        guard case .error(let error) = message else {
            XCTFail("expected error \(code.rawValue), got \(String(describing: message))", file: file, line: line)
            throw CaptureError(.internalError, "no error")
        }
        XCTAssertEqual(error.code, code, error.message, file: file, line: line)
        return error
    }

    /// Waits for the connection's end (the deadline closes it from this side) and returns the
    /// close frame the endpoint sent, if any.
    func closeFrame() async -> WebSocketClientConnection.CloseFrame? {
        let frame = await connection.closed()
        watchdog.cancel()
        return frame
    }

    /// Drains messages until the close and returns the endpoint's close code.
    mutating func expectClose(_ code: UplinkCloseCode, file: StaticString = #filePath, line: UInt = #line) async throws {
        while let message = try await next() {
            XCTFail("expected close \(code.rawValue), got \(message)", file: file, line: line)
        }
        let frame = await closeFrame()
        XCTAssertEqual(frame?.code, code.rawValue, "close reason: \(frame?.reason ?? "-")", file: file, line: line)
    }

    func close() async throws {
        connection.close(code: .normalClosure)
        _ = await closeFrame()
    }
}

/// A chunk with made-up media: MPEG-TS packets (the endpoint checks that much: 188-byte
/// packets, and a PES start whose PTS is the header's `startPtsNs`) around random or
/// `fill` bytes. `bytes` is rounded up to whole packets; `ptsNs` moves the media away
/// from where the header says it is.
struct TestChunk {
    var header: UplinkChunkHeader
    var payload: [UInt8]

    init(channel: String, seq: Int, bytes: Int = 4000, isFinal: Bool = false, fill: UInt8? = nil, ptsNs: Int64? = nil,
         startNs: Int64? = nil, durationNs: Int64 = 1_000_000_000) {
        let start = startNs ?? Int64(seq) * 1_000_000_000
        payload = Self.transportStream(bytes: bytes, streamId: channel.hasPrefix("display") ? 0xE0 : 0xC0,
                                       ptsNs: ptsNs ?? start, fill: fill)
        header = UplinkChunkHeader(
            channelId: channel, seq: seq, startPtsNs: start, durationNs: durationNs,
            frames: 30, bytes: payload.count, sha256: payload.withUnsafeBytes { SHA256.hexDigest($0) },
            captureTimeUnixNs: WallClock.now(), isFinal: isFinal)
    }

    var frame: [UInt8] { UplinkChunkFrame.encode(header: header, payload: payload) }

    /// `bytes` rounded up to 188-byte packets on PID 0x100, the first starting a PES packet with `ptsNs`.
    static func transportStream(bytes: Int, streamId: UInt8, ptsNs: Int64, fill: UInt8?) -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        let packets = max(1, (bytes + MPEGTSTimestamps.packetBytes - 1) / MPEGTSTimestamps.packetBytes)
        var out: [UInt8] = []
        out.reserveCapacity(packets * MPEGTSTimestamps.packetBytes)
        for index in 0..<packets {
            out += [0x47, index == 0 ? 0x41 : 0x01, 0x00, 0x10 | UInt8(index & 0xF)]
            if index == 0 { out += MPEGTSTimestamps.pesHeader(streamId: streamId, ptsNs: ptsNs) }
            while out.count % MPEGTSTimestamps.packetBytes != 0 { out.append(fill ?? UInt8.random(in: 0...255, using: &rng)) }
        }
        return out
    }
}

enum TestChannels {
    static let display = UplinkChannel(channelId: "display:1", mediaType: .video, codec: "h264", name: "DUMMY0",
                                       isPrimary: true, chunkDurationNs: 1_000_000_000, width: 1920, height: 1080,
                                       frameRate: 30)
    static let mic = UplinkChannel(channelId: "mic:default", mediaType: .audio, codec: "aac", name: "rig-mic",
                                   chunkDurationNs: 1_000_000_000, sampleRate: 48000, audioChannels: 2)
    static let system = UplinkChannel(channelId: "system_audio:default", mediaType: .audio, codec: "aac",
                                      chunkDurationNs: 1_000_000_000, sampleRate: 48000, audioChannels: 2)
    static let all = [display, mic, system]
}
