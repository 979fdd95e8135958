import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Copies everything from one descriptor to another on a thread of its own,
/// keeping a copy: the test sees the daemon's raw stdout while a ControlClient
/// talks to it.
final class Tee: @unchecked Sendable {
    private let lock = NSLock()
    private var captured: [UInt8] = []
    private var finished = false

    /// Reads `from` until end of file, writes all to `to`, then closes both.
    init(from: Int32, to: Int32) {
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(from, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                lock.withLock { captured.append(contentsOf: buffer[0..<n]) }
                var offset = 0
                while offset < n {
                    let w = buffer.withUnsafeBytes { write(to, $0.baseAddress! + offset, n - offset) }
                    if w < 0 { if errno == EINTR { continue }; break }
                    offset += w
                }
            }
            close(from)
            close(to)
            lock.withLock { finished = true }
        }
        thread.start()
    }

    var bytes: [UInt8] { lock.withLock { captured } }
    var isFinished: Bool { lock.withLock { finished } }
}

/// `capture-agent --stdio` as the VideoDB SDK runs it: a child with pipes on
/// stdin and stdout (private XDG directories, log on stderr into a file).
final class StdioDaemon {
    let root: String
    let runtimeDir: String
    let stateDir: String
    let logPath: String
    let process = Process()
    let client: ControlClient
    private let tee: Tee
    private var toChild: Int32
    private let fromTee: Int32

    /// - Parameters:
    ///   - input: when given, written to stdin and stdin closed before the daemon starts
    ///     (its whole conversation and the end of stdin are there at once).
    ///   - nullInput: stdin is /dev/null.
    init(rig: TestRig?, name: String, arguments: [String] = [], input: [UInt8]? = nil, nullInput: Bool = false) throws {
        let sandbox = try DaemonSandbox(kind: "stdio", name: name)
        root = sandbox.root
        runtimeDir = sandbox.runtimeDir
        stateDir = sandbox.stateDir
        logPath = root + "/stderr.log"
        let e = sandbox.environment(rig: rig)

        var stdinPipe: [Int32] = [-1, -1]
        var stdoutPipe: [Int32] = [-1, -1]
        var teePipe: [Int32] = [-1, -1]
        guard pipe(&stdinPipe) == 0, pipe(&stdoutPipe) == 0, pipe(&teePipe) == 0 else {
            throw CaptureError(.ioError, "pipe failed")
        }
        // Only the child's ends may survive exec (dup2 onto 0 and 1 clears the flag there).
        for fd in stdinPipe + stdoutPipe + teePipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: BuiltBinary.path("capture-agent"))
        process.arguments = ["--stdio"] + arguments
        process.environment = e
        if let input {
            precondition(input.count < 65536, "more than a pipe holds")
            XCTAssertEqual(input.withUnsafeBytes { write(stdinPipe[1], $0.baseAddress, $0.count) }, input.count)
            close(stdinPipe[1])
            stdinPipe[1] = -1
        }
        process.standardInput = nullInput ? FileHandle.nullDevice : FileHandle(fileDescriptor: stdinPipe[0], closeOnDealloc: false)
        process.standardOutput = FileHandle(fileDescriptor: stdoutPipe[1], closeOnDealloc: false)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        try process.run()
        close(stdinPipe[0])
        close(stdoutPipe[1])
        toChild = stdinPipe[1]
        fromTee = teePipe[0]
        tee = Tee(from: stdoutPipe[0], to: teePipe[1])
        client = ControlClient(readFD: fromTee, writeFD: toChild)
    }

    /// Everything the daemon wrote on stdout so far.
    var stdout: [UInt8] { tee.bytes }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    func sessionDirectory(_ id: String) -> String { stateDir + "/capture-agent/spool/" + id }

    func closeStdin() {
        if toChild >= 0 { close(toChild); toChild = -1 }
    }

    /// The exit status, or nil if the process still runs after `timeout`.
    func waitForExit(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// Every stdout line must be a protocol line holding a JSON object; returns them.
    func checkStdout(file: StaticString = #filePath, line: UInt = #line) -> [JSONValue] {
        let bytes = stdout
        XCTAssertEqual(bytes.last, 0x0A, "stdout ends with a complete line", file: file, line: line)
        var values: [JSONValue] = []
        for raw in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).dropLast() {
            do {
                values.append(try Wire.decode(Array(raw)))
            } catch {
                XCTFail("stdout carries something else than protocol lines: \(error)", file: file, line: line)
            }
        }
        return values
    }

    deinit {
        closeStdin()
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        close(fromTee)
        try? FileManager.default.removeItem(atPath: root)
    }
}

