import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `capture-agent --stdio` in a Wayland desktop, as the VideoDB SDK runs it (as the desktop's
/// user, with pipes on stdin and stdout), with a state directory of its own: its spool and
/// its kept screen-sharing consent.
final class DesktopAgent {
    let rig: WaylandRig
    let stateHome: String
    let logPath: String
    let process: Process
    let client: ControlClient
    private var toChild: Int32

    init(rig: WaylandRig, stateHome: String, settings: [String: String] = [:]) throws {
        self.rig = rig
        self.stateHome = stateHome
        logPath = stateHome + "/../agent-\(UInt32.random(in: 0...UInt32.max)).log"
        var stdinPipe: [Int32] = [-1, -1]
        var stdoutPipe: [Int32] = [-1, -1]
        // A write to an agent that died must fail with EPIPE, not end the test process.
        signal(SIGPIPE, SIG_IGN)
        guard pipe(&stdinPipe) == 0, pipe(&stdoutPipe) == 0 else { throw CaptureError(.ioError, "pipe failed") }
        for fd in stdinPipe + stdoutPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var env = ["XDG_STATE_HOME": stateHome, "CAPTURE_AGENT_LOG_LEVEL": "debug"]
        for (key, value) in settings { env["CAPTURE_AGENT_" + key.uppercased()] = value }
        process = try rig.spawn([rig.binary("capture-agent"), "--stdio"], env: env, log: logPath,
                                stdin: FileHandle(fileDescriptor: stdinPipe[0], closeOnDealloc: false),
                                stdout: FileHandle(fileDescriptor: stdoutPipe[1], closeOnDealloc: false))
        close(stdinPipe[0])
        close(stdoutPipe[1])
        toChild = stdinPipe[1]
        client = ControlClient(readFD: stdoutPipe[0], writeFD: stdinPipe[1])
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Sends `command` and waits for its answer (a dialog may be open meanwhile). A failure
    /// carries the end of the agent's log.
    func call(_ command: String, _ params: [String: JSONValue] = [:], timeout: Duration = .seconds(90)) throws -> JSONValue {
        do {
            return try client.call(command, params: params, timeout: timeout)
        } catch {
            let exit = process.isRunning ? "still running" : "exited (\(process.terminationReason == .exit ? "status" : "signal") \(process.terminationStatus))"
            throw CaptureError(error.code, "\(error.message); the agent \(exit); its log ends:\n\(log.suffix(4000))")
        }
    }

    /// Sends `command` without waiting; `answer()` collects the reply later.
    func send(_ command: String, _ params: [String: JSONValue] = [:]) throws -> String {
        let id = "c-\(UInt32.random(in: 0...UInt32.max))"
        try client.send(ControlRequest(command: command, commandId: .string(id), params: params))
        return id
    }

    /// The reply to `id` (events arriving meanwhile are kept for `events`).
    func answer(_ id: String, timeout: Double = 90) throws -> (ok: Bool, value: JSONValue) {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let message = try client.nextMessage(timeoutNs: 500_000_000) else { continue }
            if let event = try ControlEvent(message: message) {
                collected.append(event)
                continue
            }
            guard message["type"]?.stringValue == "response", message["commandId"]?.stringValue == id else { continue }
            return (message["status"]?.stringValue == "success", message["result"] ?? .null)
        }
        throw CaptureError(.timeout, "no answer to \(id) within \(timeout) s")
    }

    private var collected: [ControlEvent] = []
    private var shutDown = false

    /// Every event received so far, by name (in order).
    func events(_ name: ControlEventName) -> [ControlEvent] {
        while let event = try? client.nextEvent(timeoutNs: 0) { collected.append(event) }
        return collected.filter { $0.name == name }
    }

    /// Waits until an event named `name` for which `match` holds has arrived (earlier ones count).
    @discardableResult
    func waitForEvent(_ name: ControlEventName, timeout: Double = 30, _ match: (ControlEvent) -> Bool = { _ in true })
        throws -> ControlEvent
    {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let found = events(name).first(where: match) { return found }
            guard Date() < deadline else { throw CaptureError(.timeout, "no \(name.rawValue) event within \(timeout) s") }
            if let event = try client.nextEvent(timeoutNs: 200_000_000) { collected.append(event) }
        }
    }

    /// Ends the agent as the SDK does (shutdown, then end of stdin); it must exit by itself,
    /// with status 0 (a crash fails the test that ran it). Once: later calls do nothing.
    func shutdown(file: StaticString = #filePath, line: UInt = #line) {
        guard !shutDown else { return }
        shutDown = true
        let wasRunning = process.isRunning
        _ = try? client.call("shutdown", timeout: .seconds(30))
        if toChild >= 0 { close(toChild); toChild = -1 }
        let deadline = Date().addingTimeInterval(40)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            XCTFail("the agent did not exit after shutdown", file: file, line: line)
            process.terminate()
            process.waitUntilExit()
        }
        XCTAssertTrue(wasRunning, "the agent was gone before shutdown:\n\(log.suffix(3000))", file: file, line: line)
        XCTAssertEqual(process.terminationReason, .exit, "the agent died of a signal:\n\(log.suffix(3000))", file: file, line: line)
        XCTAssertEqual(process.terminationStatus, 0, "\(log.suffix(3000))", file: file, line: line)
    }

    /// Kills the agent outright (`rig run` exec's it: the process is the agent).
    func kill() {
        Glibc.kill(process.processIdentifier, SIGKILL)
        if toChild >= 0 { close(toChild); toChild = -1 }
        process.waitUntilExit()
    }

    deinit {
        if process.isRunning { kill() }
    }
}

