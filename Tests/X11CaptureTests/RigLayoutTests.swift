import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest
import X11Capture
import X11TestSupport

/// Screen layouts only the rig provides: two monitors (Xorg + dummy driver) and an odd size.
final class RigLayoutTests: XCTestCase {
    func testTwoMonitorDummyLayout() throws {
        let rig = try TestRig.start(RigOptions(monitors: [RigMonitor(width: 1920, height: 1080),
                                                          RigMonitor(width: 1280, height: 1024)],
                                               audio: false, motion: false))
        defer { rig.stop() }
        let c = try X11Connection(displayName: rig.display)
        let monitors = try c.monitors()
        XCTAssertEqual(monitors.count, 2)
        XCTAssertEqual(monitors.map(\.index), [1, 2])
        XCTAssertEqual(monitors.map(\.name), ["DUMMY0", "DUMMY1"])
        XCTAssertEqual(monitors.map { [$0.x, $0.y, $0.width, $0.height] }, [[0, 0, 1920, 1080], [1920, 0, 1280, 1024]])
        XCTAssertEqual(monitors.filter(\.isPrimary).count, 1)
        XCTAssertEqual(c.rootWidth, 3200)
        XCTAssertEqual(c.rootHeight, 1080)

        let second = monitors[1]
        let g = try ScreenGrabber(connection: c, region: second, poolSize: 2, drawCursor: true)
        XCTAssertTrue(g.usesShm)
        XCTAssertEqual([g.width, g.height], [1280, 1024])
        try c.fillRootRectangle(PixelRect(x: 0, y: 0, width: 3200, height: 1080), color: 0x202020)
        try c.fillRootRectangle(PixelRect(x: 1900, y: 40, width: 120, height: 10), color: 0xFF00FF)  // straddles both
        try c.warpPointer(x: 600, y: 600)  // on monitor 1
        XCTAssertEqual(try g.grab(into: 0).bounds, PixelRect(x: 0, y: 0, width: 1280, height: 1024))
        let v = g.pixels(slot: 0)
        XCTAssertTrue(allPixels(v, in: PixelRect(x: 0, y: 40, width: 100, height: 10), are: 0xFF00FF))
        XCTAssertEqual(rgb(v, 100, 45), 0x202020)
        XCTAssertTrue(allPixels(v, in: PixelRect(x: 0, y: 1023, width: 1280, height: 1), are: 0x202020))
        XCTAssertTrue(try settle(g))

        // Drawing and pointer movement on monitor 1 are no change for monitor 2.
        try c.fillRootRectangle(PixelRect(x: 100, y: 100, width: 300, height: 300), color: 0x00FF00)
        try c.warpPointer(x: 700, y: 650)
        XCTAssertFalse(try g.pollChanges())
        // The pointer moving onto monitor 2 is, at its translated place.
        try c.warpPointer(x: 1920 + 640, y: 512)
        XCTAssertTrue(try g.pollChanges())
        let dirty = try g.grab(into: 1)
        XCTAssertTrue(covers(dirty, PixelRect(x: 640, y: 512, width: 4, height: 4)), "\(dirty.bounds)")
        var drawn = 0
        let w = g.pixels(slot: 1)
        for y in 500..<530 { for x in 630..<660 where rgb(w, x, y) != 0x202020 { drawn += 1 } }
        XCTAssertGreaterThan(drawn, 20, "cursor composited on monitor 2")

        // Straddling the border between the monitors: each grabber draws its own part.
        let first = try ScreenGrabber(connection: c, region: monitors[0], poolSize: 1, drawCursor: true)
        XCTAssertTrue(try settle(first))
        XCTAssertTrue(try settle(g))
        try c.warpPointer(x: 1919, y: 300)
        XCTAssertTrue(try g.pollChanges())
        XCTAssertTrue(try first.pollChanges())
        let d2 = try g.grab(into: 0), d1 = try first.grab(into: 0)
        XCTAssertTrue(covers(d2, PixelRect(x: 0, y: 300, width: 2, height: 2)), "\(d2.bounds)")
        XCTAssertTrue(covers(d1, PixelRect(x: 1915, y: 296, width: 5, height: 5)), "\(d1.bounds)")
        XCTAssertLessThanOrEqual(d1.bounds.maxX, 1920)
        XCTAssertEqual(d2.bounds.x, 0)
        var left = 0, right = 0
        let a = first.pixels(slot: 0), b = g.pixels(slot: 0)
        for y in 280..<330 {
            for x in 1890..<1920 where rgb(a, x, y) != 0x202020 { left += 1 }
            for x in 0..<30 where rgb(b, x, y) != 0x202020 { right += 1 }
        }
        XCTAssertGreaterThan(left, 5)
        XCTAssertGreaterThan(right, 5)
    }

    func testOddSize1366x767() throws {
        let rig = try TestRig.start(RigOptions(monitors: [RigMonitor(width: 1366, height: 767)], audio: false, motion: false))
        defer { rig.stop() }
        let c = try X11Connection(displayName: rig.display)
        let m = try XCTUnwrap(c.monitors().first)
        XCTAssertEqual([m.x, m.y, m.width, m.height], [0, 0, 1366, 767])
        for allowShm in [true, false] {
            let g = try ScreenGrabber(connection: c, region: m, poolSize: 3, drawCursor: false, allowShm: allowShm)
            XCTAssertEqual(g.usesShm, allowShm)
            try c.fillRootRectangle(m.rect, color: 0x0A0B0C)
            try c.fillRootRectangle(PixelRect(x: 1365, y: 0, width: 1, height: 767), color: 0xFFFFFF)   // last column
            try c.fillRootRectangle(PixelRect(x: 0, y: 766, width: 1365, height: 1), color: 0x808080)   // last row
            for slot in 0..<3 {
                _ = try g.grab(into: slot)
                let v = g.pixels(slot: slot)
                XCTAssertEqual([v.width, v.height], [1366, 767])
                XCTAssertGreaterThanOrEqual(v.bytesPerRow, 1366 * 4)
                XCTAssertTrue(allPixels(v, in: PixelRect(x: 1365, y: 0, width: 1, height: 767), are: 0xFFFFFF))
                XCTAssertTrue(allPixels(v, in: PixelRect(x: 0, y: 766, width: 1365, height: 1), are: 0x808080))
                XCTAssertEqual(rgb(v, 1364, 765), 0x0A0B0C)
                XCTAssertEqual(rgb(v, 0, 0), 0x0A0B0C)
            }
        }
    }
}
