import CaptureUplink
import NIOCore
import Synchronization

/// The endpoint's one budget of memory for uplink data (`EndpointLimits.inflightBytes`):
/// what holds bytes read from uplink sockets and not yet handled. Memory under load is
/// bounded by this number, not by the number of clients. Each connection is charged
/// what its data takes in memory, estimated from above (not yet enough: at 400 agents
/// the decoder's buffers took a third more than charged, docs/performance.md):
///
/// - a partial frame lies in the WebSocket decoder's buffer, which grows by doubling and
///   keeps its capacity while it holds anything: charged at the next power of two of the
///   most it held since it was last empty (heaptrack, 400 agents: those buffers were the
///   largest consumer, 221 MB at the peak, when only their bytes were counted);
/// - the channel's read buffer, which NIO's pool keeps while the channel lives, and the
///   decoder's buffer at least that much while it holds anything (it may be that very
///   buffer): 64 KiB each;
/// - a frame passed on (copied out of the decoder's buffer, `UplinkFrameMeter`) and the
///   message WSCore assembles from several (a buffer that grows by doubling): twice its
///   payload, until the connection has handled the message.
///
/// What the budget does:
/// - a read is issued only if the budget has room for the most it can add (its buffer,
///   the decoder's buffer doubling, the frames it completes), taken before it is issued;
///   while it is full no uplink socket is read (`UplinkReadGate` withholds NIO's reads),
///   so TCP pushes back on every sender and the kernel, not the endpoint, holds what they
///   still send; a read takes at most one 64 KiB buffer (`readQuantum`);
/// - a connection holds at most `perConnection` (what reading one whole chunk message
///   takes), so one fast sender cannot take the budget from the others;
/// - from half full on (`heldBytes`: the reservations of idle connections left out), a
///   hello is refused (error `busy` with a retry hint, close 4015)
///   and a welcome offers a window shrunk in proportion to what is left;
/// - if connections wait for room while nothing is handled (every byte held is part of a
///   message that cannot complete), the hub closes the connections holding the most
///   (4015), so the endpoint never wedges (`UplinkHub.wedgeMs`).
///
/// Hot path: a few atomic adds per read and per frame, one per handled message;
/// the lock is taken only to park or wake a connection, which happens only under load.
final class InflightBudget: Sendable {
    /// The memory budget, bytes.
    let limit: Int
    /// What one connection may hold, bytes of the budget.
    let perConnection: Int
    /// The most one read takes from a socket: uplink channels read one buffer of the
    /// adaptive allocator's 64 KiB at most per read call (`maxMessagesPerRead` 1).
    static let readQuantum = 64 << 10

    private let used = Atomic<Int>(0)
    /// The part of `used` that reads issued and not yet done have reserved.
    private let reservations = Atomic<Int>(0)
    /// Bytes handled (released) since the start: progress, for the hub's wedge check.
    private let handled = Atomic<Int>(0)
    private let parkedCount = Atomic<Int>(0)
    /// Connections waiting for room, in the order they began to wait.
    private let parked = Mutex<[(id: UInt64, wake: @Sendable () -> Void)]>([])

    /// `limit` at least `minimum(maxChunkBytes:)`.
    init(limit: Int, maxChunkBytes: Int) {
        self.limit = max(limit, 1)
        perConnection = min(Self.minimum(maxChunkBytes: maxChunkBytes), self.limit)
    }

    /// The smallest budget: one connection's share, what a connection holds at most while
    /// it reads the largest chunk message: the message counted twice, the decoder's buffer
    /// (a frame, doubled) and one read's reservation (the buffer doubling again, and the
    /// read's bytes twice). Below it a chunk could never be read whole.
    static func minimum(maxChunkBytes: Int) -> Int {
        2 * (maxChunkBytes + UplinkChunkFrame.prefixBytes + UplinkProtocol.maxHeaderBytes)
            + 4 * UplinkProtocol.maxFrameBytes + 2 * readQuantum
    }

