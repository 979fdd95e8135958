internal import CPipeWire
public import CaptureCore
public import CaptureConcurrency
import PixelConversion
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The pixel layouts a screencast may arrive in (4 bytes a pixel, the fourth ignored).
public enum StreamPixelFormat: Sendable, Equatable {
    /// B, G, R, x in memory: what the encoder converts from.
    case bgrx
    /// R, G, B, x in memory: swapped while copied.
    case rgbx
}

/// A screencast's negotiated picture.
public struct StreamFormat: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var pixelFormat: StreamPixelFormat
}

/// Why a stream stopped delivering.
public struct StreamEnd: Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }
}

/// One frame the producer sent, lent to the reader under the loop's lock: full content (every
/// shared-memory buffer of a screencast holds the whole picture) plus what changed since the
/// frame before it.
public struct StreamFrame {
    public var pixels: UnsafeRawPointer
    public var bytesPerRow: Int
    public var width: Int
    public var height: Int
    public var pixelFormat: StreamPixelFormat
    /// What changed since the previous frame handed out (stream coordinates); nil: everything.
    public var damage: DirtyRegion?
    /// When the producer made it (CLOCK_MONOTONIC ns).
    public var timeNs: Int64
}

/// The pointer as the stream's cursor metadata last described it.
public struct StreamCursor {
    /// Premultiplied ARGB (0xAARRGGBB, B G R A bytes in memory), `width` x `height`.
    public var image: UnsafePointer<UInt32>
    public var width: Int
    public var height: Int
    /// Top-left corner of the image in stream coordinates (the hotspot already subtracted).
    public var x: Int
    public var y: Int
    /// On the monitor and with an image.
    public var visible: Bool
    /// Changes whenever the image changes.
    public var imageSerial: Int
}

/// A screencast consumed from PipeWire (libpipewire-0.3 directly, no GStreamer, no GLib): its
/// own `pw_thread_loop` receives the producer's buffers; frames wait there, held (not copied),
/// until the capture thread takes the next one with `withFrame`.
///
/// Threads: the loop thread runs every callback, holding the loop's lock; any other thread
/// touches the shared state only inside `LoopGuarded.withLock`, which takes that same lock
/// (checked in debug builds). The capture thread copies a frame's changed pixels while
/// holding the lock: the loop thread has nothing else to do meanwhile, and a held buffer
/// cannot be freed under the copy.
public final class PipeWireScreenStream: @unchecked Sendable {
    /// Frames the producer sent that the capture thread has not taken yet, at most: they wait
    /// for the frame slot of their time (the capture thread decides a slot a while after it
    /// started, when the frames made in it have arrived: `WaylandScreenSource.frameDelayNs`).
    static let maxPending = 12

    private let loop: OpaquePointer
    private let context: OpaquePointer
    private var core: OpaquePointer?
    private var stream: OpaquePointer?
    private let shared: LoopGuarded<Shared>
    private let streamEvents: UnsafeMutablePointer<pw_stream_events>
    private let coreEvents: UnsafeMutablePointer<pw_core_events>
    private let streamHook: UnsafeMutablePointer<spa_hook>
    private let coreHook: UnsafeMutablePointer<spa_hook>
    private let paramBuffer: UnsafeMutableRawBufferPointer
    private let wantCursor: Bool
    /// How many buffers the stream may have: those the held frames need, plus what the producer
    /// draws into.
    private let maxBuffers: Int
    /// Bumped when the format changes or the stream ends (read every slot, without the lock).
    private let changes = Atomic<Int>(0)
    /// The time of the oldest frame waiting (.max: none), and a counter of cursor changes: what
    /// the capture thread looks at every slot, without the lock.
    private let oldestPending = Atomic<Int64>(.max)
    private let cursorChanges = Atomic<Int>(0)
    private let live = PipeWireScreenStream.liveInstances.token()
    public static let liveInstances = LiveInstances("PipeWireScreenStream")

