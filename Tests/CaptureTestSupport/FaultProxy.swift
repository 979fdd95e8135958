import CaptureCore
import CaptureSystem
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A TCP proxy on loopback that injects network faults between an uplink client and
/// a real endpoint, for the tests (the injected fault is the only fake part):
///
/// - `.pass`: bytes flow as they come.
/// - `.blackhole`: nothing moves in either direction, on open connections and on new
///   ones (accepted, never answered): a peer that vanished without a RST.
/// - `.impaired(delayMs:lossPercent:)`: each direction is cut into 1448-byte segments
///   (a TCP segment on Ethernet), each delivered `delayMs` later, and `lossPercent` of
///   them once more a retransmission timeout later, in order (head-of-line blocking,
///   as TCP does after a lost segment). This stands in for `tc netem`, which this
///   machine's kernel does not have (no sch_netem).
///
/// `injectOnNextConnection` makes the next connection's endpoint side misbehave right
/// after the first message it sends (the welcome): a binary frame, a text frame over the
/// protocol's limit, text that is not JSON, or a frame cut off by a close; or cuts the
/// connection (both ways, no close frame) once the client has sent `cutUpstreamAfter`
/// bytes: a chunk frame that never arrives whole.
public final class FaultProxy: @unchecked Sendable {
    public enum Mode: Sendable, Equatable {
        case pass
        case blackhole
        case impaired(delayMs: Int, lossPercent: Int)
    }

    public enum Injection: Sendable, Equatable {
        case binaryFrame
        case oversizedText
        case notJSON
        case closeMidFrame
        case cutUpstreamAfter(bytes: Int)
    }

    public let port: Int
    let upstreamPort: Int
    private let listenFD: Int32
    private let state = Mutex<(mode: Mode, injections: [Injection], connections: Int, stopped: Bool)>((.pass, [], 0, false))
    /// Retransmission timeout of a lost segment (Linux's minimum RTO plus the round trip).
    static let retransmitMs = 200

