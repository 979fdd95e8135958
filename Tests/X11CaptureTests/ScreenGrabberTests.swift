import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest
import X11Capture
import X11TestSupport

/// Reads back grabbed pixels (BGRX little endian) as 0xRRGGBB.
func rgb(_ view: PixelBufferView, _ x: Int, _ y: Int) -> UInt32 {
    precondition(x >= 0 && x < view.width && y >= 0 && y < view.height)
    let p = (view.baseAddress + y * view.bytesPerRow + x * 4).assumingMemoryBound(to: UInt8.self)
    return UInt32(p[2]) << 16 | UInt32(p[1]) << 8 | UInt32(p[0])
}

/// True when every pixel of `rect` (frame coordinates) has colour `color`.
func allPixels(_ view: PixelBufferView, in rect: PixelRect, are color: UInt32) -> Bool {
    for y in Int(rect.y)..<Int(rect.maxY) {
        for x in Int(rect.x)..<Int(rect.maxX) where rgb(view, x, y) != color { return false }
    }
    return true
}

func covers(_ region: DirtyRegion, _ rect: PixelRect) -> Bool {
    // Every pixel of rect inside some rectangle of the region (rects are small in tests).
    for y in Int(rect.y)..<Int(rect.maxY) {
        for x in Int(rect.x)..<Int(rect.maxX) {
            var hit = false
            for i in 0..<region.count where !hit {
                let r = region[i]
                hit = x >= r.x && x < r.maxX && y >= r.y && y < r.maxY
            }
            if !hit { return false }
        }
    }
    return true
}

/// Polls until the screen is quiet (no change reported for `quietFor` seconds), grabbing
/// whenever it is not, so that leftovers of earlier drawing are consumed.
func settle(_ grabber: ScreenGrabber, slot: Int = 0, quietFor: Double = 0.15, timeout: Double = 5) throws -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    var quietSince = Date()
    while Date() < deadline {
        if try grabber.pollChanges() {
            _ = try grabber.grab(into: slot)
            quietSince = Date()
        } else if Date().timeIntervalSince(quietSince) >= quietFor {
            return true
        }
        usleep(10_000)
    }
    return false
}

final class ScreenGrabberTests: XCTestCase {
    // One still 1920x1080 rig (Xvfb) for this class: no motion, because the damage tests
    // need a quiet screen, and no audio. XCTest runs the tests one after the other.
    nonisolated(unsafe) static var rig: TestRig?

    override class func tearDown() {
        rig?.stop()
        rig = nil
        super.tearDown()
    }

    func display() throws -> String {
        if Self.rig == nil { Self.rig = try TestRig.start(RigOptions(audio: false, motion: false)) }
        return Self.rig!.display
    }

    func testSingleMonitorXvfb() throws {
        let c = try X11Connection(displayName: display())
        XCTAssertTrue(c.hasShm && c.hasXFixes && c.hasDamage && c.hasRandR)
        XCTAssertEqual(c.rootWidth, 1920)
        XCTAssertEqual(c.rootHeight, 1080)
        let monitors = try c.monitors()
        XCTAssertEqual(monitors.count, 1)
        let m = try XCTUnwrap(monitors.first)
        XCTAssertEqual(m.index, 1)
        XCTAssertEqual([m.x, m.y, m.width, m.height], [0, 0, 1920, 1080])
        XCTAssertFalse(m.name.isEmpty)
    }

    func testGrabDeliversTheDrawnPixels() throws {
        let c = try X11Connection(displayName: display())
        let m = try c.monitors()[0]
        let g = try ScreenGrabber(connection: c, region: m, poolSize: 2, drawCursor: false)
        XCTAssertTrue(g.usesShm)
        XCTAssertEqual(g.warnings, [])
        try c.fillRootRectangle(m.rect, color: 0x102030)
        let box = PixelRect(x: 300, y: 200, width: 111, height: 77)
        try c.fillRootRectangle(box, color: 0xC0FFEE)

        let dirty = try g.grab(into: 1)
        XCTAssertEqual(dirty.bounds, PixelRect(x: 0, y: 0, width: 1920, height: 1080), "first grab is full")
        let v = g.pixels(slot: 1)
        XCTAssertEqual(v.width, 1920)
        XCTAssertEqual(v.height, 1080)
        XCTAssertGreaterThanOrEqual(v.bytesPerRow, 1920 * 4)
        // Byte order in memory: B, G, R, X.
        let p = (v.baseAddress + 200 * v.bytesPerRow + 300 * 4).assumingMemoryBound(to: UInt8.self)
        XCTAssertEqual([p[0], p[1], p[2]], [0xEE, 0xFF, 0xC0])
        XCTAssertTrue(allPixels(v, in: box, are: 0xC0FFEE))
        // One pixel around each edge is background.
        for (x, y) in [(299, 230), (411, 230), (350, 199), (350, 277), (0, 0), (1919, 1079)] {
            XCTAssertEqual(rgb(v, x, y), 0x102030, "(\(x),\(y))")
        }
        // Slot 0 was not touched.
        XCTAssertNotEqual(g.pixels(slot: 0).baseAddress, v.baseAddress)
    }

