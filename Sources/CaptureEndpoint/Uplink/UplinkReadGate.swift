import CaptureUplink
import NIOCore
import NIOWebSocket
import Synchronization

/// The two handlers that hold one uplink connection to the `InflightBudget`, put around
/// its WebSocket frame decoder once the upgrade is done:
///
///     socket -> UplinkReadGate -> frame decoder -> UplinkFrameMeter -> WSCore's queue -> UplinkConnection
///
/// The gate counts every byte read (`UplinkInflight.raw`), charges the decoder's buffer
/// that holds them, and withholds NIO's `read()` while the connection may not read; the
/// meter takes each whole frame out of `raw`, copies it out of the decoder's buffer and
/// charges its payload (`frames`, text and binary, until the connection has handled the
/// message; headers and control frames are not charged once decoded).
enum UplinkBudgetHandlers {
    /// Charges the connection itself and puts the gate before the decoder and the meter
    /// after it. Bytes read before this ran are not charged; `UplinkInflight.handled` never
    /// releases more than was charged. False, and nothing installed or charged, if the
    /// budget has no room for one more connection.
    static func install(on channel: any Channel, inflight: UplinkInflight, connectionId: UInt64) async throws -> Bool {
        try await channel.eventLoop.submit {
            // One buffer (at most 64 KiB) per read call, so a read allowed just before the
            // budget fills adds little to it.
            try channel.syncOptions?.setOption(ChannelOptions.maxMessagesPerRead, value: 1)
            let operations = channel.pipeline.syncOperations
            let decoder = try operations.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self)
            guard inflight.budget.admit(InflightBudget.connectionCost) else {
                // Refused: never read again, so what it sends while it is told to come back
                // and closed stays in the kernel, not in its decoder's buffer (measured: 300
                // clients sending most of a 1 MiB frame, most of them refused, grew an endpoint
                // with a 96M budget by 198 MB when the refused ones were read during the close;
                // by 64 MB now).
                try operations.addHandler(UnreadConnection(), position: .before(decoder))
                return false
            }
            inflight.fixedCharge.store(InflightBudget.connectionCost, ordering: .relaxed)
            try operations.addHandler(UplinkReadGate(inflight: inflight, connectionId: connectionId),
                                      position: .before(decoder))
            try operations.addHandler(UplinkFrameMeter(inflight: inflight), position: .after(decoder))
            return true
        }.get()
    }
}

/// Withholds every `read()`: the socket of a connection refused for want of memory is
/// not read while it closes.
final class UnreadConnection: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = Any
    typealias OutboundOut = Any

    func read(context: ChannelHandlerContext) {}
}

