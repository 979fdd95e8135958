import CaptureControl
import CaptureCore
import CaptureConcurrency
import CaptureSystem
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

/// The protocol on stdin/stdout, for one client that started us as its child
/// (the VideoDB SDK does this). stdout carries only protocol lines; logs go to
/// stderr. The client gets every event without subscribing (the SDK never
/// sends subscribeEvents). End of stdin means the parent went away: `onEnd` runs.
///
/// stdin is read with blocking reads on a thread of its own and every chunk
/// is handled on the I/O queue; stdout is written with blocking writes on a
/// queue of its own, so a slow reader never stalls the daemon. If more than
/// `maxPending` bytes wait, further lines (responses too) are dropped and
/// logged rather than growing without bound.
public final class StdioTransport: ControlClientHandle, Sendable {
    public let clientId = 0
    private let service: ControlService
    private let logger: Logger
    private let ioQueue: DispatchQueue
    private let writeQueue = DispatchQueue(label: "capture-agent.stdout")
    private let pending = Atomic<Int>(0)
    private let dropped = Atomic<Int>(0)
    private let reader = ReaderState()
    private let onEnd: @Sendable () -> Void
    static let maxPending = 16 << 20

    /// Why `@unchecked Sendable` is sound: touched only by blocks on the
    /// serial `ioQueue` (stop and the reader thread's `ioQueue.sync` blocks).
    private final class ReaderState: @unchecked Sendable {
        var splitter = LineSplitter()
        var ended = false
    }

    public init(service: ControlService, logger: Logger, ioQueue: DispatchQueue, onEnd: @escaping @Sendable () -> Void) {
        self.service = service
        self.logger = logger
        self.ioQueue = ioQueue
        self.onEnd = onEnd
    }

    public func start() {
        service.clientConnected(self)
        service.subscribeToAllEvents(self)   // the SDK never sends subscribeEvents
        DetachedThread.start { [self] in readLoop() }
    }

    public func stop() {
        ioQueue.sync { reader.ended = true }   // input read after this is ignored
        writeQueue.sync {}   // drain what was queued
    }

    public func send(_ line: [UInt8]) {
        if pending.load(ordering: .relaxed) + line.count > Self.maxPending {
            if dropped.add(1, ordering: .relaxed).newValue == 1 {
                logger.warning("stdout is not being read; dropping messages")
            }
            return
        }
        pending.add(line.count, ordering: .relaxed)
        writeQueue.async { [self] in
            // A failure means stdout is closed: the parent is gone and stdin's end will follow.
            line.withUnsafeBytes { raw in _ = try? POSIX.writeAll(STDOUT_FILENO, raw) }
            pending.subtract(line.count, ordering: .relaxed)
        }
    }

    /// Blocking reads until the end of stdin; lines are handled on the I/O queue.
    ///
    /// No dispatch read source: once the writer of a pipe is gone, epoll keeps
    /// reporting EPOLLHUP for it, and cancelling the source then crashed
    /// libdispatch's manager thread (_dispatch_event_loop_drain, null pointer)
    /// in a few percent of exits; the source also fired only once when the data
    /// and the end of stdin arrived together, so the end went unseen and the
    /// daemon never exited; and it never fired for a /dev/null stdin.
    private func readLoop() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
        defer { buffer.deallocate() }
        let service = self.service
        while true {
            // The end of stdin; an error means the same here.
            guard let n = try? POSIX.call("read", { read(STDIN_FILENO, buffer.baseAddress, buffer.count) }), n > 0 else { break }
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            let stopped = ioQueue.sync { () -> Bool in
                guard !reader.ended else { return true }
                reader.splitter.append(chunk) { event in
                    switch event {
                    case .line(let line): service.handle(line: line, client: self)
                    case .oversized(let bytes): service.handleOversized(bytes: bytes, client: self)
                    }
                }
                return false
            }
            if stopped { return }
        }
        let first = ioQueue.sync { () -> Bool in
            guard !reader.ended else { return false }
            reader.ended = true
            return true
        }
        guard first else { return }
        logger.notice("stdin closed; shutting down")
        service.clientDisconnected(self)
        onEnd()
    }
}
