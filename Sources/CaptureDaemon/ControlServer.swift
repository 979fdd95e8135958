import CaptureControl
import CaptureCore
import CaptureSystem
import LinuxSupport
public import Dispatch
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
public import Foundation
#endif
public import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The control socket: accepts clients of the same user (SO_PEERCRED),
/// reads their lines and writes replies and events, all on one serial I/O
/// queue with non-blocking descriptors. A client that misbehaves (garbage,
/// huge lines, never reading) costs only itself.
public final class ControlServer: Sendable {
    private let listenFD: Int32
    private let service: ControlService
    private let logger: Logger
    private let queue: DispatchQueue
    private let shared: ServerState
    /// Most clients at once; more are told so and closed.
    public static let maxClients = 64

    /// - Parameter listeningSocket: a bound, listening AF_UNIX stream socket (ours or systemd's).
    public init(listeningSocket: Int32, service: ControlService, logger: Logger, queue: DispatchQueue) {
        self.listenFD = listeningSocket
        self.service = service
        self.logger = logger
        self.queue = queue
        self.shared = ServerState(queue: queue)
    }

    public func start() {
        _ = fcntl(listenFD, F_SETFL, fcntl(listenFD, F_GETFL) | O_NONBLOCK)
        queue.sync {
            let source = DispatchSource.makeReadSource(fileDescriptor: listenFD, queue: queue)
            source.setEventHandler { [self] in acceptClients() }
            source.activate()
            shared.acceptSource = source
        }
    }

    /// Stops accepting, disconnects every client.
    public func stop() {
        queue.sync {
            shared.acceptSource?.cancel()
            shared.acceptSource = nil
            for client in shared.clients.values { client.close(reason: nil) }
        }
    }

    public var clientCount: Int { queue.sync { shared.clients.count } }

    // MARK: I/O queue

    private func acceptClients() {
        while true {
            let fd: Int32
            do {
                guard let accepted = try POSIX.nonBlocking("accept4", { UnixSocketCalls.acceptNonBlocking(listenFD) }) else { return }
                fd = accepted
            } catch {
                logger.warning("accept failed", metadata: ["error": "\(error)"])
                return
            }
            let peer = UnixSocketCalls.peerCredentials(fd)
            let ok = peer != nil
            let peerUid = peer?.uid ?? 0
            let peerPid = peer?.pid ?? 0
            if !ok || peerUid != geteuid() {
                logger.warning("refused a client of another user", metadata: [
                    "uid": "\(ok ? String(peerUid) : "?")", "pid": "\(ok ? String(peerPid) : "?")"])
                refuse(fd, ControlResponse.failure(commandId: .null, error: CaptureError(
                    .permissionDenied, "this capture-agent belongs to uid \(geteuid()); connections from uid \(ok ? String(peerUid) : "?") are refused")).encodedLine())
                continue
            }
            if shared.clients.count >= Self.maxClients {
                logger.warning("too many clients; refused one", metadata: ["limit": "\(Self.maxClients)"])
                refuse(fd, ControlResponse.failure(commandId: .null, error: CaptureError(
                    .invalidState, "too many clients (\(Self.maxClients)); close some connections")).encodedLine())
                continue
            }
            let client = SocketClient(fd: fd, id: shared.nextClientId(), peerPid: peerPid, server: self)
            shared.clients[client.clientId] = client
            service.clientConnected(client)
            client.activate()
        }
    }

    fileprivate func didClose(_ client: SocketClient) {
        if shared.clients.removeValue(forKey: client.clientId) != nil {
            service.clientDisconnected(client)
        }
    }

    fileprivate var ioQueue: DispatchQueue { queue }
    fileprivate var controlService: ControlService { service }
    fileprivate var log: Logger { logger }
    fileprivate var readBuffer: UnsafeMutableRawBufferPointer { shared.readBuffer }

    /// Best effort: one line to a socket we refuse, then end of stream. The
    /// descriptor is closed a second later, after discarding what the client
    /// sent meanwhile: closing a Unix socket with unread input resets the
    /// connection, and the client would lose the line that says why.
    private func refuse(_ fd: Int32, _ line: [UInt8]) {
        line.withUnsafeBytes { _ = Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        Glibc.shutdown(fd, Int32(SHUT_WR))
        queue.asyncAfter(deadline: .now() + .seconds(1)) {
            var scratch = [UInt8](repeating: 0, count: 4096)
            while scratch.withUnsafeMutableBytes({ Glibc.recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }) > 0 {}
            Glibc.close(fd)
        }
    }
}

/// State of the server that only the I/O queue touches.
///
/// Why `@unchecked Sendable` is sound: every member is read and written only
/// from blocks running on `queue` (a serial queue), as the methods of
/// `ControlServer` and `SocketClient` that use it all run there.
private final class ServerState: @unchecked Sendable {
    let queue: DispatchQueue
    var acceptSource: (any DispatchSourceRead)?
    var clients: [Int: SocketClient] = [:]
    /// One read buffer for every client: reads happen one at a time on the queue.
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
    private static let counter = Atomic<Int>(0)

    init(queue: DispatchQueue) { self.queue = queue }
    deinit { readBuffer.deallocate() }