final class StdioTests: XCTestCase {
    override func setUp() {
        signal(SIGPIPE, SIG_IGN)   // a pipe to a dead child must fail a write, not kill the tests
    }

    func testStdioAnswersKeepsStdoutCleanAndExitsAtEndOfStdin() throws {
        let d = try StdioDaemon(rig: nil, name: "basic")
        let c = d.client
        let info = try c.ok(.initialize, ["apiUrl": "https://api.videodb.io"], as: DaemonInfo.self)
        XCTAssertEqual(info.protocol, 1)
        XCTAssertEqual(info.pid, Int(d.process.processIdentifier))
        XCTAssertNil(info.pong, "init's answer has no pong")
        XCTAssertEqual(try c.ok(.ping, as: DaemonInfo.self).pong, true)
        let channels = try c.ok(.getChannels, as: ChannelsResult.self)
        XCTAssertTrue(channels.problems.contains { $0.code == CaptureErrorCode.displayUnavailable.rawValue }, "no display here: \(channels)")
        XCTAssertEqual(try c.ok(.getStatus, as: StatusResult.self).state, .idle)
        XCTAssertEqual(try c.ok(.requestPermission, ["permission": "screen-capture"], as: PermissionResult.self).status, "denied")

        // Bad lines get error responses and the conversation goes on.
        try c.sendRaw(Array("videodb_recorder|{not json\n".utf8))
        try c.expectError(.invalidRequest)
        try c.sendRaw(Array("garbage without prefix\r\n\n".utf8))
        try c.expectError(.invalidRequest)
        XCTAssertEqual(c.failure("noSuchCommand")?.code, .unknownCommand)
        XCTAssertEqual(c.failure("pauseTracks", ["tracks": 5])?.code, .invalidRequest)
        try c.sendRaw(Wire.prefix + [UInt8](repeating: 0x20, count: ControlFraming.maxLineBytes + 10) + [0x0A])
        try c.expectError(.requestTooLarge)
        XCTAssertEqual(try c.ok(.ping, as: DaemonInfo.self).pong, true)

        // No socket in stdio mode.
        XCTAssertFalse(FileManager.default.fileExists(atPath: d.runtimeDir + "/capture-agent/control.sock"))

        // End of stdin: a clean exit, quickly.
        let closedAt = Date()
        d.closeStdin()
        let status0 = d.waitForExit(timeout: 5)
        XCTAssertEqual(status0, 0, "exit status after end of stdin; log:\n\(d.log.suffix(2000))")
        print("stdio: exited \(String(format: "%.2f", Date().timeIntervalSince(closedAt))) s after stdin closed")
        let deadline = Date().addingTimeInterval(5)
        while !d.stdoutFinished && Date() < deadline { usleep(10_000) }

        let lines = d.checkStdout()
        XCTAssertEqual(lines.filter { $0["type"] == "response" }.count, 11, "one response per request: \(lines)")
        for value in lines where value["type"] == "response" { XCTAssertNil(Wire.responseProblem(value)) }
        // Logs went to stderr (and only there).
        let log = d.log
        XCTAssertTrue(log.contains("capture-agent ready"), log)
        XCTAssertTrue(log.contains("stdin closed"), log)
        XCTAssertFalse(String(decoding: d.stdout, as: UTF8.self).contains("capture-agent ready"))
    }