    /// Bytes of the budget held now.
    var usedBytes: Int { used.load(ordering: .sequentiallyConsistent) }
    /// Some connection waits for room.
    var hasWaiting: Bool { parkedCount.load(ordering: .sequentiallyConsistent) > 0 }
    var handledBytes: Int { handled.load(ordering: .relaxed) }

    /// What the data held takes, without the reservations of reads still waiting for
    /// bytes (an idle connection holds one): the load the window and `busy` follow.
    var heldBytes: Int { usedBytes - reservations.load(ordering: .sequentiallyConsistent) }

    /// From half full on: new uplinks are refused.
    var isBusy: Bool { heldBytes >= limit / 2 }

    enum Reservation { case taken, noRoomInShare, noRoomInBudget }

    /// Takes `bytes` for a read about to be issued by a connection holding `held`, if the
    /// connection's share and the budget have room for them (or the budget is empty, so
    /// that one read can always go ahead).
    func reserve(_ bytes: Int, held: Int) -> Reservation {
        guard held + bytes <= perConnection else { return .noRoomInShare }
        reservations.add(bytes, ordering: .sequentiallyConsistent)
        let after = used.add(bytes, ordering: .sequentiallyConsistent).newValue
        if after <= limit || after == bytes { return .taken }
        releaseReservation(bytes)
        return .noRoomInBudget
    }

    /// A read is done (or its connection gone): what it reserved goes back.
    func releaseReservation(_ bytes: Int) {
        guard bytes > 0 else { return }
        reservations.subtract(bytes, ordering: .sequentiallyConsistent)
        release(bytes, handled: false)
    }

    /// The window to offer a new uplink: the configured one, shrunk in proportion to the
    /// budget already spent (rounded up, at least 1: the hello being answered is spent too).
    func window(configured: Int) -> Int {
        let free = Int64(max(0, limit - heldBytes)), whole = Int64(limit)
        return max(1, Int((Int64(configured) * free + whole - 1) / whole))
    }

    /// How long a refused client should wait before its next hello: 1 s, up to 5 s as
    /// the budget fills.
    var retryAfterMs: Int {
        1000 + Int(min(Int64(4000), Int64(4000) * Int64(max(heldBytes, 0)) / Int64(limit)))
    }

    func charge(_ bytes: Int) {
        guard bytes > 0 else { return }
        used.add(bytes, ordering: .sequentiallyConsistent)
    }

    /// Bytes no longer held: wakes waiting connections while there is room.
    func release(_ bytes: Int, handled wasHandled: Bool) {
        guard bytes > 0 else { return }
        used.subtract(bytes, ordering: .sequentiallyConsistent)
        if wasHandled { handled.add(bytes, ordering: .relaxed) }
        if parkedCount.load(ordering: .sequentiallyConsistent) > 0 { wakeWhileRoom() }
    }

    /// A connection that may not read waits here; `wake` runs (once) when there may be
    /// room again, and must check again itself. Checking after parking closes the race
    /// with a release that saw no one waiting.
    func park(id: UInt64, wake: @escaping @Sendable () -> Void) {
        parked.withLock { list in
            list.append((id, wake))
            parkedCount.add(1, ordering: .sequentiallyConsistent)
        }
        wakeWhileRoom()
    }

    /// Forgets a connection that closed while it waited.
    func unpark(id: UInt64) {
        parked.withLock { list in
            let before = list.count
            list.removeAll { $0.id == id }
            parkedCount.subtract(before - list.count, ordering: .sequentiallyConsistent)
        }
    }

    /// Wakes the longest-waiting connections, as many as the free room could feed one
    /// read each (at least one).
    private func wakeWhileRoom() {
        let free = limit - usedBytes
        guard free > 0 else { return }
        let count = max(1, free / (4 * Self.readQuantum))   // a read reserves about that much
        let woken: [@Sendable () -> Void] = parked.withLock { list in
            let n = min(count, list.count)
            let out = list.prefix(n).map(\.wake)
            list.removeFirst(n)
            parkedCount.subtract(n, ordering: .sequentiallyConsistent)
            return out
        }
        for wake in woken { wake() }
    }
}

