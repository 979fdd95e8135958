import CaptureCore
import CaptureConcurrency
import CaptureSystem
import CaptureUplink
import CLinuxShims
internal import CWebSockets
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One session's uplink on its own thread: a libwebsockets context serviced by
/// `lws_service`, the protocol in an `UplinkMachine`, and the socket work the
/// machine asks for (connect, send a chunk in fragments, close). Other threads
/// reach it only through `post` (a command inbox, then `lws_cancel_service`,
/// which lws documents as the one call safe from any thread).
///
/// Why `@unchecked Sendable` is sound: everything `var` below the inbox is
/// touched only on the service thread (from lws callbacks and the timer, both run
/// by `lws_service` there), which `assertOnServiceThread` checks in debug
/// builds; the inbox is a Mutex, the counters are atomics, the C allocations
/// are fixed for the loop's life and freed after the thread is gone.
final class UplinkLoop: @unchecked Sendable {
    enum Command: Sendable {
        case offer(ChunkMetadata)
        case finishCapture
        case updateToken(String)
        case stop
    }

    let target: UplinkTarget
    let spool: UplinkSpool
    let counters: UplinkCounters
    let onReport: @Sendable (UplinkMachine.UplinkReport) -> Void
    private let inbox = Mutex<[Command]>([])
    /// The service thread is gone (set once, at the end of `run`).
    private let finished = ConditionLock(false)

    // C allocations, fixed for the loop's life.
    private let protocols: UnsafeMutablePointer<lws_protocols>
    private let protocolName: UnsafeMutablePointer<CChar>
    private let timer: UnsafeMutablePointer<cws_timer>
    private let hostC: UnsafeMutablePointer<CChar>
    private let pathC: UnsafeMutablePointer<CChar>
    private let caFileC: UnsafeMutablePointer<CChar>?
    /// The lws context. Replaced (on the service thread) after a connection was dropped by
    /// force; other threads only read it, under the lock, for `lws_cancel_service`.
    /// (Held as its address: OpaquePointer is not Sendable.)
    private let contextLock = Mutex<Int>(0)
    private var context: OpaquePointer? { OpaquePointer(bitPattern: contextLock.withLock { $0 }) }
    private let caFile: String?
    /// A connection was dropped by force: the context is rebuilt before the next one.
    /// (lws 4.1 can leave a killed connecting wsi's connect timer in its timer list; a
    /// later wsi at the same address then trips `lws_dll2_add_sorted`'s assertion. A
    /// fresh context has no such leftovers.)
    private var rebuildContext = false
    private var rebuilding = false

    // Service thread only.
    private var machine: UplinkMachine
    private var serviceThread: pthread_t?
    private var stopping = false
    /// Tells this connection's callbacks from a dropped one's (its opaque user data).
    private var generation = 0
    private var wsi: OpaquePointer?
    private var peerCloseCode: UInt16?
    private var pendingClose: (code: UInt16, reason: String)?
    private var pingPending = false
    private var textQueue: [String] = []
    private var chunkQueue: [ChunkMetadata] = []
    /// The frame being sent: LWS_PRE free bytes, then the chunk frame.
    private var tx: UnsafeMutableRawPointer
    private var txCapacity: Int
    private var txLength = 0
    private var txOffset = 0
    private var txSending = false
    private var rx: [UInt8] = []
    private var rxBinary = false
    private let pre = Int(cws_pre())
    static let fragmentBytes = 256 << 10

    init(machine: UplinkMachine, target: UplinkTarget, spool: UplinkSpool, caFile: String?,
         counters: UplinkCounters,
         onReport: @escaping @Sendable (UplinkMachine.UplinkReport) -> Void) throws(CaptureError) {
        self.machine = machine
        self.target = target
        self.spool = spool
        self.counters = counters
        self.onReport = onReport
        txCapacity = 2 << 20
        tx = .allocate(byteCount: txCapacity, alignment: 16)
        protocolName = strdup("capture-uplink")
        hostC = strdup(target.host)
        pathC = strdup(target.path)
        caFileC = caFile.map { strdup($0) }
        protocols = .allocate(capacity: 2)
        protocols[0] = lws_protocols(name: protocolName, callback: uplinkCallback, per_session_data_size: 0,
                                     rx_buffer_size: 64 << 10, id: 0, user: nil, tx_packet_size: 0)
        protocols[1] = lws_protocols(name: nil, callback: nil, per_session_data_size: 0, rx_buffer_size: 0, id: 0,
                                     user: nil, tx_packet_size: 0)
        timer = .allocate(capacity: 1)
        timer.initialize(to: cws_timer())
        self.caFile = caFile
        UplinkLogging.install()
        guard let ctx = makeContext() else {
            free(protocolName); free(hostC); free(pathC); caFileC.map { free($0) }
            protocols.deallocate(); timer.deallocate(); tx.deallocate()
            throw CaptureError(.internalError, "libwebsockets could not create a context (TLS setup failed?)")
        }
        contextLock.withLock { $0 = Int(bitPattern: ctx) }
        timer.pointee.owner = Unmanaged.passUnretained(self).toOpaque()
    }