    /// Counters since the stream started.
    public struct Counters: Sendable, Equatable {
        /// Frames with content the producer sent.
        public var received = 0
        /// Frames replaced by a newer one before the capture thread took them.
        public var superseded = 0
        /// Frames made before the first slot's picture (before the recording began).
        public var beforeStart = 0
        /// Buffers that only moved the cursor.
        public var cursorOnly = 0
        /// Buffers flagged corrupted or empty, or in a form we cannot read.
        public var unusable = 0
        /// Frames whose producer time was missing or not on CLOCK_MONOTONIC (arrival time used).
        public var untimed = 0
        /// Frames that arrived after the slot of their time had been decided (shown late).
        public var late = 0
        /// From the producer's time to our receipt, over the timed frames (ns).
        public var deliveryLatencySumNs: Int64 = 0
        public var deliveryLatencyMaxNs: Int64 = 0
    }

    /// What the loop thread and the capture thread share.
    struct Shared {
        var format: StreamFormat?
        var formatGeneration = 0
        var ended: StreamEnd?
        var streaming = false
        /// The frame last handed out (held: cursor-only changes redraw from it).
        var current: Held?
        var pending: [Held] = []
        var counters = Counters()
        var cursor: CursorState
        /// Buffers the stream has now (add_buffer minus remove_buffer).
        var buffers = 0
        /// The latest `notAfter` a frame was chosen for.
        var lastNotAfter: Int64 = .min

        /// How many frames may wait besides the current one: the producer must keep at least
        /// one buffer to draw into (mutter and kwin have 16, xdg-desktop-portal-wlr only two).
        var pendingLimit: Int {
            min(PipeWireScreenStream.maxPending, max(0, buffers - 1 - (current == nil ? 0 : 1)))
        }
    }

    struct Held {
        let buffer: UnsafeMutablePointer<pw_buffer>
        var damage: DirtyRegion?
        let timeNs: Int64
    }

    struct CursorState {
        var image: UnsafeMutablePointer<UInt32>
        var capacity: Int
        var width = 0, height = 0
        var hotX = 0, hotY = 0
        var x = 0, y = 0
        var visible = false
        var serial = 0
    }

    /// Connects to the node `nodeId` through `remoteFD` (a descriptor the portal opened; taken
    /// over, closed with the stream). Frames come at most `maxFps` a second, and wait here up
    /// to `holdNs` for the capture thread (the buffers are sized for that).
    public init(remoteFD: Int32, nodeId: UInt32, maxFps: Int, holdNs: Int64, cursorMetadata: Bool, name: String) throws(CaptureError) {
        PipeWireLibrary.initialize()
        guard let loop = pw_thread_loop_new("pw-\(name)".prefix(15).description, nil) else {
            close(remoteFD)
            throw CaptureError(.internalError, "cannot create a PipeWire thread loop")
        }
        guard let context = pw_context_new(pw_thread_loop_get_loop(loop), nil, 0) else {
            pw_thread_loop_destroy(loop)
            close(remoteFD)
            throw CaptureError(.internalError, "cannot create a PipeWire context")
        }
        self.loop = loop
        self.context = context
        wantCursor = cursorMetadata
        // The frames of `holdNs`, rounded up, plus the current one, one being received and
        // one for the producer to draw into.
        let held = Int((Int64(maxFps) * holdNs + 999_999_999) / 1_000_000_000)
        maxBuffers = min(16, max(4, held + 3))
        let cursorCapacity = 64 * 64
        shared = LoopGuarded(loop: loop, Shared(cursor: CursorState(image: .allocate(capacity: cursorCapacity), capacity: cursorCapacity)))
        streamEvents = .allocate(capacity: 1)
        coreEvents = .allocate(capacity: 1)
        streamHook = .allocate(capacity: 1)
        coreHook = .allocate(capacity: 1)
        streamHook.initialize(to: spa_hook())
        coreHook.initialize(to: spa_hook())
        paramBuffer = .allocate(byteCount: 4096, alignment: 8)
        streamEvents.initialize(to: Self.makeStreamEvents())
        coreEvents.initialize(to: Self.makeCoreEvents())

        guard pw_thread_loop_start(loop) >= 0 else {
            close(remoteFD)
            throw CaptureError(.internalError, "cannot start the PipeWire thread loop")
        }
        // Connecting may call the stream's callbacks on this thread, with the lock held.
        var failure: CaptureError?
        shared.holdingLock { failure = connect(remoteFD: remoteFD, nodeId: nodeId, maxFps: maxFps, name: name) }
        if let failure { throw failure }
    }