    func nextClientId() -> Int { Self.counter.add(1, ordering: .relaxed).newValue }
}

/// One connected socket client.
///
/// Why `@unchecked Sendable` is sound: the mutable state (`splitter`, `outbox`,
/// sources, `closed`) is touched only on the server's serial I/O queue;
/// `send` (callable from any thread) only enqueues a block on that queue.
final class SocketClient: ControlClientHandle, @unchecked Sendable {
    let clientId: Int
    let peerPid: Int32
    private let fd: Int32
    private unowned let server: ControlServer
    private var splitter = LineSplitter()
    private var outbox: [UInt8] = []
    private var outboxHead = 0
    private var readSource: (any DispatchSourceRead)?
    private var writeSource: (any DispatchSourceWrite)?
    private enum WriteWatch { case inactive, running, suspended }
    private var writeWatch = WriteWatch.inactive
    private var closed = false
    /// Request lines handed to the service and not answered yet.
    private var unanswered = 0
    /// The client shut down its sending side: answer what it asked, then close.
    private var inputEnded = false
    /// Unsent bytes beyond which a client counts as not reading (it is disconnected).
    static let maxOutbox = 8 << 20
    /// Bytes read per wake-up before yielding to other clients.
    static let readBudget = 256 << 10

    init(fd: Int32, id: Int, peerPid: Int32, server: ControlServer) {
        self.fd = fd
        self.clientId = id
        self.peerPid = peerPid
        self.server = server
    }

    func activate() {
        let read = DispatchSource.makeReadSource(fileDescriptor: fd, queue: server.ioQueue)
        read.setEventHandler { [self] in readAvailable() }
        read.setCancelHandler { [self] in sourceCancelled() }
        readSource = read
        let write = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: server.ioQueue)
        write.setEventHandler { [self] in flush() }
        write.setCancelHandler { [self] in sourceCancelled() }
        writeSource = write
        read.activate()
    }

    func send(_ line: [UInt8]) {
        server.ioQueue.async { [self] in enqueue(line) }
    }

    func respond(_ line: [UInt8]) {
        server.ioQueue.async { [self] in
            unanswered -= 1
            enqueue(line)
            closeIfDone()
        }
    }

    /// End of input (e.g. `shutdown(SHUT_WR)`, as `socat` and `nc -N` do after
    /// sending): stop reading, but answer every request read so far before
    /// closing. Closing at once dropped the answers still being made.
    private func endOfInput() {
        inputEnded = true
        readSource?.cancel()
        readSource = nil
        closeIfDone()
    }

    private func closeIfDone() {
        if inputEnded && !closed && unanswered <= 0 && outboxHead >= outbox.count { close(reason: nil) }
    }

    private func readAvailable() {
        guard !closed else { return }
        let buffer = server.readBuffer
        var budget = Self.readBudget
        while budget > 0 && !closed {
            let n: Int
            do {
                guard let read = try POSIX.nonBlocking("read", { Glibc.read(fd, buffer.baseAddress, buffer.count) }) else { return }
                n = read
            } catch {
                close(reason: "read failed: \(error)")
                return
            }
            if n == 0 { endOfInput(); return }
            budget -= n
            let service = server.controlService
            splitter.append(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) { event in
                switch event {
                case .line(let line):
                    unanswered += 1
                    service.handle(line: line, client: self)
                case .oversized(let bytes):
                    unanswered += 1
                    service.handleOversized(bytes: bytes, client: self)
                }
            }
        }
    }

    private func enqueue(_ line: [UInt8]) {
        guard !closed else { return }
        if outbox.count - outboxHead + line.count > Self.maxOutbox {
            close(reason: "the client does not read its replies (\(outbox.count - outboxHead) bytes waiting)")
            return
        }
        if outboxHead > 0 && outboxHead == outbox.count {
            outbox.removeAll(keepingCapacity: outbox.capacity <= 1 << 20)
            outboxHead = 0
        }
        outbox.append(contentsOf: line)
        flush()
    }

    private func flush() {
        guard !closed else { return }
        while outboxHead < outbox.count {
            let sent = outbox.withUnsafeBytes { raw in
                Result { () throws(SystemCallError) in
                    try POSIX.nonBlocking("send") {
                        Glibc.send(fd, raw.baseAddress! + outboxHead, raw.count - outboxHead, Int32(MSG_NOSIGNAL))
                    }
                }
            }
            switch sent {
            case .success(let n?):
                outboxHead += n
            case .success(nil):
                watchWritable(true)
                return
            case .failure(let error):
                close(reason: error.errno == EPIPE || error.errno == ECONNRESET ? nil : "write failed: \(error)")
                return
            }
        }
        outbox.removeAll(keepingCapacity: outbox.capacity <= 1 << 20)
        outboxHead = 0
        watchWritable(false)
        closeIfDone()
    }

    /// Starts or stops waiting for the socket to become writable.
    private func watchWritable(_ on: Bool) {
        guard let source = writeSource else { return }
        switch (writeWatch, on) {
        case (.inactive, true): source.activate(); writeWatch = .running
        case (.suspended, true): source.resume(); writeWatch = .running
        case (.running, false): source.suspend(); writeWatch = .suspended
        default: break
        }
    }

    /// Closes the connection (on the I/O queue). `reason` nil: a normal disconnect.
    func close(reason: String?) {
        guard !closed else { return }
        closed = true
        if let reason {
            server.log.warning("disconnecting a client", metadata: ["client": "\(clientId)", "pid": "\(peerPid)", "reason": "\(reason)"])
        }
        readSource?.cancel()
        if let write = writeSource {
            // A dispatch source must not be released suspended or inactive.
            switch writeWatch {
            case .inactive: write.activate()
            case .suspended: write.resume()
            case .running: break
            }
            write.cancel()
        }
        readSource = nil
        writeSource = nil
        server.didClose(self)
    }

    /// The descriptor is closed only when both sources stopped watching it,
    /// so a new client reusing the number is never confused with this one.
    private var sourcesCancelled = 0
    private func sourceCancelled() {
        sourcesCancelled += 1
        if sourcesCancelled == 2 { Glibc.close(fd) }
    }
}