    public init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        listenFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(listenFD, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = listenFD
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Bool in
                bind(fd, p, length) == 0 && getsockname(fd, p, &length) == 0
            }
        }
        guard ok, listen(listenFD, 64) == 0 else {
            close(listenFD)
            throw CaptureError(.ioError, "the fault proxy cannot listen")
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "fault-proxy"
        thread.start()
    }

    deinit { stop() }

    public var mode: Mode {
        get { state.withLock { $0.mode } }
        set { state.withLock { $0.mode = newValue } }
    }

    /// Connections accepted so far.
    public var connections: Int { state.withLock { $0.connections } }

    public func injectOnNextConnection(_ injection: Injection) {
        state.withLock { $0.injections.append(injection) }
    }

    public func stop() {
        let first = state.withLock { s -> Bool in
            defer { s.stopped = true }
            return !s.stopped
        }
        if first { shutdown(listenFD, Int32(SHUT_RDWR)); close(listenFD) }
    }

    private var stopped: Bool { state.withLock { $0.stopped } }

    private func acceptLoop() {
        while !stopped {
            let client = accept(listenFD, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            let injection = state.withLock { s -> Injection? in
                s.connections += 1
                return s.injections.isEmpty ? nil : s.injections.removeFirst()
            }
            let connection = Thread { [self] in serve(client, injection: injection) }
            connection.start()
        }
    }

    private func serve(_ client: Int32, injection: Injection?) {
        // A blackholed new connection: accepted (the kernel did), then never a byte.
        while mode == .blackhole && !stopped { usleep(50_000) }
        guard let upstream = Loopback.connect(port: upstreamPort) else {
            close(client)
            return
        }
        let upDone = DispatchSemaphore(value: 0)
        var cutAfter: Int?
        var downstreamInjection = injection
        if case .cutUpstreamAfter(let bytes) = injection {
            cutAfter = bytes
            downstreamInjection = nil
        }
        let up = Thread { [self, cutAfter] in
            pump(from: client, to: upstream, injection: nil, cutAfter: cutAfter)
            upDone.signal()
        }
        up.start()
        pump(from: upstream, to: client, injection: downstreamInjection)
        upDone.wait()
        close(client)
        close(upstream)
    }

    /// One direction: reads, cuts into segments, and hands each to a delay line that
    /// delivers it when the mode says (a thread of its own, so a delay does not slow the
    /// reading: the delay is latency, not a bandwidth cap).
    private func pump(from source: Int32, to sink: Int32, injection: Injection?, cutAfter: Int? = nil) {
        let line = DelayLine(sink: sink)
        let writer = Thread { line.run() }
        writer.start()
        defer {
            line.finish()
            shutdown(source, Int32(SHUT_RD))
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        var lastDeliveryNs: Int64 = 0
        var downstream = injection.map { _ in FrameSplitter() }
        var pendingInjection = injection
        var seed = UInt64(truncatingIfNeeded: MonotonicClock.now()) | 1
        var forwarded = 0
        while !stopped && !line.failed {
            while mode == .blackhole && !stopped { usleep(50_000) }
            var pfd = pollfd(fd: source, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, 100)
            if ready == 0 { continue }
            if ready < 0 { if errno == EINTR { continue } else { return } }
            if mode == .blackhole { continue }   // it went dark while we waited
            let n = buffer.withUnsafeMutableBytes { recv(source, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            var bytes = Array(buffer[0..<n])
            if let cutAfter, forwarded + bytes.count > cutAfter {
                // The part up to the cut goes; then the connection ends both ways, no close frame.
                line.push(Array(bytes[0..<(cutAfter - forwarded)]), at: 0)
                line.finish()
                usleep(100_000)   // the delay line's writer hands those bytes to the socket first
                shutdown(sink, Int32(SHUT_RDWR))
                shutdown(source, Int32(SHUT_RDWR))
                return
            }
            forwarded += bytes.count
            if var splitter = downstream, let injection = pendingInjection {
                // Forward up to the end of the first complete frame after the 101, then misbehave.
                if let cut = splitter.feed(bytes) {
                    line.push(Array(bytes[0..<cut]), at: 0)
                    pendingInjection = nil
                    downstream = nil
                    switch injection {
                    case .binaryFrame:
                        line.push(Self.frame(opcode: 0x2, payload: Array(repeating: 0xAB, count: 300)), at: 0)
                    case .oversizedText:
                        line.push(Self.frame(opcode: 0x1, payload: Array(repeating: UInt8(ascii: "x"), count: 100 << 10)), at: 0)
                    case .notJSON:
                        line.push(Self.frame(opcode: 0x1, payload: Array("this is not json {".utf8)), at: 0)
                    case .closeMidFrame:
                        // A text frame that says 4096 bytes, 100 of them, then the connection ends.
                        line.push([0x81, 126, 0x10, 0x00] + Array(repeating: UInt8(ascii: "{"), count: 100), at: 0)
                        return
                    case .cutUpstreamAfter:
                        break   // the other direction's
                    }
                    bytes = Array(bytes[cut...])
                    if bytes.isEmpty { continue }
                } else {
                    downstream = splitter
                }
            }
            switch mode {
            case .pass, .blackhole:
                line.push(bytes, at: 0)
            case .impaired(let delayMs, let lossPercent):
                var offset = 0
                while offset < bytes.count {
                    let segment = Array(bytes[offset..<min(bytes.count, offset + 1448)])
                    offset += segment.count
                    seed = seed &* 6364136223846793005 &+ 1442695040888963407
                    let lost = Int((seed >> 33) % 100) < lossPercent
                    let due = MonotonicClock.now() + Int64(delayMs + (lost ? Self.retransmitMs + 2 * delayMs : 0)) * 1_000_000
                    // In order: a late segment holds back the ones after it.
                    lastDeliveryNs = max(lastDeliveryNs, due)
                    line.push(segment, at: lastDeliveryNs)
                }
            }
        }
    }

    /// An unmasked (server) WebSocket frame.
    static func frame(opcode: UInt8, payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x80 | opcode]
        if payload.count < 126 {
            out.append(UInt8(payload.count))
        } else if payload.count < 65536 {
            out += [126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            out.append(127)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((payload.count >> shift) & 0xFF)) }
        }
        return out + payload
    }
}

/// Finds, in a server's byte stream, the end of the HTTP response head and of the first
/// WebSocket frame after it.
struct FrameSplitter {
    private var seen: [UInt8] = []
    private var consumed = 0

    /// Feeds a read; returns the offset in `bytes` just past the first frame, once it is complete.
    mutating func feed(_ bytes: [UInt8]) -> Int? {
        let start = seen.count
        seen += bytes
        guard let headEnd = Self.find([13, 10, 13, 10], in: seen) else { return nil }
        var i = headEnd + 4
        guard seen.count >= i + 2 else { return nil }
        var length = Int(seen[i + 1] & 0x7F)
        i += 2
        if length == 126 {
            guard seen.count >= i + 2 else { return nil }
            length = Int(seen[i]) << 8 | Int(seen[i + 1])
            i += 2
        } else if length == 127 {
            guard seen.count >= i + 8 else { return nil }
            length = (0..<8).reduce(0) { $0 << 8 | Int(seen[i + $1]) }
            i += 8
        }
        guard seen.count >= i + length else { return nil }
        return i + length - start
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i..<(i + needle.count)].elementsEqual(needle) {
            return i
        }
        return nil
    }
}

/// Bytes waiting to be written to one socket at their due times, in order.
final class DelayLine: @unchecked Sendable {
    // Why @unchecked Sendable is sound: `queue`, `ended` and `writeFailed` are touched only with `condition` locked.
    private let sink: Int32
    private let condition = NSCondition()
    private var queue: [(due: Int64, bytes: [UInt8])] = []
    private var ended = false
    private var writeFailed = false

    init(sink: Int32) { self.sink = sink }

    /// send(2) with MSG_NOSIGNAL: a peer that went away is an error here, not SIGPIPE.
    static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = (try? POSIX.call("send") { Glibc.send(fd, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }) ?? -1
            if n <= 0 { return false }
            done += n
        }
        return true
    }

    var failed: Bool { condition.lock(); defer { condition.unlock() }; return writeFailed }

    func push(_ bytes: [UInt8], at due: Int64) {
        condition.lock()
        queue.append((due, bytes))
        condition.signal()
        condition.unlock()
    }

    /// No more bytes: the writer delivers what is queued, then shuts the sink's write side.
    func finish() {
        condition.lock()
        ended = true
        condition.signal()
        condition.unlock()
    }

    func run() {
        while true {
            condition.lock()
            while queue.isEmpty && !ended { condition.wait() }
            if queue.isEmpty && ended {
                condition.unlock()
                shutdown(sink, Int32(SHUT_WR))
                return
            }
            let next = queue.removeFirst()
            condition.unlock()
            let wait = next.due - MonotonicClock.now()
            if wait > 0 { usleep(UInt32(min(wait / 1000, 10_000_000))) }
            let ok = next.bytes.withUnsafeBytes { raw in Self.sendAll(sink, raw) }
            if !ok {
                condition.lock()
                writeFailed = true
                queue.removeAll()
                condition.unlock()
            }
        }
    }
}