    /// The core, the stream, its listeners and the connection to the node (the loop's lock held).
    private func connect(remoteFD: Int32, nodeId: UInt32, maxFps: Int, name: String) -> CaptureError? {
        guard let core = pw_context_connect_fd(context, remoteFD, nil, 0) else {
            // connect_fd closes the descriptor on failure.
            return CaptureError(.displayUnavailable, "cannot connect to PipeWire through the portal's descriptor: \(String(cString: strerror(errno)))")
        }
        self.core = core
        let me = Unmanaged.passUnretained(self).toOpaque()
        _ = cpw_core_add_listener(core, coreHook, coreEvents, me)
        guard let stream = pw_stream_new(core, "capture-agent \(name)", cpw_screen_consumer_properties()) else {
            return CaptureError(.internalError, "cannot create a PipeWire stream")
        }
        self.stream = stream
        pw_stream_add_listener(stream, streamHook, streamEvents, me)
        var params: [UnsafePointer<spa_pod>?] = [cpw_build_enum_format(paramBuffer.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                                                       UInt32(paramBuffer.count), UInt32(maxFps))]
        let rc = params.withUnsafeMutableBufferPointer {
            pw_stream_connect(stream, SPA_DIRECTION_INPUT, nodeId, cpw_consumer_flags(), $0.baseAddress, 1)
        }
        guard rc >= 0 else {
            return CaptureError(.displayUnavailable, "cannot connect to the screencast's PipeWire node \(nodeId): \(String(cString: strerror(-rc)))")
        }
        return nil
    }

    deinit {
        // Never on the loop's own thread: it cannot destroy the stream from inside a callback,
        // nor stop and join itself (see `with`).
        precondition(!pw_thread_loop_in_thread(loop), "PipeWireScreenStream released on its own loop thread")
        shared.withLock { s, _ in
            // The stream frees its buffers; let go of them first.
            s.current = nil
            s.pending.removeAll()
        }
        // Destroying the stream calls its callbacks (remove_buffer, state_changed) on this
        // thread, with the lock held.
        shared.holdingLock {
            if let stream {
                pw_stream_disconnect(stream)
                pw_stream_destroy(stream)
            }
            if let core {
                spa_hook_remove(coreHook)
                pw_core_disconnect(core)
            }
        }
        pw_thread_loop_stop(loop)
        pw_context_destroy(context)
        pw_thread_loop_destroy(loop)
        shared.withUnlockedAfterStop { $0.cursor.image.deallocate() }
        streamEvents.deallocate()
        coreEvents.deallocate()
        streamHook.deallocate()
        coreHook.deallocate()
        paramBuffer.deallocate()
    }

    // MARK: Reading (any thread)

    /// Waits (woken by the loop thread, not polling) until the format is known and a first
    /// frame came, the stream ended or `deadline` (monotonic ns) passed.
    public func waitForFirstFrame(deadline: Int64) throws(CaptureError) -> StreamFormat {
        let outcome: Result<StreamFormat, CaptureError> = shared.withLock { s, wait in
            while true {
                if let end = s.ended {
                    return .failure(CaptureError(.displayUnavailable, "the screencast stream ended before its first frame: \(end)"))
                }
                if let format = s.format, s.current != nil || !s.pending.isEmpty { return .success(format) }
                if !wait(deadline) {
                    return .failure(CaptureError(.timeout, "the screencast stream sent no picture in time"))
                }
            }
        }
        return try outcome.get()
    }

    /// Bumped on every renegotiation and at the end: compare to know whether to look at
    /// `status` (which takes the lock).
    public var changeCount: Int { changes.load(ordering: .acquiring) }

    /// When the oldest frame still waiting was made (monotonic ns), .max when none waits: a
    /// slot at or after it has a new picture.
    public var oldestPendingTimeNs: Int64 { oldestPending.load(ordering: .acquiring) }

    /// Bumped whenever the pointer moved or changed its image.
    public var cursorChangeCount: Int { cursorChanges.load(ordering: .acquiring) }

    /// The format now and its generation (bumped on every renegotiation: a new size).
    public var format: (format: StreamFormat?, generation: Int) {
        shared.withLock { s, _ in (s.format, s.formatGeneration) }
    }

