import CaptureCore
import CaptureConcurrency
@testable import CapturePipeline
import Foundation
import XCTest

/// The channel start/stop handshake, between two real threads.
final class ChannelLifecycleTests: XCTestCase {
    /// Setup reported, go, the encoder's end, exit: each wait returns once its step happened,
    /// in that order.
    func testTheStepsInOrder() {
        let lifecycle = ChannelLifecycle<Int>()
        let steps = ConditionLock<[String]>([])
        Thread {
            lifecycle.reportSetup(.success(42))
            let run = lifecycle.awaitGo()
            steps.withLock { $0.append("go \(run)") }
            lifecycle.awaitEncoderDone()
            steps.withLock { $0.append("encoder done") }
            lifecycle.exited()
        }.start()
        guard case .success(let value) = lifecycle.awaitSetup() else { return XCTFail("setup failed") }
        XCTAssertEqual(value, 42)
        lifecycle.go()
        _ = steps.wait(until: { $0.count == 1 }, deadline: MonotonicClock.now() + 5_000_000_000) { _ in () }
        lifecycle.encoderFinished()
        lifecycle.awaitExit()
        XCTAssertEqual(steps.withLock { $0 }, ["go true", "encoder done"])
    }

    /// A channel cancelled before it was told to go does not run; a cancel after go changes
    /// nothing; a failed setup reaches the starter as its error.
    func testCancelAndFailure() {
        let cancelled = ChannelLifecycle<Void>()
        cancelled.cancel()
        cancelled.go()
        XCTAssertFalse(cancelled.awaitGo(), "cancel came first")

        let running = ChannelLifecycle<Void>()
        running.go()
        running.cancel()
        XCTAssertTrue(running.awaitGo(), "go came first")

        let failed = ChannelLifecycle<Void>()
        failed.reportSetup(.failure(CaptureError(.displayUnavailable, "no X server")))
        guard case .failure(let error) = failed.awaitSetup() else { return XCTFail("setup succeeded") }
        XCTAssertEqual(error.code, .displayUnavailable)
    }
}
