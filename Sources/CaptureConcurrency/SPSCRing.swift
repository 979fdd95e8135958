import Synchronization

/// A bounded, lock-free single-producer / single-consumer ring of values.
///
/// Storage is allocated once, in `init`; `push` and `pop` never allocate, never
/// lock and never block. This is the hand-off between pipeline stages (capture
/// thread -> encoder queue -> spool writer), so it carries small values (slot
/// indices, timestamps); large buffers live in pools whose ownership the ring
/// transfers.
///
/// Contract: exactly one thread calls the producer methods (`push`, `freeSpace`)
/// and exactly one thread calls the consumer methods (`pop`, `peek`); they may
/// be different threads and may change over time only with a happens-before
/// edge between the old and the new owner (for example a dispatch queue hop).
///
/// Why `@unchecked Sendable` is sound under that contract:
/// - `tail` is written only by the producer, `head` only by the consumer.
/// - The producer writes slot `tail & mask` only while `tail - head < capacity`
///   (the slot is free: the consumer has moved past it and will not read it
///   until `tail` is published), then publishes it with a *releasing* store of
///   `tail + 1`. The consumer reads `tail` with an *acquiring* load, so the slot
///   write happens-before the slot read.
/// - Symmetrically the consumer moves the element out, then publishes `head + 1`
///   with a releasing store; the producer's acquiring load of `head` orders that
///   read before any later overwrite of the slot.
/// So no slot is ever accessed by both sides at once, and every access is
/// ordered by the acquire/release pair on the index that hands it over.
public final class SPSCRing<Element>: @unchecked Sendable {
    public let capacity: Int
    private let mask: Int
    private let slots: UnsafeMutablePointer<Element?>
    // head and tail sit on separate cache lines so producer and consumer do not
    // false-share (each Atomic<Int> is 8 bytes; the padding fills 64).
    private let head = Atomic<Int>(0)
    private let pad0 = (0, 0, 0, 0, 0, 0, 0)
    private let tail = Atomic<Int>(0)
    private let pad1 = (0, 0, 0, 0, 0, 0, 0)

    /// - Parameter capacity: rounded up to a power of two, at least 2.
    public init(capacity: Int) {
        precondition(capacity > 0, "SPSCRing capacity must be positive")
        var size = 2
        while size < capacity { size <<= 1 }
        self.capacity = size
        self.mask = size - 1
        self.slots = .allocate(capacity: size)
        self.slots.initialize(repeating: nil, count: size)
    }

    deinit {
        slots.deinitialize(count: capacity)
        slots.deallocate()
    }

    // MARK: Producer side

    /// Appends `value`. Returns false, leaving the ring untouched, when it is full.
    @inline(__always)
    public func push(_ value: consuming Element) -> Bool {
        let t = tail.load(ordering: .relaxed)
        let h = head.load(ordering: .acquiring)
        if t &- h >= capacity { return false }
        slots[t & mask] = value
        tail.store(t &+ 1, ordering: .releasing)
        return true
    }

    /// Free slots as seen by the producer (a lower bound: the consumer may free more).
    public var freeSpace: Int {
        capacity - (tail.load(ordering: .relaxed) &- head.load(ordering: .acquiring))
    }

    // MARK: Consumer side

    /// Removes and returns the oldest value, or nil when the ring is empty.
    @inline(__always)
    public func pop() -> Element? {
        let h = head.load(ordering: .relaxed)
        let t = tail.load(ordering: .acquiring)
        if h == t { return nil }
        let value = slots[h & mask].take()
        head.store(h &+ 1, ordering: .releasing)
        return value
    }

    /// Number of queued values as seen by the consumer (a lower bound).
    public var count: Int {
        tail.load(ordering: .acquiring) &- head.load(ordering: .relaxed)
    }

    /// True when nothing is queued (from either side's point of view, a snapshot).
    public var isEmpty: Bool {
        tail.load(ordering: .acquiring) == head.load(ordering: .acquiring)
    }
}
