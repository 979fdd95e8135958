public import CaptureCore
import CaptureConcurrency
import CaptureSystem
import SHA256
public import CaptureUplink
import Dispatch
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Where a finished chunk waits between its encoder and the spool writer:
/// reusable memory that only grows (rarely), never shrinks.
final class ChunkBuffer {
    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int
    var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        self.base = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit { base.deallocate() }

    func store(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > capacity {
            base.deallocate()
            capacity = max(bytes.count, capacity * 2)
            base = .allocate(byteCount: capacity, alignment: 64)
        }
        if let src = bytes.baseAddress { base.copyMemory(from: src, byteCount: bytes.count) }
        count = bytes.count
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}

/// Facts about a chunk that its encoder knows; the writer adds size and checksum.
public struct ChunkInfo: Sendable, BitwiseCopyable {
    public var seq: Int
    public var startPtsNs: Int64
    public var durationNs: Int64
    public var frames: Int
    public var isFinal: Bool

    public init(seq: Int, startPtsNs: Int64, durationNs: Int64, frames: Int, isFinal: Bool) {
        self.seq = seq
        self.startPtsNs = startPtsNs
        self.durationNs = durationNs
        self.frames = frames
        self.isFinal = isFinal
    }
}

struct PendingChunk: BitwiseCopyable {
    var buffer: Int
    var info: ChunkInfo
}

/// One channel's way into the spool. The channel's encoder (one thread or
/// serial queue at a time) is the producer; the spool writer's queue is the
/// consumer.
///
/// Why `@unchecked Sendable` is sound: `buffers[i]` is touched by exactly one
/// side at a time. An index is owned by the producer from the moment it pops it
/// from `free` until it pushes it to `filled`, and by the writer from its pop
/// of `filled` until its push back to `free`; the rings' release/acquire pairs
/// order the memory accesses across that hand-over. `nextSeq` is producer-only.
/// The remaining state is immutable or atomic.
public final class ChannelOutlet: @unchecked Sendable {
    public let channel: ChannelID
    public let codec: String
    let directory: AtomicDirectory
    private let buffers: [ChunkBuffer]
    let free: SPSCRing<Int>
    let filled: SPSCRing<PendingChunk>
    /// The writer hands a buffer back: a producer waiting for one goes on.
    let room = ConditionSignal()
    private unowned let writer: SpoolWriter

    private let chunksWritten = Atomic<Int>(0)
    private let bytesWritten = Atomic<Int>(0)
    private let largestWritten = Atomic<Int>(0)
    private let writerStalls = Atomic<Int>(0)

    init(channel: ChannelID, codec: String, directory: AtomicDirectory, bufferCount: Int, writer: SpoolWriter) {
        self.channel = channel
        self.codec = codec
        self.directory = directory
        self.buffers = (0..<bufferCount).map { _ in ChunkBuffer(capacity: 1 << 20) }
        self.free = SPSCRing(capacity: bufferCount)
        self.filled = SPSCRing(capacity: bufferCount)
        self.writer = writer
        for i in 0..<bufferCount { _ = free.push(i) }
    }

    public var chunks: Int { chunksWritten.load(ordering: .relaxed) }
    public var bytes: Int { bytesWritten.load(ordering: .relaxed) }
    /// The largest chunk written so far (bytes): what the next one may need.
    public var largestChunk: Int { largestWritten.load(ordering: .relaxed) }
    /// How often the encoder had to wait for the writer (the disk is slower than capture).
    public var stalls: Int { writerStalls.load(ordering: .relaxed) }

    /// Copies a finished chunk into a free buffer and queues it for the writer.
    /// When every buffer is queued (the disk is far behind) it waits, up to
    /// `maxWait`, then fails with IO_ERROR: nothing is ever dropped silently.
    public func submit(_ bytes: UnsafeRawBufferPointer, info: ChunkInfo, maxWait: Duration = .seconds(30)) throws(CaptureError) {
        if let failure = writer.failure { throw failure }
        var index = free.pop()
        if index == nil {
            writerStalls.add(1, ordering: .relaxed)
            let deadline = MonotonicClock.now() + Int64(maxWait.components.seconds) * 1_000_000_000
            // Woken when the writer hands a buffer back (it does, failed write or not).
            _ = room.wait(deadlineNs: deadline) {
                index = free.pop()
                return index != nil || writer.failure != nil
            }
            if index == nil {
                if let failure = writer.failure { throw failure }
                throw CaptureError(.ioError, "spool writer for \(channel) is stuck (disk too slow or hung?)")
            }
        }
        let i = index!
        buffers[i].store(bytes)
        let pushed = filled.push(PendingChunk(buffer: i, info: info))
        precondition(pushed, "filled ring holds every buffer")
        writer.wake()
    }