/// `capture-agent record` running in the desktop (as its user), its output in a log.
struct DesktopRecording {
    let process: Process
    let log: String

    /// Starts it with the agent state `state` (its kept consent, its spool).
    init(_ rig: WaylandRig, state: String, out: String, seconds: Int, channels: [String] = ["display:1"],
         extra: [String] = []) throws {
        log = out + ".log"
        var args = [rig.binary("capture-agent"), "record", "--out", out, "--duration", "\(seconds)s", "--log-level", "debug"]
        for channel in channels { args += ["--channel", channel] }
        process = try rig.spawn(args + extra, env: ["XDG_STATE_HOME": state], log: log)
    }

    /// Waits for it (at most `timeout` s); its exit status and output. A signal fails the test.
    func finish(timeout: Double = 120, file: StaticString = #filePath, line: UInt = #line) -> (status: Int32, log: String) {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        if process.isRunning { process.terminate(); process.waitUntilExit() }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        XCTAssertEqual(process.terminationReason, .exit, "record died of a signal:\n\(text.suffix(3000))", file: file, line: line)
        return (process.terminationStatus, text)
    }
}

extension DesktopAgent {
    /// Starts a session of `channels`, the dialog answered by sharing monitor `monitor`.
    func startSharing(_ sessionId: String, channels: [String] = ["display:1"], monitor: Int = 1) throws {
        let start = try send("startRecording", ["sessionId": .string(sessionId),
                                                "channels": .array(channels.map { .object(["channel_id": .string($0)]) })])
        try rig.consent(.share(monitor: monitor))
        let started = try answer(start)
        guard started.ok else { throw CaptureError(.internalError, "startRecording failed: \(started.value)") }
    }
}

/// What the tests look at in a recording.
enum Recording {
    /// The chunks of one channel directory, each probed: (width, height, frames) of the video.
    static func videoChunks(_ directory: String) throws -> [(path: String, width: Int, height: Int, frames: Int)] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".ts") }.sorted()
        return try names.map { name in
            let path = directory + "/" + name
            let r = try runProcess("ffprobe", ["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                                               "stream=width,height,nb_read_frames", "-of", "csv=p=0", path], timeout: .seconds(60))
            // The stream is listed once under its program and once on its own: the first line.
            let first = r.stdout.split(separator: "\n").first ?? ""
            let fields = first.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard r.status == 0, fields.count == 3 else {
                throw CaptureError(.ioError, "ffprobe cannot read \(path): \(r.stderr)")
            }
            return (path, fields[0], fields[1], fields[2])
        }
    }

    /// One file of a channel's chunks in order.
    static func concatenate(_ directory: String, into path: String) throws -> String {
        try RecordedChannel(directory).concatenated(into: path)
    }

    /// How many different pictures the region `crop` (w:h:x:y) shows over the file.
    static func distinctFrames(_ file: String, crop: PixelRect) throws -> Int {
        let r = try runProcess("ffmpeg", ["-nostdin", "-v", "error", "-i", file, "-vf",
                                          "crop=\(crop.width):\(crop.height):\(crop.x):\(crop.y)", "-f", "framemd5", "-"],
                               timeout: .seconds(120))
        guard r.status == 0 else { throw CaptureError(.ioError, "ffmpeg framemd5 failed: \(r.stderr)") }
        return Set(r.stdout.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap { $0.split(separator: ",").last }).count
    }

    /// One frame (index `n`) of the file as raw BGR24 of `width` x `height`.
    static func frame(_ file: String, index n: Int, width: Int, height: Int) throws -> [UInt8] {
        let r = try runProcessData("ffmpeg", ["-nostdin", "-v", "error", "-i", file, "-vf", "select=eq(n\\,\(n))",
                                              "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"], timeout: .seconds(60))
        guard r.status == 0, r.stdout.count == width * height * 3 else {
            throw CaptureError(.ioError, "frame \(n) of \(file): \(r.stdout.count) bytes, \(r.stderr)")
        }
        return r.stdout
    }

    /// Whether every video packet lies on the 1/fps grid (90 kHz ticks, within one tick).
    static func offGridPackets(_ file: String, fps: Int) throws -> [Double] {
        let packets = try Media.packetTimestamps(file, stream: "v:0")
        guard let first = packets.first?.pts else { return [] }
        return packets.map(\.pts).filter { pts in
            let slots = (pts - first) * Double(fps)
            return abs(slots - slots.rounded()) * 90_000 / Double(fps) > 1.5
        }
    }
}