    /// Why the stream stopped, once it did.
    public var ended: StreamEnd? { shared.withLock { s, _ in s.ended } }

    public var counters: Counters { shared.withLock { s, _ in s.counters } }

    /// Marks the stream ended from outside (the portal closed its session).
    public func markEnded(_ reason: String) {
        shared.withLock { s, _ in
            if s.ended == nil { s.ended = StreamEnd(reason: reason) }
        }
        changes.add(1, ordering: .releasing)
    }

    /// What `withFrame` lends.
    public struct View {
        /// The frame to show: the newest one made no later than `notAfter`, which from then on
        /// is the current one (`advanced` true), or the current one again when none is due
        /// (`advanced` false); nil before the first.
        public var frame: StreamFrame?
        public var advanced: Bool
        public var cursor: StreamCursor?
        public var counters: Counters
    }

    /// Lends the reader, under the loop's lock, the picture for the frame slot at `notAfter`
    /// (monotonic ns; slots are `periodNs` apart) and the cursor.
    ///
    /// Which frame: a frame made in (slot - period, slot] is on time for the slot. Every frame
    /// gets a slot of its own while it can be at most one slot late: when two were made within
    /// one period (the compositor's pacing is not exactly ours), the older one takes this slot
    /// and the newer the next. Only frames that would be later than that are replaced by the
    /// newest one due (their changes carry over, `superseded` counts them).
    public func withFrame<R>(notAfter: Int64, periodNs: Int64, _ body: (View) -> R) -> R {
        shared.withLock { s, _ in
            var advanced = false
            if s.format != nil, let lastDue = s.pending.lastIndex(where: { $0.timeNs <= notAfter }) {
                let oneSlotLate = notAfter - 2 * periodNs
                let take = s.pending[...lastDue].firstIndex { $0.timeNs > oneSlotLate } ?? lastDue
                var next = s.pending[take]
                for older in s.pending[..<take] {
                    next.damage = Self.merge(older.damage, next.damage)
                    requeue(older.buffer)
                }
                // Frames older than the first slot's picture were made before the recording began.
                if s.lastNotAfter == .min { s.counters.beforeStart += take } else { s.counters.superseded += take }
                s.pending.removeFirst(take + 1)
                if next.timeNs <= s.lastNotAfter { s.counters.late += 1 }
                if let old = s.current { requeue(old.buffer) }
                s.current = next
                advanced = true
            }
            s.lastNotAfter = max(s.lastNotAfter, notAfter)
            oldestPending.store(s.pending.first?.timeNs ?? .max, ordering: .releasing)
            var frame: StreamFrame?
            if let held = s.current, let format = s.format, let view = Self.view(held.buffer, format) {
                frame = StreamFrame(pixels: view.pixels, bytesPerRow: view.stride, width: format.width, height: format.height,
                                    pixelFormat: format.pixelFormat, damage: advanced ? held.damage : DirtyRegion(),
                                    timeNs: held.timeNs)
            }
            let c = s.cursor
            let cursor = wantCursor ? StreamCursor(image: UnsafePointer(c.image), width: c.width, height: c.height,
                                                   x: c.x - c.hotX, y: c.y - c.hotY,
                                                   visible: c.visible && c.width > 0 && c.height > 0, imageSerial: c.serial) : nil
            return body(View(frame: frame, advanced: advanced, cursor: cursor, counters: s.counters))
        }
    }

    /// The format, its generation and the end, in one look.
    public var status: (format: StreamFormat?, generation: Int, ended: StreamEnd?) {
        shared.withLock { s, _ in (s.format, s.formatGeneration, s.ended) }
    }

    // MARK: Loop thread

    /// Runs `body` with the stream a callback's `data` names, borrowed without a retain. With a
    /// strong reference (`takeUnretainedValue`), the capture thread's release of the stream
    /// could leave the callback's the last one, and deinit would then run here, on the loop
    /// thread, inside PipeWire's dispatch, destroying the stream from its own callback and
    /// stopping the loop from its own thread: a SIGSEGV on "pw-display-1" at the end of a
    /// Wayland recording (seen in CI). Borrowed, the owner's reference decides, and the owner's
    /// deinit first takes the loop's lock, which waits for any callback to return.
    private static func with<R>(_ data: UnsafeMutableRawPointer?, _ body: (PipeWireScreenStream) -> R) -> R {
        Unmanaged<PipeWireScreenStream>.fromOpaque(data!)._withUnsafeGuaranteedRef(body)
    }