    // Writer side.
    func buffer(_ i: Int) -> ChunkBuffer { buffers[i] }
    func recordWritten(bytes: Int) {
        chunksWritten.add(1, ordering: .relaxed)
        bytesWritten.add(bytes, ordering: .relaxed)
        // Only the writer's queue writes it: no compare-and-swap needed.
        if bytes > largestWritten.load(ordering: .relaxed) { largestWritten.store(bytes, ordering: .relaxed) }
    }
}

/// Writes finished chunks of every channel of one session to disk, on its own
/// serial queue, so an fsync never stalls an encoder.
///
/// Layout: `<sessionDirectory>/<channel dir>/chunk-NNNNNN.ts` + `.json`. The
/// media file is published first, then the metadata; a chunk whose metadata
/// exists is complete.
public final class SpoolWriter: Sendable {
    public let sessionId: String
    public let sessionDirectory: String
    private let anchor: Mutex<(monotonic: Int64, unixNs: Int64)>
    /// Monotonic time of the session's zero.
    public var sessionStartMonotonic: Int64 { anchor.withLock { $0.monotonic } }
    /// Wall clock (Unix ns) at the session's zero.
    public var sessionStartUnixNs: Int64 { anchor.withLock { $0.unixNs } }

    private let queue: DispatchQueue
    private let wakeup = Mutex<QueueWakeup?>(nil)
    private let outlets = Mutex<[ChannelOutlet]>([])
    private let failureState = Mutex<CaptureError?>(nil)
    private let onChunk: (@Sendable (ChunkMetadata) -> Void)?

    public init(sessionId: String, sessionDirectory: String, sessionStartMonotonic: Int64, sessionStartUnixNs: Int64,
                onChunk: (@Sendable (ChunkMetadata) -> Void)? = nil) throws(CaptureError) {
        try makeDirectories(sessionDirectory)
        self.sessionId = sessionId
        self.sessionDirectory = sessionDirectory
        self.anchor = Mutex((sessionStartMonotonic, sessionStartUnixNs))
        self.onChunk = onChunk
        self.queue = DispatchQueue(label: "capture-agent.spool-writer", qos: .utility)
        let wake = QueueWakeup(queue: queue) { [weak self] in self?.drain() }
        wakeup.withLock { $0 = wake }
    }

    deinit { wakeup.withLock { $0?.cancel() } }

    /// The first write error, if any; every later submit fails with it.
    public var failure: CaptureError? { failureState.withLock { $0 } }

    /// Creates the channel's directory and its outlet. Call before capture starts.
    public func addChannel(_ channel: ChannelID, codec: String, bufferCount: Int = 4) throws(CaptureError) -> ChannelOutlet {
        let dir = try AtomicDirectory(creating: sessionDirectory + "/" + channel.directoryName)
        let outlet = ChannelOutlet(channel: channel, codec: codec, directory: dir, bufferCount: bufferCount, writer: self)
        outlets.withLock { $0.append(outlet) }
        return outlet
    }

    /// Moves the session's zero (before any chunk is submitted).
    public func reanchor(monotonic: Int64, unixNs: Int64) {
        anchor.withLock { $0 = (monotonic, unixNs) }
    }

    /// Every channel's outlet, by channel.
    public var outletsByChannel: [ChannelID: ChannelOutlet] {
        outlets.withLock { Dictionary($0.map { ($0.channel, $0) }, uniquingKeysWith: { a, _ in a }) }
    }

    func wake() { wakeupSource.wake() }

    private var wakeupSource: QueueWakeup { wakeup.withLock { $0! } }

    /// Blocks until every chunk submitted so far is on disk, then reports the
    /// first write error, if there was one.
    public func flush() throws(CaptureError) {
        queue.sync { drain() }
        if let failure { throw failure }
    }

    private func drain() {
        dispatchPrecondition(condition: .onQueue(queue))
        let all = outlets.withLock { $0 }
        for outlet in all {
            while let pending = outlet.filled.pop() {
                if failure == nil {
                    do throws(CaptureError) {
                        try write(pending, of: outlet)
                    } catch {
                        failureState.withLock { if $0 == nil { $0 = error } }
                    }
                }
                _ = outlet.free.push(pending.buffer)
                outlet.room.changed()
            }
        }
    }

    private func write(_ pending: PendingChunk, of outlet: ChannelOutlet) throws(CaptureError) {
        let buffer = outlet.buffer(pending.buffer)
        let info = pending.info
        let media = ChunkMetadata.mediaFileName(seq: info.seq)
        try outlet.directory.publish(media, bytes: buffer.bytes)
        let metadata = ChunkMetadata(
            sessionId: sessionId, channelId: outlet.channel.description, mediaType: outlet.channel.mediaType,
            codec: outlet.codec, seq: info.seq, file: media, startPtsNs: info.startPtsNs, durationNs: info.durationNs,
            frames: info.frames, bytes: buffer.count, sha256: SHA256.hexDigest(buffer.bytes),
            captureTimeUnixNs: sessionStartUnixNs + info.startPtsNs, isFinal: info.isFinal)
        let json: Data
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            json = try encoder.encode(metadata)
        } catch {
            throw CaptureError(.internalError, "cannot encode chunk metadata: \(error)")
        }
        var publishError: CaptureError?
        json.withUnsafeBytes { raw in
            do throws(CaptureError) {
                try outlet.directory.publish(ChunkMetadata.metadataFileName(seq: info.seq), bytes: raw)
            } catch { publishError = error }
        }
        if let publishError { throw publishError }
        try outlet.directory.sync()
        outlet.recordWritten(bytes: buffer.count)
        onChunk?(metadata)
    }
}
