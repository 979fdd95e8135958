import CaptureControl
import CaptureCore
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// ControlClient against the other end of a socketpair, written by the test.
final class ControlClientTests: XCTestCase {
    private var fds: [Int32] = [-1, -1]

    override func setUpWithError() throws {
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
    }

    override func tearDown() {
        for fd in fds where fd >= 0 { close(fd) }
    }

    private static func write(_ fd: Int32, _ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    private func peerWrite(_ text: String, after seconds: Double = 0) {
        let fd = fds[1]
        let bytes = Array(text.utf8)
        if seconds == 0 { Self.write(fd, bytes); return }
        Thread.detachNewThread { usleep(UInt32(seconds * 1e6)); Self.write(fd, bytes) }
    }

    /// The request the client sent, read from the peer's side.
    private static func peerReadRequest(_ fd: Int32) -> ControlRequest? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0, buffer[n - 1] == 0x0A else { return nil }
        return try? ControlRequest.parse(line: Array(buffer[0..<(n - 1)])).get()
    }

    func testNextMessageSkipsOtherLinesAndKeepsWaiting() throws {
        let client = ControlClient(readFD: fds[0], writeFD: fds[0])
        peerWrite("not a protocol line\n")
        peerWrite("videodb_recorder|{\"type\":\"event\",\"event\":\"recording-started\",\"data\":{}}\n", after: 0.2)
        let message = try client.nextMessage(timeoutNs: 3_000_000_000)
        XCTAssertEqual(message?["event"], "recording-started", "the non-protocol line must not end the wait")
        XCTAssertNil(try client.nextMessage(timeoutNs: 50_000_000))
    }

    func testCallMatchesItsResponseAndKeepsEventsMeanwhile() throws {
        let client = ControlClient(readFD: fds[0], writeFD: fds[0])
        let done = expectation(description: "peer")
        let peer = fds[1]
        Thread.detachNewThread {
            defer { done.fulfill() }
            guard let request = Self.peerReadRequest(peer) else { return XCTFail("no request") }
            XCTAssertEqual(request.command, "getStatus")
            let event = ControlEvent(.recordingPaused(.init(tracks: [.mic], atNs: 1, pausedTracks: [.mic])), sessionId: "s")
            let other = ControlResponse.success(commandId: "someone-else", result: .null)
            let mine = ControlResponse.success(commandId: request.commandId, result: .object(["state": "idle"]))
            Self.write(peer, event.encodedLine() + other.encodedLine() + mine.encodedLine())
        }
        let result = try client.call("getStatus", timeout: .seconds(5))
        XCTAssertEqual(result["state"], "idle")
        wait(for: [done], timeout: 5)
        XCTAssertEqual(client.bufferedEvents.map(\.name), [.recordingPaused])
        XCTAssertEqual(try client.nextEvent(timeoutNs: 0)?.recordingPaused?.tracks, [.mic])
    }

    func testCallThrowsTheDaemonsCodeAndNoticesAClosedConnection() throws {
        let client = ControlClient(readFD: fds[0], writeFD: fds[0])
        let peer = fds[1]
        Thread.detachNewThread {
            guard let request = Self.peerReadRequest(peer) else { return }
            Self.write(peer, ControlResponse.failure(commandId: request.commandId, error: CaptureError(.invalidState, "no session")).encodedLine())
        }
        do {
            try client.call("stopRecording", timeout: .seconds(5))
            XCTFail("succeeded")
        } catch {
            XCTAssertEqual(error.code, .invalidState)
            XCTAssertEqual(error.message, "no session")
        }
        // A call with no answer in time is a TIMEOUT; a closed peer is an IO_ERROR.
        do {
            try client.call("ping", timeout: .milliseconds(200))
            XCTFail("succeeded")
        } catch {
            XCTAssertEqual(error.code, .timeout)
        }
        shutdown(fds[1], Int32(SHUT_RDWR))
        do {
            try client.call("ping", timeout: .seconds(5))
            XCTFail("succeeded")
        } catch {
            XCTAssertEqual(error.code, .ioError, "\(error)")
        }
        XCTAssertNil(try client.nextLine(timeoutNs: 1_000_000_000), "end of stream")
        XCTAssertTrue(client.isClosed)
    }
}