    private static func makeStreamEvents() -> pw_stream_events {
        var e = pw_stream_events()
        e.version = cpw_version_stream_events()
        e.state_changed = { data, _, state, error in
            let message = error.map { String(cString: $0) }
            PipeWireScreenStream.with(data) { $0.stateChanged(state, error: message) }
        }
        e.param_changed = { data, id, param in PipeWireScreenStream.with(data) { $0.paramChanged(id: id, param: param) } }
        e.remove_buffer = { data, buffer in PipeWireScreenStream.with(data) { $0.bufferRemoved(buffer) } }
        e.add_buffer = { data, _ in PipeWireScreenStream.with(data) { $0.shared.onLoopThread { $0.buffers += 1 } } }
        e.process = { data in PipeWireScreenStream.with(data) { $0.process() } }
        return e
    }

    private static func makeCoreEvents() -> pw_core_events {
        var e = pw_core_events()
        e.version = cpw_version_core_events()
        e.error = { data, id, _, res, message in
            // An error on the core object itself is the connection failing (the PipeWire
            // server restarted, the portal revoked access); others belong to objects.
            guard id == 0 /* PW_ID_CORE */ else { return }
            let text = message.map { String(cString: $0) } ?? String(cString: strerror(-res))
            PipeWireScreenStream.with(data) { $0.end("PipeWire connection failed: \(text)") }
        }
        return e
    }

    private func end(_ reason: String) {
        shared.onLoopThread { s in
            if s.ended == nil { s.ended = StreamEnd(reason: reason) }
        }
        changes.add(1, ordering: .releasing)
        pw_thread_loop_signal(loop, false)
    }

    private func stateChanged(_ state: pw_stream_state, error: String?) {
        switch state {
        case PW_STREAM_STATE_ERROR:
            end("the screencast stream failed: \(error ?? "unknown error")")
        case PW_STREAM_STATE_UNCONNECTED:
            end("the screencast stream was disconnected (the portal session closed, or the producer went away)")
        case PW_STREAM_STATE_STREAMING:
            shared.onLoopThread { $0.streaming = true }
            pw_thread_loop_signal(loop, false)
        default:
            break
        }
    }

    private func paramChanged(id: UInt32, param: UnsafePointer<spa_pod>?) {
        guard id == SPA_PARAM_Format.rawValue, let param else { return }
        var parsed = cpw_video_format()
        guard cpw_parse_video_format(param, &parsed) == 0 else { return }
        let pixelFormat: StreamPixelFormat
        switch parsed.format {
        case SPA_VIDEO_FORMAT_BGRx.rawValue, SPA_VIDEO_FORMAT_BGRA.rawValue: pixelFormat = .bgrx
        case SPA_VIDEO_FORMAT_RGBx.rawValue, SPA_VIDEO_FORMAT_RGBA.rawValue: pixelFormat = .rgbx
        default:
            end("the screencast negotiated pixel format \(parsed.format), which is none of BGRx, BGRA, RGBx, RGBA")
            return
        }
        guard parsed.has_modifier == 0 else {
            end("the producer insists on DMA-BUF buffers (a format modifier); only shared memory is supported")
            return
        }
        guard (2...16384).contains(Int(parsed.width)), (2...16384).contains(Int(parsed.height)) else {
            end("the screencast negotiated a \(parsed.width)x\(parsed.height) picture, outside 2...16384")
            return
        }
        let format = StreamFormat(width: Int(parsed.width), height: Int(parsed.height), pixelFormat: pixelFormat)
        shared.onLoopThread { s in
            if s.format != format {
                s.format = format
                s.formatGeneration += 1
            }
        }
        var params = [UnsafePointer<spa_pod>?](repeating: nil, count: 4)
        let n = params.withUnsafeMutableBufferPointer {
            cpw_build_buffer_params(paramBuffer.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt32(paramBuffer.count),
                                    $0.baseAddress, wantCursor ? 1 : 0, Int32(maxBuffers))
        }
        _ = params.withUnsafeMutableBufferPointer { pw_stream_update_params(stream, $0.baseAddress, n) }
        changes.add(1, ordering: .releasing)
        pw_thread_loop_signal(loop, false)
    }

