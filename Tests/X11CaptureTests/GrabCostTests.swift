import CaptureCore
import Foundation
import XCTest
import X11Capture
import X11TestSupport

/// Rough costs on this machine, printed for the report (assertions only catch the absurd).
final class GrabCostTests: XCTestCase {
    func testMeasureGrabAndPollCostAt1080p() throws {
        let server = try PrivateXvfb(width: 1920, height: 1080)
        let c = try X11Connection(displayName: server.display)
        let m = try c.monitors()[0]
        try c.fillRootRectangle(m.rect, color: 0x336699)
        try c.warpPointer(x: 960, y: 540)

        var cpu = 0.0
        func cpuNow() -> Double {
            var ts = timespec()
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
            return Double(ts.tv_sec) * 1e6 + Double(ts.tv_nsec) / 1000
        }
        // Wall µs per call; `cpu` gets this process's CPU µs per call.
        func perCall(_ n: Int, _ body: () throws -> Void) rethrows -> Double {
            let t0 = MonotonicClock.now(), c0 = cpuNow()
            for _ in 0..<n { try body() }
            cpu = (cpuNow() - c0) / Double(n)
            return Double(MonotonicClock.now() - t0) / Double(n) / 1000
        }
        func f(_ v: Double) -> String { String(format: v < 10 ? "%.1f" : "%.0f", v) }
        var lines: [String] = []
        for drawCursor in [false, true] {
            let g = try ScreenGrabber(connection: c, region: m, poolSize: 3, drawCursor: drawCursor)
            _ = try settle(g)
            var slot = 0
            let grab = try perCall(200) { _ = try g.grab(into: slot); slot = (slot + 1) % 3 }
            let grabCPU = cpu
            let poll = try perCall(2000) { XCTAssertFalse(try g.pollChanges()) }
            lines.append("drawCursor=\(drawCursor): grab 1920x1080 (XShmGetImage\(drawCursor ? " + XQueryPointer + cursor blend" : "")) \(f(grab)) µs wall / \(f(grabCPU)) µs CPU; pollChanges on a still screen \(f(poll)) µs wall / \(f(cpu)) µs CPU")
            XCTAssertLessThan(grab, 50_000)
            XCTAssertLessThan(poll, 5_000)
        }
        let fallback = try ScreenGrabber(connection: c, region: m, poolSize: 1, drawCursor: false, allowShm: false)
        let slow = try perCall(20) { _ = try fallback.grab(into: 0) }
        lines.append("XGetImage fallback grab 1920x1080: \(f(slow)) µs wall / \(f(cpu)) µs CPU")
        let q = try perCall(2000) { _ = try c.pointerPosition() }
        lines.append("XQueryPointer round trip: \(f(q)) µs wall / \(f(cpu)) µs CPU")
        print("GRAB-COST " + lines.joined(separator: "\nGRAB-COST "))
    }
}
