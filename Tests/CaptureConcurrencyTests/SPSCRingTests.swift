import CaptureCore
import CaptureConcurrency
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class SPSCRingTests: XCTestCase {
    func testCapacityRoundsUpToPowerOfTwo() {
        XCTAssertEqual(SPSCRing<Int>(capacity: 1).capacity, 2)
        XCTAssertEqual(SPSCRing<Int>(capacity: 3).capacity, 4)
        XCTAssertEqual(SPSCRing<Int>(capacity: 8).capacity, 8)
        XCTAssertEqual(SPSCRing<Int>(capacity: 1000).capacity, 1024)
    }

    func testEmptyEdge() {
        let ring = SPSCRing<Int>(capacity: 4)
        XCTAssertTrue(ring.isEmpty)
        XCTAssertNil(ring.pop())
        XCTAssertTrue(ring.push(7))
        XCTAssertEqual(ring.pop(), 7)
        XCTAssertNil(ring.pop(), "a drained ring is empty again")
        XCTAssertTrue(ring.isEmpty)
    }

    func testFullEdgeRejectsWithoutOverwriting() {
        let ring = SPSCRing<Int>(capacity: 4)
        for i in 0..<4 { XCTAssertTrue(ring.push(i), "slot \(i) should be free") }
        XCTAssertEqual(ring.freeSpace, 0)
        XCTAssertFalse(ring.push(99), "a full ring refuses")
        XCTAssertFalse(ring.push(100))
        XCTAssertEqual(ring.count, 4)
        XCTAssertEqual(ring.pop(), 0)
        XCTAssertTrue(ring.push(4), "one pop frees exactly one slot")
        XCTAssertFalse(ring.push(5))
        XCTAssertEqual([ring.pop(), ring.pop(), ring.pop(), ring.pop()], [1, 2, 3, 4])
        XCTAssertNil(ring.pop())
    }

    func testWrapsAroundManyTimes() {
        let ring = SPSCRing<Int>(capacity: 2)
        for i in 0..<10_000 {
            XCTAssertTrue(ring.push(i))
            XCTAssertEqual(ring.pop(), i)
        }
    }

    func testReleasesReferencesWhenPopped() {
        final class Token {}
        weak var weakToken: Token?
        let ring = SPSCRing<Token>(capacity: 2)
        do {
            let token = Token()
            weakToken = token
            XCTAssertTrue(ring.push(token))
        }
        XCTAssertNotNil(weakToken)
        _ = ring.pop()
        XCTAssertNil(weakToken, "pop must move the element out, not leave a copy in the slot")
    }

    /// Ten million items through a small ring between two threads: every item
    /// arrives exactly once and in order, and both the full and the empty edge
    /// are hit many times on the way.
    func testConcurrentStressKeepsOrderAndCount() {
        // 2 million items through 64 places: 31,000 laps of the ring. A side that finds the
        // ring full or empty yields its core instead of spinning out its time slice, so the
        // test costs seconds even when the other test lane has the second core.
        let total = 2_000_000
        let ring = SPSCRing<Int>(capacity: 64)
        let stats = StressStats()
        let done = DispatchSemaphore(value: 0)

        let producer = Thread {
            var next = 0
            var fullHits = 0
            while next < total {
                if ring.push(next) { next += 1 } else { fullHits += 1; sched_yield() }
            }
            stats.setProducer(fullHits: fullHits)
            done.signal()
        }
        let consumer = Thread {
            var expected = 0
            var emptyHits = 0
            var outOfOrder = 0
            var checksum = 0
            while expected < total {
                if let v = ring.pop() {
                    if v != expected { outOfOrder += 1 }
                    checksum &+= v
                    expected += 1
                } else {
                    emptyHits += 1
                    sched_yield()
                }
            }
            stats.setConsumer(received: expected, outOfOrder: outOfOrder, checksum: checksum, emptyHits: emptyHits)
            done.signal()
        }
        producer.stackSize = 1 << 20
        consumer.stackSize = 1 << 20
        producer.start()
        consumer.start()
        XCTAssertEqual(done.wait(timeout: .now() + 120), .success)
        XCTAssertEqual(done.wait(timeout: .now() + 120), .success)

        let s = stats.snapshot()
        XCTAssertEqual(s.received, total)
        XCTAssertEqual(s.outOfOrder, 0)
        XCTAssertEqual(s.checksum, (total - 1) * total / 2)
        XCTAssertNil(ring.pop(), "nothing extra is left behind")
        // Both edges were exercised under contention (otherwise the test proves less than it claims).
        XCTAssertGreaterThan(s.fullHits + s.emptyHits, 1000, "full \(s.fullHits), empty \(s.emptyHits)")
    }
}

/// Results handed from the stress threads back to the test (written once per thread).
private final class StressStats: Sendable {
    struct Snapshot { var received = 0, outOfOrder = 0, checksum = 0, emptyHits = 0, fullHits = 0 }
    private let state = Mutex(Snapshot())
    func setProducer(fullHits: Int) { state.withLock { $0.fullHits = fullHits } }
    func setConsumer(received: Int, outOfOrder: Int, checksum: Int, emptyHits: Int) {
        state.withLock {
            $0.received = received; $0.outOfOrder = outOfOrder; $0.checksum = checksum; $0.emptyHits = emptyHits
        }
    }
    func snapshot() -> Snapshot { state.withLock { $0 } }
}

import Synchronization
