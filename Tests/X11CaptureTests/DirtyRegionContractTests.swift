import CaptureCore
import CaptureTestSupport
import Foundation
import Synchronization
import XCTest
import X11Capture
import X11TestSupport

/// The contract the encoder relies on: pixels outside a grab's dirty region are exactly the
/// previous grab's pixels. Checked frame by frame under real motion (ffplay testsrc2) with a
/// pointer that keeps moving, on and off the video window (ffplay hides the pointer there,
/// so the cursor image changes too).
final class DirtyRegionContractTests: XCTestCase {
    func testNothingChangesOutsideTheDirtyRegionUnderMotion() throws {
        // A private rig: this test paints the root and drags the pointer around.
        let rig = try TestRig.start(RigOptions(audio: false, motion: true))
        defer { rig.stop() }
        let video = try XCTUnwrap(rig.motionRect)

        let c = try X11Connection(displayName: rig.display)
        let m = try c.monitors()[0]
        let g = try ScreenGrabber(connection: c, region: m, poolSize: 2, drawCursor: true)
        try c.fillRootRectangle(m.rect, color: 0x202040)

        // Wait for the video to appear (damage inside the top-left quarter).
        var sawMotion = false
        for _ in 0..<100 where !sawMotion {
            if try g.pollChanges() {
                let d = try g.grab(into: 0)
                sawMotion = !d.isEmpty && d.bounds.area < 1920 * 1080
            }
            usleep(20_000)
        }
        XCTAssertTrue(sawMotion, "ffplay never drew")

        // A second connection, owned by its own thread, moves the pointer around. Its failures
        // are the test's: a pointer that never moves would leave the cursor paths untested.
        let display = rig.display
        let stop = Stop()
        let mover = PointerMover()
        let thread = Thread {
            do throws(CaptureError) {
                let mc = try X11Connection(displayName: display)
                var i = 0
                while !stop.isSet {
                    let t = Double(i) * 0.05
                    try mc.warpPointer(x: 700 + Int(500 * cos(t)), y: 450 + Int(300 * sin(t)))
                    mover.moved()
                    i += 1
                    usleep(3_000)
                }
            } catch {
                mover.failed(error)
            }
            mover.finished()
        }
        thread.start()
        defer { stop.set(); mover.waitUntilFinished() }

        let size = m.height * g.pixels(slot: 0).bytesPerRow
        let expected = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        defer { expected.deallocate() }

        var slot = 0
        _ = try g.grab(into: slot)
        var mismatches = 0, partial = 0, frames = 0, cursorOnly = 0
        let deadline = Date().addingTimeInterval(4)
        while Date() < deadline {
            let prev = g.pixels(slot: slot)
            slot ^= 1
            usleep(UInt32.random(in: 0...12_000))
            _ = try g.pollChanges()
            let dirty = try g.grab(into: slot)
            let cur = g.pixels(slot: slot)
            // expected = previous frame with the dirty rectangles taken from the current one.
            expected.copyMemory(from: prev.baseAddress, byteCount: size)
            for i in 0..<dirty.count {
                let r = dirty[i]
                for y in Int(r.y)..<Int(r.maxY) {
                    let off = y * cur.bytesPerRow + Int(r.x) * 4
                    (expected + off).copyMemory(from: cur.baseAddress + off, byteCount: Int(r.width) * 4)
                }
            }
            if memcmp(expected, cur.baseAddress, size) != 0 { mismatches += 1 }
            if dirty.area < m.width * m.height / 2 { partial += 1 }
            if !dirty.isEmpty && dirty.bounds.intersection(video).isEmpty { cursorOnly += 1 }
            frames += 1
        }
        stop.set()
        mover.waitUntilFinished()
        XCTAssertNil(mover.error, "the pointer thread failed: \(mover.error.map { "\($0)" } ?? "")")
        XCTAssertGreaterThan(mover.moves, 200, "the pointer hardly moved")
        XCTAssertGreaterThan(frames, 100)
        XCTAssertEqual(mismatches, 0, "\(mismatches) of \(frames) frames changed outside their dirty region")
        XCTAssertGreaterThan(partial, frames * 9 / 10, "damage should keep most frames partial")
        // The pointer moved outside the video too: frames whose only change was the cursor.
        XCTAssertGreaterThan(cursorOnly, 10, "no cursor-only frames: the cursor path went untested")
        print("DIRTY-CONTRACT frames=\(frames) partial=\(partial) cursorOnly=\(cursorOnly) mismatches=\(mismatches)")
    }
}

/// What the pointer-moving thread did, for the test to check.
final class PointerMover: Sendable {
    private struct State { var moves = 0; var error: CaptureError?; var done = false }
    private let state = Mutex(State())
    var moves: Int { state.withLock { $0.moves } }
    var error: CaptureError? { state.withLock { $0.error } }
    func moved() { state.withLock { $0.moves += 1 } }
    func failed(_ error: CaptureError) { state.withLock { $0.error = error } }
    func finished() { state.withLock { $0.done = true } }
    func waitUntilFinished() {
        let deadline = Date().addingTimeInterval(5)
        while !state.withLock({ $0.done }) && Date() < deadline { usleep(5_000) }
    }
}

/// A flag shared with the pointer-moving thread.
final class Stop: Sendable {
    private let flag = Mutex(false)
    var isSet: Bool { flag.withLock { $0 } }
    func set() { flag.withLock { $0 = true } }
}