    private func makeContext() -> OpaquePointer? {
        var info = lws_context_creation_info()
        info.port = CONTEXT_PORT_NO_LISTEN
        info.protocols = UnsafePointer(protocols)
        info.options = target.tls ? UInt64(LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT) : 0
        info.client_ssl_ca_filepath = caFileC.map { UnsafePointer($0) }
        info.timeout_secs = 10
        info.connect_timeout_secs = 10
        // lws sizes its poll table by this, not by RLIMIT_NOFILE (which may be a million).
        info.fd_limit_per_thread = 8
        info.user = Unmanaged.passUnretained(self).toOpaque()
        return lws_create_context(&info)
    }

    deinit {
        free(protocolName); free(hostC); free(pathC); caFileC.map { free($0) }
        protocols.deallocate(); timer.deallocate(); tx.deallocate()
    }

    /// Starts the service thread. The loop keeps itself alive until it stops.
    func start() {
        let retained = Unmanaged.passRetained(self)
        let started = DetachedThread.start(stackSize: 1 << 20) {
            let loop = retained.takeRetainedValue()
            loop.run()
        }
        if !started { retained.release() }
    }

    func post(_ command: Command) {
        inbox.withLock { $0.append(command) }
        contextLock.withLock { if let c = OpaquePointer(bitPattern: $0) { lws_cancel_service(c) } }
    }

    /// Waits until the service thread is gone (after `.stop`), at most `timeout`.
    func waitUntilStopped(timeout: Duration) -> Bool {
        finished.wait(until: { $0 }, deadline: MonotonicClock.now() + timeout.nanoseconds) { _ in true } ?? false
    }

    // MARK: The service thread

    private func run() {
        serviceThread = pthread_self()
        clinux_set_thread_name("capture-uplink")
        guard context != nil else { return }
        apply(machine.begin(nowNs: MonotonicClock.now()))
        scheduleTick()
        while !stopping, let context {
            if lws_service(context, 0) < 0 { break }
            if rebuildContext && !stopping { replaceContext() }
        }
        destroyContext()
        wsi = nil
        finished.withLock { $0 = true }
    }

    private func destroyContext() {
        guard let old = context else { return }
        rebuilding = true   // its callbacks during the destroy are for connections already given up
        contextLock.withLock { $0 = 0 }
        lws_context_destroy(old)
        rebuilding = false
    }

    /// A fresh context after a forced drop; what was due on the old one (a connect the
    /// machine asked for while it went) happens on the new one.
    private func replaceContext() {
        rebuildContext = false
        destroyContext()
        guard let fresh = makeContext() else {
            // Not expected (the first one was made with the same settings); try again at the next tick.
            onReport(.refused(code: nil, reason: "libwebsockets could not create a new context"))
            stopping = true
            return
        }
        contextLock.withLock { $0 = Int(bitPattern: fresh) }
        scheduleTick()
        if machine.phase == .connecting && wsi == nil { connect() }
    }

    @inline(__always) private func assertOnServiceThread() {
        assert(serviceThread.map { pthread_equal($0, pthread_self()) != 0 } ?? false, "uplink state touched off its thread")
    }

    private func scheduleTick() {
        guard let context else { return }
        lws_sul_schedule(context, 0, &timer.pointee.sul, { sul in
            guard let sul, let owner = cws_timer_owner(sul) else { return }
            Unmanaged<UplinkLoop>.fromOpaque(owner).takeUnretainedValue().tick()
        }, 250_000)
    }

    private func tick() {
        assertOnServiceThread()
        apply(machine.tick(nowNs: MonotonicClock.now()))
        publishGauges()
        if !stopping { scheduleTick() }
    }

    private func drainInbox() {
        assertOnServiceThread()
        let commands = inbox.withLock { q -> [Command] in
            let c = q
            q.removeAll(keepingCapacity: true)
            return c
        }
        let now = MonotonicClock.now()
        for command in commands {
            switch command {
            case .offer(let chunk): apply(machine.offer(chunk, nowNs: now))
            case .finishCapture: apply(machine.finishCapture(nowNs: now))
            case .updateToken(let token): apply(machine.updateToken(token, nowNs: now))
            case .stop:
                // The service loop ends after this callback; destroying the context closes the socket.
                stopping = true
            }
        }
        publishGauges()
    }