    func testDamageReportsTheDrawnRectAndAStillScreenReportsNothing() throws {
        let c = try X11Connection(displayName: display())
        let m = try c.monitors()[0]
        let g = try ScreenGrabber(connection: c, region: m, poolSize: 2, drawCursor: false)
        try c.fillRootRectangle(m.rect, color: 0x000000)
        XCTAssertTrue(try g.pollChanges(), "nothing grabbed yet: the first grab is due")
        XCTAssertTrue(try settle(g), "screen never became quiet")

        // Still: nothing to report, repeatedly.
        for _ in 0..<5 {
            XCTAssertFalse(try g.pollChanges())
            usleep(20_000)
        }
        XCTAssertTrue(try g.grab(into: 0).isEmpty, "a still screen grabs with an empty dirty region")

        let box = PixelRect(x: 1000, y: 600, width: 64, height: 48)
        try c.fillRootRectangle(box, color: 0xFF0000)
        XCTAssertTrue(try g.pollChanges())
        let dirty = try g.grab(into: 1)
        XCTAssertTrue(covers(dirty, box), "dirty \(dirty.bounds) must cover \(box)")
        XCTAssertLessThanOrEqual(dirty.area, box.area * 2, "dirty region should be tight, got \(dirty.bounds)")
        XCTAssertTrue(allPixels(g.pixels(slot: 1), in: box, are: 0xFF0000))
        XCTAssertFalse(try g.pollChanges(), "the change was consumed by the grab")
        XCTAssertTrue(try g.grab(into: 0).isEmpty)

        // invalidate() forces a full report.
        g.invalidate()
        XCTAssertTrue(try g.pollChanges())
        XCTAssertEqual(try g.grab(into: 1).bounds, PixelRect(x: 0, y: 0, width: 1920, height: 1080))
    }

    func testDamageOutsideTheRegionIsIgnoredAndInsideIsTranslated() throws {
        let c = try X11Connection(displayName: display())
        // A sub-rectangle of the screen standing in for a second monitor.
        let right = MonitorInfo(index: 2, name: "right", x: 1280, y: 100, width: 640, height: 480, isPrimary: false)
        let g = try ScreenGrabber(connection: c, region: right, poolSize: 1, drawCursor: false)
        try c.fillRootRectangle(PixelRect(x: 0, y: 0, width: 1920, height: 1080), color: 0x333333)
        XCTAssertTrue(try settle(g))

        try c.fillRootRectangle(PixelRect(x: 10, y: 10, width: 200, height: 200), color: 0x00FF00)
        XCTAssertFalse(try g.pollChanges(), "drawing outside the region is not a change")

        // Straddles the region's left edge: only the inside part, in frame coordinates.
        try c.fillRootRectangle(PixelRect(x: 1200, y: 150, width: 100, height: 30), color: 0x0000FF)
        XCTAssertTrue(try g.pollChanges())
        let dirty = try g.grab(into: 0)
        XCTAssertEqual(dirty.bounds, PixelRect(x: 0, y: 50, width: 20, height: 30))
        let v = g.pixels(slot: 0)
        XCTAssertTrue(allPixels(v, in: PixelRect(x: 0, y: 50, width: 20, height: 30), are: 0x0000FF))
        XCTAssertEqual(rgb(v, 20, 60), 0x333333)
        XCTAssertEqual(rgb(v, 5, 49), 0x333333)
    }

