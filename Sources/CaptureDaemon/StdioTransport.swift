import CaptureControl
import CaptureCore
import Dispatch
import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The protocol on stdin/stdout, for one client that started us as its child
/// (the VideoDB SDK does this). stdout carries only protocol lines; logs go to
/// stderr. End of stdin means the parent went away: `onEnd` runs.
///
/// stdin is read on the I/O queue through a read source; stdout is written
/// with blocking writes on a queue of its own, so a slow reader never stalls
/// the daemon. If more than `maxPending` bytes wait, events are dropped (and
/// counted) rather than growing without bound.
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
    /// serial `ioQueue` (start, stop and the read handler all run there).
    private final class ReaderState: @unchecked Sendable {
        var splitter = LineSplitter()
        var source: (any DispatchSourceRead)?
        var ended = false
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
        deinit { buffer.deallocate() }
    }

    public init(service: ControlService, logger: Logger, ioQueue: DispatchQueue, onEnd: @escaping @Sendable () -> Void) {
        self.service = service
        self.logger = logger
        self.ioQueue = ioQueue
        self.onEnd = onEnd
    }

    public func start() {
        service.clientConnected(self)
        ioQueue.sync {
            let source = DispatchSource.makeReadSource(fileDescriptor: STDIN_FILENO, queue: ioQueue)
            source.setEventHandler { [self] in readAvailable() }
            reader.source = source
            source.activate()
        }
    }

    public func stop() {
        ioQueue.sync {
            reader.source?.cancel()
            reader.source = nil
        }
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
            var offset = 0
            line.withUnsafeBytes { raw in
                while offset < raw.count {
                    let n = write(STDOUT_FILENO, raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        return   // stdout closed: the parent is gone; stdin's end will follow
                    }
                    offset += n
                }
            }
            pending.subtract(line.count, ordering: .relaxed)
        }
    }

    private func readAvailable() {
        let buffer = reader.buffer
        let n = read(STDIN_FILENO, buffer.baseAddress, buffer.count)
        if n < 0 && (errno == EINTR || errno == EAGAIN) { return }
        if n <= 0 {
            reader.source?.cancel()
            reader.source = nil
            if !reader.ended {
                reader.ended = true
                logger.notice("stdin closed; shutting down")
                service.clientDisconnected(self)
                onEnd()
            }
            return
        }
        let service = self.service
        reader.splitter.append(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) { event in
            switch event {
            case .line(let line): service.handle(line: line, client: self)
            case .oversized(let bytes): service.handleOversized(bytes: bytes, client: self)
            }
        }
    }
}