    private func bufferRemoved(_ buffer: UnsafeMutablePointer<pw_buffer>?) {
        // A removed buffer is never queued back (nor read: its memory goes).
        shared.onLoopThread { s in
            s.buffers -= 1
            if s.current?.buffer == buffer { s.current = nil }
            s.pending.removeAll { $0.buffer == buffer }
            oldestPending.store(s.pending.first?.timeNs ?? .max, ordering: .releasing)
        }
    }

    /// Takes every buffer that arrived: frames join `pending` (the oldest is superseded when
    /// too many wait), cursor-only buffers update the cursor and go straight back. A frame
    /// whose producer did not say what changed (GNOME sends whole frames and no damage) is
    /// compared with the frame before it here, on the loop's thread.
    private func process() {
        guard let stream else { return }
        var changed = false
        while let buffer = pw_stream_dequeue_buffer(stream) {
            let arrival = MonotonicClock.now()
            let spa = buffer.pointee.buffer!
            shared.onLoopThread { s in
                // The cursor of every buffer counts: a new image is sent only once.
                if readCursor(spa, into: &s.cursor) {
                    changed = true
                    cursorChanges.add(1, ordering: .releasing)
                }
                guard let format = s.format, let view = Self.view(buffer, format) else {
                    if Self.isCursorOnly(spa) { s.counters.cursorOnly += 1 } else { s.counters.unusable += 1 }
                    requeue(buffer)
                    return
                }
                var time = arrival
                if let header = cpw_meta_header(spa), header.pointee.pts > arrival - 1_000_000_000,
                   header.pointee.pts < arrival + 50_000_000 {
                    time = header.pointee.pts
                    s.counters.deliveryLatencySumNs += arrival - time
                    s.counters.deliveryLatencyMaxNs = max(s.counters.deliveryLatencyMaxNs, arrival - time)
                } else {
                    s.counters.untimed += 1
                }
                var damage = Self.damage(spa, format)
                if damage == nil, let previous = s.pending.last ?? s.current,
                   let before = Self.view(previous.buffer, format) {
                    var found = DirtyRegion()
                    PixelBlit.changedRegion(before.pixels, before.stride, view.pixels, view.stride,
                                            width: format.width, height: format.height) { x, y, w, h in
                        found.add(PixelRect(x: x, y: y, width: w, height: h))
                    }
                    damage = found
                }
                var held = Held(buffer: buffer, damage: damage, timeNs: max(time, s.pending.last?.timeNs ?? s.current?.timeNs ?? time))
                while s.pending.count > 0 && s.pending.count >= s.pendingLimit {
                    // The oldest waiting frame is replaced: its changes carry over to the next.
                    let dropped = s.pending.removeFirst()
                    if var next = s.pending.first {
                        next.damage = Self.merge(dropped.damage, next.damage)
                        s.pending[0] = next
                    } else {
                        held.damage = Self.merge(dropped.damage, held.damage)
                    }
                    requeue(dropped.buffer)
                    s.counters.superseded += 1
                }
                if s.pendingLimit == 0, let current = s.current {
                    // No buffer to spare for the current frame: the new one takes its place
                    // once taken; until then nothing redraws from the old one.
                    s.current = nil
                    requeue(current.buffer)
                }
                s.pending.append(held)
                s.counters.received += 1
                oldestPending.store(s.pending.first?.timeNs ?? .max, ordering: .releasing)
                changed = true
            }
        }
        // A waiter for the first frame is woken; the capture thread reads the atomics.
        if changed { pw_thread_loop_signal(loop, false) }
    }

    private func requeue(_ buffer: UnsafeMutablePointer<pw_buffer>) {
        if let stream { pw_stream_queue_buffer(stream, buffer) }
    }