/// What one uplink connection holds of the budget. Written by its read gate on the event
/// loop and by its handler (which releases what it handled), read by the hub.
final class UplinkInflight: Sendable {
    let budget: InflightBudget
    /// Bytes read from the socket that are not (yet) a whole frame: the decoder's buffer.
    /// Event loop only (the gate and the meter); atomic so the hub can read it.
    let raw = Atomic<Int>(0)
    /// What the decoder's buffer is charged (see `InflightBudget`). Event loop only.
    let rawCharge = Atomic<Int>(0)
    /// What the read in progress has reserved (`UplinkReadGate.reserveRead`). Event loop only.
    let reserved = Atomic<Int>(0)
    /// The channel's own read buffer, kept by NIO's pool while it lives.
    let fixedCharge = Atomic<Int>(0)
    /// Payload bytes of text and binary frames passed on and not yet handled (charged twice).
    let frames = Atomic<Int>(0)
    /// The gate waits for this connection's handler to free part of its share.
    let ownerWaiting = Atomic<Bool>(false)
    /// The gate holds a read back (for room in the budget or in the connection's share).
    let gateWaiting = Atomic<Bool>(false)
    /// When the connection last sent bytes or had a message handled (ms, `EndpointClock`).
    let lastActivityMs: Atomic<Int64>
    /// How the handler wakes the gate (set once, when the gate is put in place).
    private let ownerWake = Mutex<(@Sendable () -> Void)?>(nil)

    init(budget: InflightBudget, now: Int64) {
        self.budget = budget
        lastActivityMs = Atomic(now)
    }

    /// nil once the gate is gone (the closure holds the gate: no cycle outlives the channel).
    func setOwnerWake(_ wake: (@Sendable () -> Void)?) {
        ownerWake.withLock { $0 = wake }
    }

    /// Wakes the gate if it waits for its own share.
    func wakeOwner() {
        guard ownerWaiting.exchange(false, ordering: .sequentiallyConsistent) else { return }
        ownerWake.withLock { $0 }?()
    }

    /// What the connection holds of data it sent (its decoder's buffer and its frames):
    /// what a stalled or wedged connection is judged by.
    var dataHeld: Int { rawCharge.load(ordering: .relaxed) + 2 * frames.load(ordering: .relaxed) }

    /// Bytes of the budget this connection holds.
    var held: Int {
        rawCharge.load(ordering: .relaxed) + reserved.load(ordering: .relaxed) + 2 * frames.load(ordering: .relaxed)
            + fixedCharge.load(ordering: .relaxed)
    }

    /// A frame of `payload` bytes passed on.
    func framePassed(_ payload: Int) {
        frames.add(payload, ordering: .relaxed)
        budget.charge(2 * payload)
    }

    /// The connection's handler is done with a message of `bytes` payload bytes. Never
    /// releases more than was charged (a message may have begun before the gate was in
    /// place).
    func handled(_ bytes: Int) {
        var current = frames.load(ordering: .relaxed)
        while true {
            let take = min(max(bytes, 0), current)
            guard take > 0 else { return }
            let (exchanged, original) = frames.compareExchange(expected: current, desired: current - take,
                                                               ordering: .relaxed)
            if exchanged {
                lastActivityMs.store(EndpointClock.nowMilliseconds(), ordering: .relaxed)
                budget.release(2 * take, handled: true)
                wakeOwner()
                return
            }
            current = original
        }
    }

    /// The connection is gone: everything it held goes back.
    func releaseAll() {
        raw.store(0, ordering: .relaxed)
        budget.releaseReservation(reserved.exchange(0, ordering: .relaxed))
        let bytes = rawCharge.exchange(0, ordering: .relaxed) + 2 * frames.exchange(0, ordering: .relaxed)
            + fixedCharge.exchange(0, ordering: .relaxed)
        budget.release(bytes, handled: false)
    }
}
