import CaptureUplink
import NIOCore
import Synchronization

/// The endpoint's one budget of memory for uplink connections (`EndpointLimits.inflightBytes`):
/// what holds bytes read from uplink sockets and not yet handled, and the connections
/// themselves. What the endpoint's memory grows by under load is bounded by this number,
/// not by the number of clients (scripts/benchmark-endpoint at twice the machine's
/// capacity: 225 MB for 256 MiB, docs/performance.md). Each connection is charged what it
/// takes in memory, estimated from above:
///
/// - the connection itself (`connectionCost`: its read buffer and state), while it lives;
/// - a partial frame lies in the WebSocket decoder's buffer, which grows by doubling and
///   keeps its capacity while it holds anything: charged at the next power of two of the
///   most it held since it was last empty (heaptrack, 400 agents: those buffers were the
///   largest consumer, 221 MB at the peak, when only their bytes were counted);
/// - the decoder's buffer at least a read buffer's 64 KiB while it holds anything (it
///   may be that very buffer);
/// - a frame passed on (copied out of the decoder's buffer, `UplinkFrameMeter`) and the
///   message WSCore assembles from several (a buffer that grows by doubling): twice its
///   payload, until the connection has handled the message.
///
/// What the budget does:
/// - reads and new connections stop at three quarters of it (`readLimit`): the last
///   quarter is for what the counting cannot see (the allocator's slack, each read's
///   transient copies, WSCore's own buffers: at 400 agents the endpoint grew by 11-17 MB
///   more than the count's peak) and for the count passing its limit for a moment while a
///   read's reservation and what it charges overlap;
/// - a read is issued only if the budget has room for the most it can add (its buffer,
///   the decoder's buffer doubling, the frames it completes), taken before it is issued;
///   while it is full no uplink socket is read (`UplinkReadGate` withholds NIO's reads),
///   so TCP pushes back on every sender and the kernel, not the endpoint, holds what they
///   still send; a read takes at most one 64 KiB buffer (`readQuantum`);
/// - a connection holds at most `share` (what reading one whole chunk message
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
    /// Where reads stop: a quarter of the budget is kept back for what counting cannot
    /// see (`readLimit`).
    let readLimit: Int
    /// What one connection may hold, bytes of the budget.
    let share: Int
    /// The most one read takes from a socket: uplink channels read one buffer of the
    /// adaptive allocator's 64 KiB at most per read call (`maxMessagesPerRead` 1).
    static let readQuantum = 64 << 10
    /// What a connection takes while it lives, whatever it sends: the read buffer NIO's
    /// pool keeps for its channel (`readQuantum` once reads have filled it) and the
    /// connection's own state (channel, pipeline, WSCore's stream, its task), about 40 KB
    /// each when measured with 400 idle uplinks. Charged so that the budget bounds what
    /// the endpoint's memory grows by, not only the data.
    static let connectionCost = readQuantum + (40 << 10)

    private let used = Atomic<Int>(0)
    /// The part of `used` that reads issued and not yet done have reserved.
    private let reservations = Atomic<Int>(0)
    /// The part of `used` that is the connections themselves (`connectionCost` each).
    private let standing = Atomic<Int>(0)
    /// Bytes handled (released) since the start: progress, for the hub's wedge check.
    private let handled = Atomic<Int>(0)
    private let parkedCount = Atomic<Int>(0)
    /// Connections waiting for room, in the order they began to wait.
    private let parked = Mutex<[(id: UInt64, need: Int, wake: @Sendable () -> Void)]>([])

    /// `limit` at least `minimum(maxChunkBytes:)`.
    init(limit: Int, maxChunkBytes: Int) {
        self.limit = max(limit, 1)
        readLimit = self.limit - self.limit / 4
        share = min(Self.share(maxChunkBytes: maxChunkBytes), readLimit)
    }

    /// One connection's share: what a connection holds at most while it reads the largest
    /// chunk message: the message counted twice, the decoder's buffer (a frame, doubled),
    /// one read's reservation (the buffer doubling again, and the read's bytes twice) and
    /// the connection itself.
    static func share(maxChunkBytes: Int) -> Int {
        2 * (maxChunkBytes + UplinkChunkFrame.prefixBytes + UplinkProtocol.maxHeaderBytes)
            + 4 * UplinkProtocol.maxFrameBytes + 2 * readQuantum + connectionCost
    }

    /// The smallest budget: one share below the read limit. Below it a chunk could never
    /// be read whole.
    static func minimum(maxChunkBytes: Int) -> Int {
        (share(maxChunkBytes: maxChunkBytes) * 4 + 2) / 3
    }

    /// Bytes of the budget held now.
    var usedBytes: Int { used.load(ordering: .sequentiallyConsistent) }
    /// Some connection waits for room.
    var hasWaiting: Bool { parkedCount.load(ordering: .sequentiallyConsistent) > 0 }
    var handledBytes: Int { handled.load(ordering: .relaxed) }

    /// What the data held takes, without the connections themselves and the reservations
    /// of reads still waiting for bytes (an idle connection holds one): the load the window
    /// and `busy` follow.
    var heldBytes: Int {
        usedBytes - reservations.load(ordering: .sequentiallyConsistent) - standing.load(ordering: .sequentiallyConsistent)
    }

    /// From half full on: new uplinks are refused.
    var isBusy: Bool { heldBytes >= limit / 2 }

    enum Reservation { case taken, noRoomInShare, noRoomInBudget }

    /// Takes `bytes` for a read about to be issued by a connection holding `held`, if the
    /// connection's share and the budget have room for them (or the budget is empty, so
    /// that one read can always go ahead).
    func reserve(_ bytes: Int, held: Int) -> Reservation {
        guard held + bytes <= share else { return .noRoomInShare }
        reservations.add(bytes, ordering: .sequentiallyConsistent)
        let after = used.add(bytes, ordering: .sequentiallyConsistent).newValue
        if after <= readLimit || after == bytes { return .taken }
        releaseReservation(bytes)
        return .noRoomInBudget
    }

    /// Charges a new connection's `connectionCost` if the budget has room for it; a
    /// connection refused here is told to come back (`busy`) without being read.
    func admit(_ bytes: Int) -> Bool {
        let after = used.add(bytes, ordering: .sequentiallyConsistent).newValue
        if after <= readLimit || after == bytes {
            standing.add(bytes, ordering: .sequentiallyConsistent)
            return true
        }
        release(bytes, handled: false)
        return false
    }

    /// A connection admitted is gone.
    func dismiss(_ bytes: Int) {
        guard bytes > 0 else { return }
        standing.subtract(bytes, ordering: .sequentiallyConsistent)
        release(bytes, handled: false)
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

    /// A connection that may not read waits here for `need` bytes of room (what its read
    /// would reserve); `wake` runs (once) when the budget has that much free, and must
    /// check again itself. Checking after parking closes the race with a release that saw
    /// no one waiting.
    func park(id: UInt64, need: Int, wake: @escaping @Sendable () -> Void) {
        parked.withLock { list in
            list.append((id, need, wake))
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

    /// Wakes the longest-waiting connections, in order, while the free room covers what
    /// each needs: never one whose read would be refused again at once (woken, refused and
    /// parked again, a connection would spin its event loop; measured: millions of wake-ups
    /// in a flood, and the loop's other connections unread for seconds). The first waits
    /// until its need is free, so a large read is not passed over for ever by small ones.
    private func wakeWhileRoom() {
        let used = usedBytes
        var free = readLimit - used
        let woken: [@Sendable () -> Void] = parked.withLock { list in
            var count = 0
            // An empty budget lets one read go whatever its size (as `reserve` does).
            while count < list.count, list[count].need <= free || (used == 0 && count == 0) {
                free -= list[count].need
                count += 1
            }
            let out = list.prefix(count).map(\.wake)
            list.removeFirst(count)
            parkedCount.subtract(count, ordering: .sequentiallyConsistent)
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
    /// The connection itself (`InflightBudget.connectionCost`), while it lives.
    let fixedCharge = Atomic<Int>(0)
    /// Payload bytes of text and binary frames passed on and not yet handled (charged twice).
    let frames = Atomic<Int>(0)
    /// The gate waits for this connection's handler to free part of its share.
    let ownerWaiting = Atomic<Bool>(false)
    /// The gate holds a read back (for room in the budget or in the connection's share).
    let gateWaiting = Atomic<Bool>(false)
    /// When the connection last sent bytes or had a message handled (ms, `EndpointClock`).
    let lastActivityMs: Atomic<Int64>
    /// Since when a read has been passed to the socket with no bytes coming back (ms,
    /// `EndpointClock`); 0 while the gate holds reads back or bytes just came. What a stall
    /// is judged by: the sender had the chance to send all that time. Event loop writes.
    let readAskedAtMs = Atomic<Int64>(0)
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
        budget.release(rawCharge.exchange(0, ordering: .relaxed) + 2 * frames.exchange(0, ordering: .relaxed), handled: false)
        budget.dismiss(fixedCharge.exchange(0, ordering: .relaxed))
    }
}