    /// The readable picture of a buffer, or nil (corrupted, empty: cursor only, not mapped).
    private static func view(_ buffer: UnsafeMutablePointer<pw_buffer>, _ format: StreamFormat) -> (pixels: UnsafeRawPointer, stride: Int)? {
        let spa = buffer.pointee.buffer!.pointee
        guard spa.n_datas >= 1, let datas = spa.datas else { return nil }
        let d = datas[0]
        guard d.type == SPA_DATA_MemFd.rawValue || d.type == SPA_DATA_MemPtr.rawValue,
              let base = d.data, let chunk = d.chunk else { return nil }
        if let header = cpw_meta_header(buffer.pointee.buffer!),
           header.pointee.flags & UInt32(SPA_META_HEADER_FLAG_CORRUPTED) != 0 { return nil }
        let c = chunk.pointee
        guard c.flags & Int32(SPA_CHUNK_FLAG_CORRUPTED) == 0, c.size > 0, c.stride >= 0 else { return nil }
        let stride = c.stride > 0 ? Int(c.stride) : format.width * 4
        let offset = Int(c.offset % max(d.maxsize, 1))
        guard stride >= format.width * 4, offset + stride * (format.height - 1) + format.width * 4 <= Int(d.maxsize) else { return nil }
        return (UnsafeRawPointer(base + offset), stride)
    }

    private static func isCursorOnly(_ spa: UnsafeMutablePointer<spa_buffer>) -> Bool {
        guard spa.pointee.n_datas >= 1, let chunk = spa.pointee.datas[0].chunk else { return false }
        return chunk.pointee.size == 0 && cpw_meta_cursor(spa) != nil
    }

    /// What the producer says changed; nil when it says nothing useful: no damage metadata, no
    /// valid rectangle, a rectangle outside the frame, or the whole frame (mutter's monitor
    /// streams always say that).
    private static func damage(_ spa: UnsafeMutablePointer<spa_buffer>, _ format: StreamFormat) -> DirtyRegion? {
        var count: UInt32 = 0
        guard let regions = cpw_meta_damage(spa, &count), count > 0 else { return nil }
        let frame = PixelRect(x: 0, y: 0, width: format.width, height: format.height)
        var dirty = DirtyRegion()
        for i in 0..<Int(count) {
            let r = regions[i].region
            let rect = PixelRect(x: Int(r.position.x), y: Int(r.position.y), width: Int(r.size.width), height: Int(r.size.height))
            guard rect.intersection(frame) == rect else { return nil }
            dirty.add(rect)
        }
        return dirty.count == 1 && dirty[0] == frame ? nil : dirty
    }

    private static func merge(_ a: DirtyRegion?, _ b: DirtyRegion?) -> DirtyRegion? {
        guard var merged = a, let b else { return nil }
        for i in 0..<b.count { merged.add(b[i]) }
        return merged
    }

    /// Updates the cursor from a buffer's metadata; true when it changed.
    private func readCursor(_ spa: UnsafeMutablePointer<spa_buffer>, into cursor: inout CursorState) -> Bool {
        guard wantCursor else { return false }
        guard let meta = cpw_meta_cursor(spa) else {
            // A cursor meta with id 0 (or none at all on a buffer that has the meta): no pointer
            // over this monitor. A buffer without the meta says nothing.
            if spa_buffer_find_meta(spa, SPA_META_Cursor.rawValue) != nil, cursor.visible {
                cursor.visible = false
                return true
            }
            return false
        }
        let m = meta.pointee
        var changed = !cursor.visible || cursor.x != Int(m.position.x) || cursor.y != Int(m.position.y)
        cursor.visible = true
        cursor.x = Int(m.position.x)
        cursor.y = Int(m.position.y)
        if let bitmap = cpw_meta_cursor_bitmap(spa, meta) {
            cursor.hotX = Int(m.hotspot.x)
            cursor.hotY = Int(m.hotspot.y)
            loadCursorImage(bitmap, into: &cursor)
            changed = true
        }
        return changed
    }

