public import CaptureCore
public import CaptureUplink
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
public import Foundation
#endif
import Synchronization

/// The uplink's numbers, written by its service thread and read by anyone
/// (status, the benchmark) without waiting.
public final class UplinkCounters: Sendable {
    let acknowledgedChunks = Atomic<Int>(0)
    let acknowledgedBytes = Atomic<Int>(0)
    let duplicates = Atomic<Int>(0)
    let refusedChunks = Atomic<Int>(0)
    let unreadableChunks = Atomic<Int>(0)
    let protocolViolations = Atomic<Int>(0)
    let bytesSent = Atomic<Int>(0)
    let connections = Atomic<Int>(0)
    let connected = Atomic<Bool>(false)
    let incompatibleEndpoint = Atomic<Bool>(false)
    let pendingChunks = Atomic<Int>(0)
    let pendingBytes = Atomic<Int>(0)
    let oldestPendingCaptureNs = Atomic<Int64>(0)
    let phase = Atomic<Int>(0)
    /// CPU time of the uplink's thread so far (updated every tick).
    let threadCPUNs = Atomic<Int64>(0)
    /// Acknowledged chunks per channel (a lock per ack: a few a second).
    let perChannel = Mutex<[String: Int]>([:])

    init() {}

    func acknowledge(_ chunk: ChunkMetadata, duplicate: Bool) {
        acknowledgedChunks.add(1, ordering: .relaxed)
        acknowledgedBytes.add(chunk.bytes, ordering: .relaxed)
        if duplicate { duplicates.add(1, ordering: .relaxed) }
        perChannel.withLock { $0[chunk.channelId, default: 0] += 1 }
    }

    static let phases: [UplinkMachine.Phase] = [.waiting, .connecting, .greeting, .streaming, .ending, .finished,
                                                 .needsToken, .stopped]
    static func code(_ phase: UplinkMachine.Phase) -> Int { phases.firstIndex(of: phase) ?? 0 }
}

/// One session's upload to a capture endpoint: the facade the daemon and
/// `capture-agent record` use. Thread-safe; every call returns at once (the work
/// happens on the uplink's own thread, see `UplinkLoop`).
///
/// Lifecycle: `start` connects (when it has a token) and uploads each chunk
/// `offer` names, deleting it from the spool on its ack; `finishCapture` says no
/// more chunks come, and once everything is acknowledged the endpoint ends the
/// stream (`complete` report). `stop` ends the thread at any point; what is not
/// acknowledged stays in the spool for a later upload.
public final class SessionUplink: Sendable {
    public struct Configuration: Sendable {
        public var target: UplinkTarget
        public var sessionId: String
        public var channels: [UplinkChannel]
        public var sessionDirectory: String
        public var agent = "capture-agent"
        /// PEM CA bundle for wss (nil: the system's).
        public var caFile: String?
        /// Production timing unless a test overrides it (`Timing.withTestOverrides`).
        public var timing = UplinkMachine.Timing.withTestOverrides()

        public init(target: UplinkTarget, sessionId: String, channels: [UplinkChannel], sessionDirectory: String) {
            self.target = target
            self.sessionId = sessionId
            self.channels = channels
            self.sessionDirectory = sessionDirectory
        }
    }

    public let configuration: Configuration
    public let counters = UplinkCounters()
    private let loop: UplinkLoop

    public init(_ configuration: Configuration, token: String?,
                onReport: @escaping @Sendable (UplinkMachine.UplinkReport) -> Void) throws(CaptureError) {
        self.configuration = configuration
        let machine = UplinkMachine(sessionId: configuration.sessionId, channels: configuration.channels, token: token,
                                    agent: configuration.agent, timing: configuration.timing,
                                    seed: UInt64(truncatingIfNeeded: MonotonicClock.now()))
        loop = try UplinkLoop(machine: machine, target: configuration.target,
                              spool: UplinkSpool(sessionDirectory: configuration.sessionDirectory),
                              caFile: configuration.caFile, counters: counters, onReport: onReport)
    }

    public func start() { loop.start() }

    /// A chunk is complete in the spool.
    public func offer(_ chunk: ChunkMetadata) { loop.post(.offer(chunk)) }

    /// Every chunk is offered.
    public func finishCapture() { loop.post(.finishCapture) }

    public func updateToken(_ token: String) { loop.post(.updateToken(token)) }

    /// Ends the uplink's thread (the spool keeps what is not acknowledged). Waits up to `timeout`.
    @discardableResult
    public func stop(timeout: Duration = .seconds(5)) -> Bool {
        loop.post(.stop)
        return loop.waitUntilStopped(timeout: timeout)
    }

    public var progress: UploadProgress {
        let c = counters
        let oldest = c.oldestPendingCaptureNs.load(ordering: .relaxed)
        let lag = oldest > 0 ? max(0, (WallClock.now() - oldest) / 1_000_000) : 0
        return UploadProgress(
            phase: UplinkCounters.phases[c.phase.load(ordering: .relaxed)],
            connected: c.connected.load(ordering: .relaxed),
            chunksUploaded: c.acknowledgedChunks.load(ordering: .relaxed),
            bytesUploaded: c.acknowledgedBytes.load(ordering: .relaxed),
            chunksPending: c.pendingChunks.load(ordering: .relaxed),
            bytesPending: c.pendingBytes.load(ordering: .relaxed),
            duplicates: c.duplicates.load(ordering: .relaxed),
            refusedChunks: c.refusedChunks.load(ordering: .relaxed),
            protocolViolations: c.protocolViolations.load(ordering: .relaxed),
            unreadableChunks: c.unreadableChunks.load(ordering: .relaxed),
            connections: c.connections.load(ordering: .relaxed),
            incompatibleEndpoint: c.incompatibleEndpoint.load(ordering: .relaxed),
            uploadLagMs: lag,
            chunksUploadedByChannel: c.perChannel.withLock { $0 },
            threadCPUNs: c.threadCPUNs.load(ordering: .relaxed))
    }
}