    func testCursorIsCompositedAndItsMovementIsAChange() throws {
        let c = try X11Connection(displayName: display())
        let m = try c.monitors()[0]
        let plain = try ScreenGrabber(connection: c, region: m, poolSize: 1, drawCursor: false)
        let g = try ScreenGrabber(connection: c, region: m, poolSize: 2, drawCursor: true)
        try c.defineRootCursor(fontShape: 68)  // XC_left_ptr: hotspot at its tip
        let background: UInt32 = 0x00C000
        try c.fillRootRectangle(m.rect, color: background)
        try c.warpPointer(x: 500, y: 400)
        XCTAssertTrue(try settle(g))
        XCTAssertTrue(try settle(plain))

        _ = try plain.grab(into: 0)
        _ = try g.grab(into: 0)
        let area = PixelRect(x: 490, y: 390, width: 40, height: 40)
        XCTAssertTrue(allPixels(plain.pixels(slot: 0), in: area, are: background), "no cursor without drawCursor")
        let v = g.pixels(slot: 0)
        var changed = 0
        for y in 390..<430 { for x in 490..<530 where rgb(v, x, y) != background { changed += 1 } }
        XCTAssertGreaterThan(changed, 20, "the cursor should be drawn near the hotspot")
        XCTAssertTrue(allPixels(v, in: PixelRect(x: 0, y: 0, width: 400, height: 300), are: background))

        // Still pointer: no change. Moved pointer: a change covering old and new position.
        XCTAssertFalse(try g.pollChanges())
        XCTAssertFalse(try plain.pollChanges(), "pointer-blind grabber ignores the cursor")
        try c.warpPointer(x: 900, y: 700)
        XCTAssertTrue(try g.pollChanges())
        XCTAssertFalse(try plain.pollChanges())
        let dirty = try g.grab(into: 1)
        XCTAssertTrue(covers(dirty, PixelRect(x: 500, y: 400, width: 8, height: 8)), "old cursor place: \(dirty.bounds)")
        XCTAssertTrue(covers(dirty, PixelRect(x: 900, y: 700, width: 8, height: 8)), "new cursor place: \(dirty.bounds)")
        XCTAssertLessThan(dirty.area, 64 * 64 * 2, "only the two cursor rectangles")
        let w = g.pixels(slot: 1)
        XCTAssertTrue(allPixels(w, in: area, are: background), "old position repainted")
        XCTAssertNotEqual(rgb(w, 901, 702), background)

        // A different cursor image is a change too, and looks different.
        var before: [UInt32] = []
        for y in 695..<730 { for x in 890..<925 { before.append(rgb(w, x, y)) } }
        try c.defineRootCursor(fontShape: 152)  // XC_xterm (I-beam)
        XCTAssertTrue(try g.pollChanges())
        _ = try g.grab(into: 0)
        var after: [UInt32] = []
        let u = g.pixels(slot: 0)
        for y in 695..<730 { for x in 890..<925 { after.append(rgb(u, x, y)) } }
        XCTAssertNotEqual(before, after)
        try c.defineRootCursor(fontShape: nil)
    }

    func testXGetImageFallbackDeliversTheSamePixels() throws {
        let c = try X11Connection(displayName: display())
        let m = try c.monitors()[0]
        let g = try ScreenGrabber(connection: c, region: m, poolSize: 2, drawCursor: false, allowShm: false)
        XCTAssertFalse(g.usesShm)
        XCTAssertFalse(g.warnings.isEmpty)
        try c.fillRootRectangle(m.rect, color: 0x445566)
        let box = PixelRect(x: 1900, y: 1070, width: 20, height: 10)
        try c.fillRootRectangle(box, color: 0xABCDEF)
        XCTAssertEqual(try g.grab(into: 1).bounds.area, 1920 * 1080)
        let v = g.pixels(slot: 1)
        XCTAssertTrue(allPixels(v, in: box, are: 0xABCDEF))
        XCTAssertEqual(rgb(v, 1899, 1075), 0x445566)
        XCTAssertTrue(try settle(g, slot: 0))
        try c.fillRootRectangle(PixelRect(x: 5, y: 5, width: 10, height: 10), color: 0x000001)
        XCTAssertTrue(try g.pollChanges())
        XCTAssertTrue(covers(try g.grab(into: 0), PixelRect(x: 5, y: 5, width: 10, height: 10)))
    }

    func testRegionOutsideTheScreenIsRejected() throws {
        let c = try X11Connection(displayName: display())
        let beyond = MonitorInfo(index: 2, name: "gone", x: 1920, y: 0, width: 1280, height: 1024, isPrimary: false)
        XCTAssertThrowsError(try ScreenGrabber(connection: c, region: beyond, poolSize: 1)) { error in
            XCTAssertEqual((error as? CaptureError)?.code, .displayUnavailable)
        }
        let m = try c.monitors()[0]
        XCTAssertThrowsError(try ScreenGrabber(connection: c, region: m, poolSize: 0)) { error in
            XCTAssertEqual((error as? CaptureError)?.code, .invalidRequest)
        }
    }
}