    func testEndOfStdinAloneStopsTheDaemon() throws {
        let d = try StdioDaemon(rig: nil, name: "eof")
        XCTAssertEqual(try d.client.ok(.ping, as: DaemonInfo.self).pong, true)
        d.closeStdin()
        XCTAssertEqual(d.waitForExit(timeout: 5), 0, d.log)
        // Started and closed without a single request: same.
        let quiet = try StdioDaemon(rig: nil, name: "eof-quiet")
        usleep(200_000)
        quiet.closeStdin()
        XCTAssertEqual(quiet.waitForExit(timeout: 5), 0, quiet.log)
        XCTAssertEqual(quiet.stdout, [], "nothing asked, nothing said")
    }

    func testRequestsAndEndOfStdinArrivingTogether() throws {
        // The parent wrote its requests and went away before the daemon read anything:
        // every request is answered, then the daemon sees the end and exits.
        var input: [UInt8] = []
        for i in 0..<50 { input += Wire.line(#"{"command":"ping","commandId":\#(i)}"#) }
        input += Array("videodb_recorder|{broken\n".utf8)
        input += Wire.line(#"{"command":"getStatus","commandId":"last"}"#)
        let d = try StdioDaemon(rig: nil, name: "together", input: input)
        XCTAssertEqual(d.waitForExit(timeout: 5), 0, "the daemon did not exit after the end of stdin; log:\n\(d.log.suffix(2000))")
        let deadline = Date().addingTimeInterval(5)
        while !d.stdoutFinished && Date() < deadline { usleep(10_000) }
        let lines = d.checkStdout()
        XCTAssertEqual(lines.count, 52, "\(lines.count) responses")
        XCTAssertEqual(lines.last?["commandId"], "last")
        XCTAssertEqual(lines.filter { $0["status"] == "error" }.count, 1)

        // One request and the end, as `printf ... | capture-agent --stdio` gives it.
        for i in 0..<3 {
            let one = try StdioDaemon(rig: nil, name: "one-\(i)", input: Wire.line(#"{"command":"ping","commandId":"only"}"#))
            XCTAssertEqual(one.waitForExit(timeout: 5), 0, "one request then the end; log:\n\(one.log.suffix(2000))")
            let deadline = Date().addingTimeInterval(5)
            while !one.stdoutFinished && Date() < deadline { usleep(10_000) }
            XCTAssertEqual(one.checkStdout().map { $0["commandId"] }, ["only"])
        }

        // stdin is /dev/null: nothing to serve, a clean exit.
        let null = try StdioDaemon(rig: nil, name: "devnull", nullInput: true)
        XCTAssertEqual(null.waitForExit(timeout: 5), 0, "stdin /dev/null; log:\n\(null.log.suffix(2000))")
    }

    func testStdioSessionGetsEventsWithoutSubscribing() throws {
        let rig = try TestRig.shared()
        let d = try StdioDaemon(rig: rig, name: "session")
        let c = d.client
        _ = try c.ok("init")
        let start = try c.ok(.startRecording, ["sessionId": "stdio-1",
                                               "channels": .array([.object(["channel_id": "display:1", "is_primary": true])])],
                             as: StartRecordingResult.self)
        XCTAssertEqual(start.state, .active, "\(start)")
        let started = try XCTUnwrap(try c.event(.recordingStarted, within: 5), "recording-started arrives without subscribeEvents")
        XCTAssertEqual(started.sessionId, "stdio-1")
        usleep(1_500_000)
        let paused = try c.ok(.pauseTracks, ["tracks": .array(["screen"])], as: TracksResult.self)
        XCTAssertEqual(paused.pausedTracks, [.screen])
        XCTAssertEqual(try c.event(.recordingPaused, within: 5)?.recordingPaused?.tracks, [.screen])
        _ = try c.ok("resumeTracks")
        XCTAssertEqual(try c.event(.recordingResumed, within: 5)?.recordingResumed?.pausedTracks, [])
        let stop = try c.ok(.stopRecording, as: StopRecordingResult.self)
        let chunks = stop.summary.channels.first?.chunks ?? 0
        XCTAssertGreaterThan(chunks, 0, "\(stop)")
        XCTAssertNotNil(try c.event(.recordingStopped, within: 5))
        let complete = try XCTUnwrap(try c.event(.recordingComplete, within: 5))
        XCTAssertEqual(complete.recordingComplete?.chunks, chunks)
        let dir = d.sessionDirectory("stdio-1") + "/display-1"
        let files = try FileManager.default.contentsOfDirectory(atPath: dir)
        XCTAssertEqual(files.filter { $0.hasSuffix(".ts") }.count, chunks, "\(files)")

        // Opting out still works.
        XCTAssertEqual(try c.ok(.unsubscribeEvents, as: SubscriptionResult.self), SubscriptionResult(subscribed: []))

        d.closeStdin()
        XCTAssertEqual(d.waitForExit(timeout: 10), 0, d.log.suffix(2000).description)
        let deadline = Date().addingTimeInterval(5)
        while !d.stdoutFinished && Date() < deadline { usleep(10_000) }
        let lines = d.checkStdout()
        let events = lines.filter { $0["type"] == "event" }
        for e in events { XCTAssertNil(Wire.eventProblem(e)) }
        XCTAssertEqual(try events.compactMap { (e) throws(CaptureError) in try ControlEvent(message: e)?.name },
                       [.recordingStarted, .recordingPaused, .recordingResumed, .recordingStopped, .recordingComplete])
    }

    func testEndOfStdinDuringASessionClosesItsChunks() throws {
        let rig = try TestRig.shared()
        let d = try StdioDaemon(rig: rig, name: "eof-session")
        _ = try d.client.ok("startRecording", ["sessionId": "stdio-eof", "channels": .array([.object(["channel_id": "display:1"])])])
        usleep(1_500_000)
        d.closeStdin()   // the parent went away
        XCTAssertEqual(d.waitForExit(timeout: 15), 0, d.log.suffix(2000).description)
        let dir = d.sessionDirectory("stdio-eof") + "/display-1"
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        let media = files.filter { $0.hasSuffix(".ts") }
        XCTAssertFalse(media.isEmpty, "\(files)")
        // Every chunk is complete: its metadata exists.
        for m in media { XCTAssertTrue(files.contains(String(m.dropLast(3)) + ".json"), "\(m) has no metadata: \(files)") }
        // And the session was closed, not abandoned: the last chunk is final, the chunks tile the
        // timeline without a gap, and the concatenation decodes.
        let channel = try RecordedChannel(dir)
        XCTAssertEqual(channel.chunks.map(\.seq), Array(0..<channel.chunks.count), "chunks missing")
        XCTAssertEqual(channel.chunks.last?.isFinal, true, "the last chunk was not closed")
        XCTAssertTrue(channel.chunks.dropLast().allSatisfy { !$0.isFinal }, "a chunk before the last is marked final")
        // Tiled on the timeline: from zero, each chunk starting where the one before ended.
        XCTAssertEqual(channel.chunks.first?.startPtsNs, 0)
        for (a, b) in zip(channel.chunks, channel.chunks.dropFirst()) {
            XCTAssertEqual(b.startPtsNs, a.startPtsNs + a.durationNs, "chunk \(b.seq) starts where chunk \(a.seq) ended")
        }
        XCTAssertEqual(try Media.decodeErrors(try channel.concatenated(into: dir + "-all.ts")), "")
    }
}

extension StdioDaemon {
    /// True once the daemon's stdout reached end of file (the copy is complete).
    var stdoutFinished: Bool { tee.isFinished }
}
