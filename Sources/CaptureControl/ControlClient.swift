public import CaptureCore
import CaptureSystem
internal import LinuxSupport
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
public import Glibc
#endif

/// Where the daemon's control socket lives.
public enum ControlSocketPath {
    /// `$CAPTURE_AGENT_SOCKET`, else `$XDG_RUNTIME_DIR/capture-agent/control.sock`,
    /// else `/run/user/<uid>/capture-agent/control.sock`.
    public static func resolve(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let explicit = environment["CAPTURE_AGENT_SOCKET"], !explicit.isEmpty { return explicit }
        if let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/") {
            return runtime + "/capture-agent/control.sock"
        }
        return "/run/user/\(getuid())/capture-agent/control.sock"
    }
}

/// A blocking client of the control protocol, for capturectl and tests:
/// sends requests, waits for the matching response, and keeps the events
/// that arrive meanwhile. Owned by one thread at a time (not Sendable).
public final class ControlClient {
    private let readFD: Int32
    private let writeFD: Int32
    private let ownsDescriptors: Bool
    private var splitter = LineSplitter()
    private var pendingLines: [[UInt8]] = []
    private var pendingEvents: [ControlEvent] = []
    private var closedByPeer = false

    /// Connects to the daemon's Unix socket. Throws AGENT_NOT_RUNNING when
    /// nothing listens there, PERMISSION_DENIED when the socket is not ours or the
    /// process answering on it runs as another user (SO_PEERCRED): a client hands
    /// the daemon tokens, and must not hand them to a stranger's listener.
    public init(socketPath: String) throws(CaptureError) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw CaptureError(.ioError, "cannot create a socket: \(String(cString: strerror(errno)))") }
        guard let address = UnixSocketAddress(path: socketPath) else {
            close(fd)
            throw CaptureError(.invalidRequest, "socket path is empty or longer than \(UnixSocketAddress.maxPathLength) bytes: \(socketPath)")
        }
        let result = address.connect(fd)
        if result != 0 {
            let err = errno
            close(fd)
            switch err {
            case ENOENT, ECONNREFUSED, ENOTDIR:
                throw CaptureError(.agentNotRunning,
                    "capture-agent is not running (nothing listens on \(socketPath)): start it with `systemctl --user start capture-agent.socket`, or run `capture-agent` in a terminal")
            case EACCES, EPERM:
                throw CaptureError(.permissionDenied, "no permission to use \(socketPath): the daemon belongs to another user")
            default:
                throw CaptureError(.ioError, "cannot connect to \(socketPath): \(String(cString: strerror(err)))")
            }
        }
        guard let peer = UnixSocketCalls.peerCredentials(fd) else {
            let err = errno
            close(fd)
            throw CaptureError(.ioError, "cannot tell who listens on \(socketPath): \(String(cString: strerror(err)))")
        }
        guard peer.uid == geteuid() else {
            close(fd)
            throw CaptureError(.permissionDenied,
                "\(socketPath) is served by uid \(peer.uid) (pid \(peer.pid)), not by this user (uid \(geteuid())): refusing to talk to it")
        }
        readFD = fd
        writeFD = fd
        ownsDescriptors = true
    }

    /// Talks over a pair of descriptors (e.g. pipes to `capture-agent --stdio`).
    public init(readFD: Int32, writeFD: Int32, ownsDescriptors: Bool = false) {
        self.readFD = readFD
        self.writeFD = writeFD
        self.ownsDescriptors = ownsDescriptors
    }

    deinit {
        if ownsDescriptors {
            close(readFD)
            if writeFD != readFD { close(writeFD) }
        }
    }

    /// Sends raw bytes as they are (tests of bad input).
    public func sendRaw(_ bytes: [UInt8]) throws(CaptureError) {
        var offset = 0
        let fd = writeFD
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { raw in
                Result { () throws(SystemCallError) in
                    try POSIX.call("send") { Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL)) }
                }
            }
            switch sent {
            case .success(let n):
                offset += n
            case .failure(let error) where error.errno == ENOTSOCK:
                // A pipe (stdio transport), not a socket.
                let written = bytes.withUnsafeBytes { raw in
                    Result { () throws(SystemCallError) in
                        try POSIX.writeAll(fd, UnsafeRawBufferPointer(rebasing: raw[offset...]))
                    }
                }
                if case .failure(let error) = written { throw error.captureError("write failed") }
                return
            case .failure(let error):
                throw CaptureError(.ioError, "the daemon closed the connection (\(error))")
            }
        }
    }

    public func send(_ request: ControlRequest) throws(CaptureError) {
        try sendRaw(request.encodedLine())
    }

    /// Sends `command` and waits for its response. Returns the result on
    /// success; throws the daemon's error (with its code) on failure, TIMEOUT
    /// when no reply came in time. Events seen meanwhile are kept for `nextEvent`.
    @discardableResult
    public func call(_ command: String, params: [String: JSONValue] = [:], timeout: Duration = .seconds(60)) throws(CaptureError) -> JSONValue {
        let request = ControlRequest(command: command, params: params)
        try send(request)
        let deadline = MonotonicClock.now() + timeout.nanoseconds
        while true {
            let remaining = deadline - MonotonicClock.now()
            guard remaining > 0, let message = try nextMessage(timeoutNs: remaining) else {
                if closedByPeer { throw CaptureError(.ioError, "the daemon closed the connection before answering \(command)") }
                throw CaptureError(.timeout, "no answer to \(command) within \(timeout)")
            }
            if let event = try ControlEvent(message: message) {
                pendingEvents.append(event)
                continue
            }
            guard message["type"]?.stringValue == "response", message["commandId"] == request.commandId else { continue }
            if message["status"]?.stringValue == "success" {
                return message["result"] ?? .null
            }
            let code = message["code"]?.stringValue.flatMap(CaptureErrorCode.init(rawValue:)) ?? .internalError
            throw CaptureError(code, message["result"]?.stringValue ?? "unknown error")
        }
    }

    /// `call`, with the result read as `Result` (the result structs of Results.swift).
    /// A result that is not one is INTERNAL_ERROR: this client and the daemon disagree.
    public func call<Result: Decodable>(_ command: ControlCommand, params: [String: JSONValue] = [:], as type: Result.Type,
                                        timeout: Duration = .seconds(60)) throws(CaptureError) -> Result {
        let value = try call(command.rawValue, params: params, timeout: timeout)
        do {
            return try value.decode(Result.self)
        } catch {
            throw CaptureError(.internalError, "the daemon's \(command.rawValue) result is not what this client understands: \(error)")
        }
    }

    /// The next event (kept from earlier calls first), or nil after `timeoutNs`.
    public func nextEvent(timeoutNs: Int64) throws(CaptureError) -> ControlEvent? {
        if !pendingEvents.isEmpty { return pendingEvents.removeFirst() }
        let deadline = MonotonicClock.now() + timeoutNs
        while true {
            let remaining = deadline - MonotonicClock.now()
            guard remaining > 0, let message = try nextMessage(timeoutNs: remaining) else { return nil }
            if let event = try ControlEvent(message: message) { return event }
        }
    }

    /// Waits for an event with this name, keeping the others in order.
    public func waitForEvent(_ name: ControlEventName, timeoutNs: Int64) throws(CaptureError) -> ControlEvent? {
        if let i = pendingEvents.firstIndex(where: { $0.name == name }) { return pendingEvents.remove(at: i) }
        let deadline = MonotonicClock.now() + timeoutNs
        var others: [ControlEvent] = []
        defer { pendingEvents.append(contentsOf: others) }
        while true {
            let remaining = deadline - MonotonicClock.now()
            guard remaining > 0, let message = try nextMessage(timeoutNs: remaining) else { return nil }
            guard let event = try ControlEvent(message: message) else { continue }
            if event.name == name { return event }
            others.append(event)
        }
    }

    /// Events received but not yet handed out.
    public var bufferedEvents: [ControlEvent] { pendingEvents }

    /// True once the daemon closed the connection.
    public var isClosed: Bool { closedByPeer && pendingLines.isEmpty }

    /// The next message line as JSON (lines that are not protocol lines are
    /// skipped), or nil after `timeoutNs` or when the peer closed.
    public func nextMessage(timeoutNs: Int64) throws(CaptureError) -> JSONValue? {
        // Skipping a line keeps the caller's deadline (it used to leave 0 ns for the next one).
        let deadline = MonotonicClock.now() + max(0, timeoutNs)
        let prefix = ControlFraming.prefixBytes
        while true {
            guard let line = try nextLine(timeoutNs: deadline - MonotonicClock.now()) else { return nil }
            guard line.count > prefix.count, line[0..<prefix.count].elementsEqual(prefix) else { continue }
            guard let value = try? JSONCoding.decoder.decode(JSONValue.self, from: Data(line[prefix.count...])) else {
                throw CaptureError(.internalError, "the daemon sent a line that is not JSON")
            }
            return value
        }
    }

    /// The next raw line, or nil after `timeoutNs` (0: only what is already here) or at end of stream.
    public func nextLine(timeoutNs: Int64) throws(CaptureError) -> [UInt8]? {
        let deadline = MonotonicClock.now() + max(0, timeoutNs)
        var buffer = [UInt8](repeating: 0, count: 65536)
        while pendingLines.isEmpty {
            if closedByPeer { return nil }
            let remainingMs = Int32(clamping: max(0, (deadline - MonotonicClock.now()) / 1_000_000))
            var pfd = pollfd(fd: readFD, events: Int16(POLLIN), revents: 0)
            let ready: Int32
            do { ready = try POSIX.call("poll") { poll(&pfd, 1, remainingMs) } } catch {
                throw error.captureError("waiting for the daemon")
            }
            if ready == 0 { return nil }
            let fd = readFD
            let got = buffer.withUnsafeMutableBytes { raw in
                Result { () throws(SystemCallError) in try POSIX.nonBlocking("read") { read(fd, raw.baseAddress!, raw.count) } }
            }
            let n: Int
            switch got {
            case .success(let count?): n = count
            case .success(nil): continue
            case .failure(let error) where error.errno == ECONNRESET: closedByPeer = true; continue
            case .failure(let error): throw error.captureError("reading from the daemon")
            }
            if n == 0 { closedByPeer = true; continue }
            buffer.withUnsafeBytes { raw in
                splitter.append(UnsafeRawBufferPointer(rebasing: raw[0..<n])) { event in
                    if case .line(let l) = event { pendingLines.append(l) }
                }
            }
        }
        return pendingLines.removeFirst()
    }
}