    private func publishGauges() {
        // The uplink's whole cost in CPU: this thread's time (the only one it has).
        var cpu = timespec()
        if clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu) == 0 {
            counters.threadCPUNs.store(Int64(cpu.tv_sec) * 1_000_000_000 + Int64(cpu.tv_nsec), ordering: .relaxed)
        }
        counters.pendingChunks.store(machine.pendingChunks, ordering: .relaxed)
        counters.pendingBytes.store(machine.pendingBytes, ordering: .relaxed)
        counters.oldestPendingCaptureNs.store(machine.oldestPendingCaptureNs ?? 0, ordering: .relaxed)
        counters.phase.store(UplinkCounters.code(machine.phase), ordering: .relaxed)
    }

    // MARK: Actions

    private func apply(_ actions: [UplinkMachine.Action]) {
        for action in actions {
            switch action {
            case .connect: connect()
            case .sendText(let text):
                textQueue.append(text)
                requestWrite()
            case .sendChunk(let chunk):
                chunkQueue.append(chunk)
                requestWrite()
            case .delete(let chunk):
                spool.delete(chunk)
            case .close(let code, let reason):
                pendingClose = (code, reason)
                requestWrite()
            case .ping:
                pingPending = true
                requestWrite()
            case .abort(let reason):
                drop(reason: reason)
            case .report(let report):
                count(report)
                onReport(report)
            }
        }
    }

    private func count(_ report: UplinkMachine.UplinkReport) {
        switch report {
        case .acknowledged(let chunk, let duplicate, _):
            counters.acknowledge(chunk, duplicate: duplicate)
        case .connected:
            counters.connected.store(true, ordering: .relaxed)
            counters.incompatibleEndpoint.store(false, ordering: .relaxed)
            counters.connections.add(1, ordering: .relaxed)
        case .disconnected, .tokenRejected, .tokenReplaced, .refused:
            counters.connected.store(false, ordering: .relaxed)
        case .chunkRefused:
            counters.refusedChunks.add(1, ordering: .relaxed)
        case .welcomeAhead:
            break   // the owner logs it
        case .incompatibleEndpoint:
            counters.incompatibleEndpoint.store(true, ordering: .relaxed)
        case .complete:
            counters.connected.store(false, ordering: .relaxed)
        }
    }

    private func connect() {
        // A connect asked for while the context is being replaced waits for the new one.
        guard let context, !stopping, !rebuildContext else { return }
        generation += 1
        peerCloseCode = nil
        pendingClose = nil
        textQueue.removeAll()
        chunkQueue.removeAll()
        txSending = false
        rx.removeAll(keepingCapacity: true)
        var info = lws_client_connect_info()
        info.context = context
        info.address = UnsafePointer(hostC)
        info.port = Int32(target.port)
        info.path = UnsafePointer(pathC)
        info.host = UnsafePointer(hostC)
        info.origin = UnsafePointer(hostC)
        info.protocol = nil
        info.ssl_connection = target.tls ? Int32(LCCSCF_USE_SSL.rawValue) : 0
        info.opaque_user_data = UnsafeMutableRawPointer(bitPattern: generation)
        let expected = generation
        wsi = lws_client_connect_via_info(&info)
        // A failure lws reports at once may or may not have come as a callback already.
        if wsi == nil, generation == expected, machine.phase == .connecting {
            closed(code: nil, reason: "cannot connect to \(target)")
        }
    }

    /// Drops the connection without a close handshake; its callbacks are ignored from now.
    private func drop(reason: String) {
        // The context goes with the connection (see `rebuildContext`); lws_service returns
        // after this callback and the loop replaces it.
        rebuildContext = true
        generation += 1
        wsi = nil
        closed(code: nil, reason: reason)
    }

    private func closed(code: UInt16?, reason: String) {
        forgetConnection()
        apply(machine.closed(code: code, reason: reason, nowNs: MonotonicClock.now()))
        publishGauges()
    }

    private func forgetConnection() {
        wsi = nil
        txSending = false
        textQueue.removeAll()
        chunkQueue.removeAll()
        pendingClose = nil
    }

    private func requestWrite() {
        if let wsi { lws_callback_on_writable(wsi) }
    }

    // MARK: Callbacks

    fileprivate func handle(_ wsi: OpaquePointer, _ reason: lws_callback_reasons, _ data: UnsafeMutableRawPointer?,
                            _ length: Int) -> Int32 {
        if rebuilding { return 0 }
        if reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED {
            drainInbox()
            return 0
        }
        // Only the current connection's callbacks matter; a dropped one just goes.
        guard Int(bitPattern: lws_get_opaque_user_data(wsi)) == generation, !stopping else {
            return reason == LWS_CALLBACK_CLIENT_WRITEABLE || reason == LWS_CALLBACK_CLIENT_RECEIVE ? -1 : 0
        }
        let now = MonotonicClock.now()
        switch reason {
        case LWS_CALLBACK_CLIENT_ESTABLISHED:
            self.wsi = wsi
            apply(machine.opened(nowNs: now))
        case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
            let why = data.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "connection failed"
            // An HTTP answer other than 101 to the upgrade ("HS: ws upgrade response not 101"):
            // lws keeps its status, 0 when no response came (refused, reset, TLS, DNS).
            let httpStatus = Int(lws_http_client_http_response(wsi))
            generation += 1
            if httpStatus > 0, httpStatus != 101 {
                forgetConnection()
                apply(machine.upgradeRefused(httpStatus: httpStatus, nowNs: now))
                publishGauges()
            } else {
                closed(code: nil, reason: why)
            }
        case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
            if let data, length >= 2 {
                let b = data.assumingMemoryBound(to: UInt8.self)
                peerCloseCode = UInt16(b[0]) << 8 | UInt16(b[1])
            }
        case LWS_CALLBACK_CLIENT_CLOSED:
            generation += 1
            closed(code: peerCloseCode, reason: peerCloseCode.map { "closed by the endpoint (\($0))" } ?? "connection lost")
        case LWS_CALLBACK_CLIENT_RECEIVE:
            return receive(wsi, data, length, now: now)
        case LWS_CALLBACK_CLIENT_RECEIVE_PONG:
            machine.heard(nowNs: now)
        case LWS_CALLBACK_CLIENT_WRITEABLE:
            return writable(wsi)
        default:
            break
        }
        return 0
    }

    private func receive(_ wsi: OpaquePointer, _ data: UnsafeMutableRawPointer?, _ length: Int, now: Int64) -> Int32 {
        if lws_is_first_fragment(wsi) != 0 {
            rx.removeAll(keepingCapacity: true)
            rxBinary = lws_frame_is_binary(wsi) != 0
        }
        if rxBinary {
            // The endpoint never sends binary messages: a broken or hostile peer.
            counters.protocolViolations.add(1, ordering: .relaxed)
            apply(machine.protocolViolation(closeCode: 1003, reason: "the endpoint sent a binary message"))
            return 0
        }
        if let data, length > 0 {
            guard rx.count + length <= UplinkProtocol.maxTextBytes else {
                counters.protocolViolations.add(1, ordering: .relaxed)
                rx.removeAll(keepingCapacity: true)
                rxBinary = true   // ignore the rest of this message
                apply(machine.protocolViolation(closeCode: 1009, reason: "a message from the endpoint is over 64 KiB"))
                return 0
            }
            rx.append(contentsOf: UnsafeRawBufferPointer(start: data, count: length))
        }
        if lws_is_final_fragment(wsi) != 0, lws_remaining_packet_payload(wsi) == 0 {
            let text = String(decoding: rx, as: UTF8.self)
            rx.removeAll(keepingCapacity: true)
            let actions = machine.received(text, nowNs: now)
            if actions.contains(where: { if case .close = $0 { true } else { false } }) {
                counters.protocolViolations.add(actions.contains { if case .report(.chunkRefused) = $0 { true } else { false } } ? 0 : 1,
                                                ordering: .relaxed)
            }
            apply(actions)
        }
        return 0
    }

    private func writable(_ wsi: OpaquePointer) -> Int32 {
        if pingPending {
            // Our own ping from our own buffer, between two fragments if need be (control
            // frames may interleave). Not lws's keepalive: lws 4.1 keeps its own ping's
            // payload in the buffer that holds the pong it owes the endpoint, and a
            // collision sends the endpoint a pong it does not recognise (it then closes, 1001).
            pingPending = false
            var payload = [UInt8](repeating: 0, count: pre + 8)
            var stamp = UInt64(bitPattern: MonotonicClock.now()).bigEndian
            withUnsafeBytes(of: &stamp) { payload.replaceSubrange(pre..<(pre + 8), with: $0) }
            let n = payload.withUnsafeMutableBufferPointer { lws_write(wsi, $0.baseAddress! + pre, 8, LWS_WRITE_PING) }
            if n < 0 { return -1 }
            lws_callback_on_writable(wsi)
            return 0
        }
        if let close = pendingClose, !txSending {
            var reason = Array(close.reason.utf8.prefix(100))
            lws_close_reason(wsi, lws_close_status(rawValue: UInt32(close.code)), &reason, reason.count)
            pendingClose = nil
            return -1
        }
        if !txSending {
            if !textQueue.isEmpty {
                let text = Array(textQueue.removeFirst().utf8)
                ensureCapacity(pre + text.count)
                text.withUnsafeBytes { tx.advanced(by: pre).copyMemory(from: $0.baseAddress!, byteCount: text.count) }
                let n = lws_write(wsi, tx.advanced(by: pre).assumingMemoryBound(to: UInt8.self), text.count, LWS_WRITE_TEXT)
                if n < 0 { return -1 }
                if !textQueue.isEmpty || !chunkQueue.isEmpty || pendingClose != nil { lws_callback_on_writable(wsi) }
                return 0
            }
            guard !chunkQueue.isEmpty else { return 0 }
            let chunk = chunkQueue.removeFirst()
            do throws(CaptureError) {
                try load(chunk)
            } catch {
                // The spool lost a chunk it said was complete (disk trouble, someone deleted it).
                counters.unreadableChunks.add(1, ordering: .relaxed)
                onReport(.refused(code: nil, reason: "cannot read spooled chunk \(chunk.channelId) #\(chunk.seq): \(error.message)"))
                return -1
            }
            txSending = true
            txOffset = 0
        }
        // One fragment per callback (lws's rule), 256 KiB each.
        let remaining = txLength - txOffset
        let size = min(remaining, Self.fragmentBytes)
        let isStart = txOffset == 0, isEnd = size == remaining
        let flags = lws_write_ws_flags(Int32(LWS_WRITE_BINARY.rawValue), isStart ? 1 : 0, isEnd ? 1 : 0)
        // The LWS_PRE bytes before a later fragment hold data already sent: lws may overwrite them.
        let start = tx.advanced(by: pre + txOffset).assumingMemoryBound(to: UInt8.self)
        let n = lws_write(wsi, start, size, lws_write_protocol(rawValue: UInt32(bitPattern: flags)))
        if n < 0 { return -1 }
        txOffset += size
        counters.bytesSent.add(size, ordering: .relaxed)
        if isEnd { txSending = false }
        if txSending || !textQueue.isEmpty || !chunkQueue.isEmpty || pendingClose != nil {
            lws_callback_on_writable(wsi)
        }
        return 0
    }

    /// Puts the chunk's frame (magic, header, the file's bytes) after LWS_PRE in `tx`.
    private func load(_ chunk: ChunkMetadata) throws(CaptureError) {
        let prefix = UplinkChunkFrame.prefix(for: UplinkChunkHeader(chunk))
        ensureCapacity(pre + prefix.count + chunk.bytes)
        prefix.withUnsafeBytes { tx.advanced(by: pre).copyMemory(from: $0.baseAddress!, byteCount: prefix.count) }
        try spool.read(chunk, into: UnsafeMutableRawBufferPointer(start: tx.advanced(by: pre + prefix.count), count: chunk.bytes))
        txLength = prefix.count + chunk.bytes
    }

    private func ensureCapacity(_ bytes: Int) {
        guard bytes > txCapacity else { return }
        // Only between frames (a frame in progress is never moved).
        tx.deallocate()
        txCapacity = max(bytes, txCapacity * 2)
        tx = .allocate(byteCount: txCapacity, alignment: 16)
    }
}

/// The C entry point of every lws callback: back to the loop that owns the context.
private func uplinkCallback(_ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
                            _ data: UnsafeMutableRawPointer?, _ length: Int) -> Int32 {
    guard let wsi, let context = lws_get_context(wsi), let owner = lws_context_user(context) else { return 0 }
    return Unmanaged<UplinkLoop>.fromOpaque(owner).takeUnretainedValue().handle(wsi, reason, data, length)
}

/// lws's own log, errors and warnings only, to stderr with a prefix (it never sees
/// the token: that travels inside the hello's payload, which lws does not log).
enum UplinkLogging {
    private static let installed = Mutex(false)

    static func install() {
        installed.withLock { done in
            guard !done else { return }
            done = true
            lws_set_log_level(LLL_ERR | LLL_WARN, { level, line in
                guard let line else { return }
                var text = String(cString: line)
                while text.hasSuffix("\n") { text.removeLast() }
                StandardStream.error.write("libwebsockets: \(text)\n")
            })
        }
    }
}
