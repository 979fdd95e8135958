import CaptureCore
import CaptureConcurrency
import Foundation
import Synchronization
import XCTest

/// The woken wait that replaced sleep-and-retry polls between pipeline stages.
final class ConditionSignalTests: XCTestCase {
    /// A producer and a consumer hand 200,000 items through a ring of 2 places, the producer
    /// waiting on the signal whenever the ring is full and the consumer signalling after every
    /// pop: every wait ends by a wake (none reaches its 5 s deadline: a lost wake-up would).
    func testNoWakeUpIsLostAcrossAFullRing() {
        let ring = SPSCRing<Int>(capacity: 2)
        let signal = ConditionSignal()
        let count = 200_000
        let timedOut = Atomic<Int>(0)
        let consumed = Atomic<Int>(0)
        let done = DispatchSemaphore(value: 0)
        Thread {
            var expected = 0
            while expected < count {
                if let v = ring.pop() {
                    XCTAssertEqual(v, expected)
                    expected += 1
                    signal.changed()
                }
            }
            consumed.store(expected, ordering: .releasing)
            done.signal()
        }.start()
        for i in 0..<count {
            if !signal.wait(deadlineNs: MonotonicClock.now() + 5_000_000_000, { ring.push(i) }) {
                timedOut.add(1, ordering: .relaxed)
                break
            }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 30), .success)
        XCTAssertEqual(timedOut.load(ordering: .relaxed), 0, "a wait ran into its deadline")
        XCTAssertEqual(consumed.load(ordering: .acquiring), count)
    }

    /// A wait whose condition never comes true ends at its deadline, and says so; one woken
    /// by `changed()` ends at once.
    func testDeadlineAndWakeUp() {
        let signal = ConditionSignal()
        let started = MonotonicClock.now()
        XCTAssertFalse(signal.wait(deadlineNs: started + 100_000_000) { false })
        XCTAssertGreaterThanOrEqual(MonotonicClock.now() - started, 100_000_000)

        let flag = Atomic<Bool>(false)
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.05) {
            flag.store(true, ordering: .releasing)
            signal.changed()
        }
        let waitStart = MonotonicClock.now()
        XCTAssertTrue(signal.wait(deadlineNs: waitStart + 10_000_000_000) { flag.load(ordering: .acquiring) })
        XCTAssertLessThan(MonotonicClock.now() - waitStart, 5_000_000_000, "woken, not timed out")
    }
}