/// Charges what the socket gives and reads only while the budget allows. Lives on the
/// channel's event loop (NIO calls it there; the budget's wake-up comes back through a
/// `NIOLoopBound`, which checks it).
final class UplinkReadGate: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = WebSocketFrame   // passed on untouched
    typealias OutboundOut = WebSocketFrame

    private let inflight: UplinkInflight
    private let connectionId: UInt64
    private var context: ChannelHandlerContext?
    /// A `read()` came and was held back.
    private var readPending = false
    /// Parked in the budget (for room in it), or waiting for its own handler (for room in
    /// its own share).
    private var waiting = false
    private var closed = false

    init(inflight: UplinkInflight, connectionId: UInt64) {
        self.inflight = inflight
        self.connectionId = connectionId
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        inflight.setOwnerWake { eventLoop.execute { bound.value.woken() } }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish()
        context.fireChannelInactive()
    }

    /// The read is over: what it reserved and did not take goes back.
    func channelReadComplete(context: ChannelHandlerContext) {
        if !closed { inflight.budget.releaseReservation(inflight.reserved.exchange(0, ordering: .relaxed)) }
        context.fireChannelReadComplete()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closed else { return context.fireChannelRead(data) }
        let bytes = unwrapInboundIn(data).readableBytes
        inflight.lastActivityMs.store(EndpointClock.nowMilliseconds(), ordering: .relaxed)
        inflight.readAskedAtMs.store(0, ordering: .relaxed)
        let raw = inflight.raw.load(ordering: .relaxed) + bytes
        inflight.raw.store(raw, ordering: .relaxed)
        // The decoder merges these bytes into its buffer before it takes frames out: the
        // buffer holds `raw` at once, and keeps that capacity while anything is left in it.
        mostHeld = max(mostHeld, raw)
        inflight.budget.charge(bytes)   // until the frames are out and the rest is known
        context.fireChannelRead(data)
        // The decoder has taken every whole frame out (the meter took them out of `raw`):
        // what it still holds is one partial frame at most. A frame header longer than the
        // shortest (the meter counts the shortest) would leave a few bytes behind each time.
        var left = min(inflight.raw.load(ordering: .relaxed), Self.partialFrameBound)
        inflight.raw.store(left, ordering: .relaxed)
        if left == 0 { mostHeld = 0 }
        // At least a read buffer: with nothing before, the decoder keeps the socket's read
        // buffer itself (64 KiB of capacity) however little of it is left.
        left = left == 0 ? 0 : max(Self.bufferCapacity(holding: mostHeld), InflightBudget.readQuantum)
        let before = inflight.rawCharge.exchange(left, ordering: .relaxed)
        inflight.budget.charge(left)
        inflight.budget.release(before + bytes, handled: false)
    }

    /// The most the decoder's buffer has held since it was last empty.
    private var mostHeld = 0
    /// What the last read asked to reserve: what the gate waits for when it was refused.
    private var lastReservation = 0

    /// The capacity of a buffer that grew by doubling to hold `bytes`: the next power of two.
    static func bufferCapacity(holding bytes: Int) -> Int {
        bytes <= 1 ? 1 : 1 << (Int.bitWidth - (bytes - 1).leadingZeroBitCount)
    }

    /// The most a frame decoder holds between reads: one frame, less a byte, with its header.
    static let partialFrameBound = UplinkProtocol.maxFrameBytes + 14

    func read(context: ChannelHandlerContext) {
        if closed {
            return context.read()
        }
        switch reserveRead() {
        case .taken:
            readFromSocket(context)
        case let refused:
            readPending = true
            wait(forShare: refused == .noRoomInShare)
        }
    }

    /// Passes a read on to the socket, noting since when the sender has been free to send.
    private func readFromSocket(_ context: ChannelHandlerContext) {
        if inflight.readAskedAtMs.load(ordering: .relaxed) == 0 {
            inflight.readAskedAtMs.store(EndpointClock.nowMilliseconds(), ordering: .relaxed)
        }
        context.read()
    }

    /// Takes from the budget, before the read is issued, the most it can add: one buffer of
    /// bytes, the decoder's buffer doubling to take them in, and the frames they complete
    /// (charged twice). A read issued is not charged only after its bytes are in, so
    /// however many connections read at once, they cannot pass the budget together. An
    /// idle connection holds its reservation while it waits for data (about 200 KiB).
    /// False (nothing taken) if the budget or the connection's share has no room for it.
    private func reserveRead() -> InflightBudget.Reservation {
        guard inflight.reserved.load(ordering: .relaxed) == 0 else { return .taken }   // one read at a time
        let raw = inflight.raw.load(ordering: .relaxed)
        let grown = Self.bufferCapacity(holding: max(mostHeld, raw) + InflightBudget.readQuantum)
        let reserve = max(0, grown - inflight.rawCharge.load(ordering: .relaxed)) + 2 * InflightBudget.readQuantum
        lastReservation = reserve
        let outcome = inflight.budget.reserve(reserve, held: inflight.held)
        if outcome == .taken { inflight.reserved.store(reserve, ordering: .relaxed) }
        return outcome
    }

    /// Waits where the room will come from: the connection's own handler when its share is
    /// spent, the budget otherwise.
    private func wait(forShare: Bool) {
        guard !waiting, let context else { return }
        waiting = true
        inflight.gateWaiting.store(true, ordering: .relaxed)
        inflight.readAskedAtMs.store(0, ordering: .relaxed)
        if forShare {
            let heldBefore = inflight.held
            inflight.ownerWaiting.store(true, ordering: .sequentiallyConsistent)
            // It may have handled something between the check and now.
            if inflight.held < heldBefore { inflight.wakeOwner() }
        } else {
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            inflight.budget.park(id: connectionId, need: lastReservation) { eventLoop.execute { bound.value.woken() } }
        }
    }

    private func woken() {
        guard waiting else { return }
        waiting = false
        inflight.gateWaiting.store(false, ordering: .relaxed)
        guard readPending, !closed, let context else { return }
        switch reserveRead() {
        case .taken:
            readPending = false
            readFromSocket(context)
        case let refused:
            wait(forShare: refused == .noRoomInShare)
        }
    }

    private func finish() {
        guard !closed else { return }
        closed = true
        inflight.budget.unpark(id: connectionId)
        inflight.setOwnerWake(nil)
        inflight.releaseAll()
    }
}