    /// Copies a cursor bitmap into the cache as premultiplied ARGB words (cold: only when the
    /// pointer's image changes). Producers send premultiplied RGBA (mutter reads the sprite as
    /// RGBA_8888_PRE, kwin as RGBA8888_Premultiplied); colour is clamped to alpha so a bad
    /// image cannot overflow the blend. An empty image (0x0) means no pointer image.
    private func loadCursorImage(_ bitmap: UnsafeMutablePointer<spa_meta_bitmap>, into cursor: inout CursorState) {
        let b = bitmap.pointee
        let w = Int(b.size.width), h = Int(b.size.height)
        cursor.serial += 1
        cursor.width = 0
        cursor.height = 0
        guard w > 0, h > 0, w <= Int(CPW_CURSOR_MAX), h <= Int(CPW_CURSOR_MAX), Int(b.stride) >= w * 4 else { return }
        let order: (r: Int, g: Int, b: Int, a: Int)
        switch b.format {
        case SPA_VIDEO_FORMAT_RGBA.rawValue: order = (0, 1, 2, 3)
        case SPA_VIDEO_FORMAT_BGRA.rawValue: order = (2, 1, 0, 3)
        case SPA_VIDEO_FORMAT_ARGB.rawValue: order = (1, 2, 3, 0)
        case SPA_VIDEO_FORMAT_ABGR.rawValue: order = (3, 2, 1, 0)
        default: return
        }
        if w * h > cursor.capacity {
            cursor.image.deallocate()
            cursor.capacity = w * h
            cursor.image = .allocate(capacity: w * h)
        }
        let src = cpw_bitmap_pixels(bitmap)!
        for row in 0..<h {
            let line = src + row * Int(b.stride)
            for col in 0..<w {
                let p = line + col * 4
                let a = UInt32(p[order.a])
                let r = min(UInt32(p[order.r]), a), g = min(UInt32(p[order.g]), a), bl = min(UInt32(p[order.b]), a)
                cursor.image[row * w + col] = a << 24 | r << 16 | g << 8 | bl
            }
        }
        cursor.width = w
        cursor.height = h
    }
}

/// pw_init once per process.
enum PipeWireLibrary {
    private static let done: Bool = {
        pw_init(nil, nil)
        return true
    }()

    static func initialize() { _ = done }
}

/// State shared between a `pw_thread_loop` and other threads, reachable only under the loop's
/// lock: `withLock` from any thread takes it; the loop's callbacks (which run with it held)
/// use `onLoopThread`, which checks in debug builds that it is that thread.
final class LoopGuarded<Value>: @unchecked Sendable {
    private var value: Value
    private let loop: OpaquePointer
    /// The thread (pthread_t) in `holdingLock`, 0 when none: callbacks that PipeWire calls
    /// synchronously on it (destroying a stream emits remove_buffer) may touch the value.
    private let holder = Atomic<UInt>(0)

    init(loop: OpaquePointer, _ value: Value) {
        self.loop = loop
        self.value = value
    }

    /// `body` gets the value and a wait function: `wait(deadline)` releases the lock until the
    /// loop thread signals (or the monotonic deadline passes; false then), then takes it again.
    func withLock<R>(_ body: (inout Value, (Int64) -> Bool) -> R) -> R {
        pw_thread_loop_lock(loop)
        defer { pw_thread_loop_unlock(loop) }
        return body(&value) { [loop] deadline in
            let remaining = deadline - MonotonicClock.now()
            if remaining <= 0 { return false }
            var abstime = timespec()
            pw_thread_loop_get_time(loop, &abstime, remaining)
            return pw_thread_loop_timed_wait_full(loop, &abstime) == 0 || MonotonicClock.now() < deadline
        }
    }

    /// Runs `body` (PipeWire calls that may call back) with the loop's lock held, the value
    /// left to the callbacks.
    func holdingLock(_ body: () -> Void) {
        pw_thread_loop_lock(loop)
        holder.store(UInt(bitPattern: Int(bitPattern: pthread_self())), ordering: .relaxed)
        body()
        holder.store(0, ordering: .relaxed)
        pw_thread_loop_unlock(loop)
    }

    /// For the loop's callbacks: on its thread (which holds the lock while it dispatches), or
    /// on a thread in `holdingLock`.
    func onLoopThread<R>(_ body: (inout Value) -> R) -> R {
        assert(pw_thread_loop_in_thread(loop)
               || holder.load(ordering: .relaxed) == UInt(bitPattern: Int(bitPattern: pthread_self())),
               "loop-guarded state touched off the loop thread without its lock")
        return body(&value)
    }

    /// For deinit, once the loop thread has stopped: nobody else can touch the value.
    func withUnlockedAfterStop<R>(_ body: (inout Value) -> R) -> R { body(&value) }
}