/// Moves each decoded frame's bytes out of the gate's `raw` count: a text or binary
/// frame's payload stays charged (as `frames`) until the connection has handled its
/// message; its header and every control frame go back to the budget at once.
final class UplinkFrameMeter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    private let inflight: UplinkInflight

    init(inflight: UplinkInflight) {
        self.inflight = inflight
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let payload = frame.length
        // A header at its shortest: the bytes of a longer (non-minimal) length field stay in
        // `raw`, which the gate clamps to one partial frame after each read. The gate
        // settles the decoder buffer's charge once the read's frames are out.
        let wire = payload + Self.headerBytes(payload: payload, masked: frame.maskKey != nil)
        let raw = inflight.raw.load(ordering: .relaxed)
        inflight.raw.store(raw - min(raw, wire), ordering: .relaxed)
        switch frame.opcode {
        case .text, .binary, .continuation: inflight.framePassed(payload)
        default: break
        }
        context.fireChannelRead(wrapInboundOut(Self.detached(frame, allocator: context.channel.allocator)))
    }

    /// The frame in storage of its own, unmasked. The decoder's frames are slices of its
    /// buffer: while one waits in the queue, the decoder cannot compact that buffer in place
    /// and copies what follows into another of the same capacity, so each queued frame would
    /// hold a whole buffer (measured: about a megabyte per connection beyond what the budget
    /// counts). WSCore would copy the payload to unmask it anyway; this is that copy, made here.
    static func detached(_ frame: WebSocketFrame, allocator: ByteBufferAllocator) -> WebSocketFrame {
        var data = allocator.buffer(capacity: frame.data.readableBytes)
        data.writeImmutableBuffer(frame.data)
        if let mask = frame.maskKey { data.webSocketUnmask(mask) }
        let extensionData = frame.extensionData.map { original -> ByteBuffer in
            var copy = allocator.buffer(capacity: original.readableBytes)
            copy.writeImmutableBuffer(original)
            if let mask = frame.maskKey { copy.webSocketUnmask(mask) }
            return copy
        }
        return WebSocketFrame(fin: frame.fin, rsv1: frame.rsv1, rsv2: frame.rsv2, rsv3: frame.rsv3, opcode: frame.opcode,
                              maskKey: nil, data: data, extensionData: extensionData)
    }

    /// RFC 6455 5.2: two bytes, a 16- or 64-bit extended length, a 4-byte mask.
    static func headerBytes(payload: Int, masked: Bool) -> Int {
        2 + (payload > 65_535 ? 8 : payload > 125 ? 2 : 0) + (masked ? 4 : 0)
    }
}
