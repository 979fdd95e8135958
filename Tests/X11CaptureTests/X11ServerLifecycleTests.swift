import CaptureCore
import Foundation
import XCTest
import X11Capture
import X11TestSupport

/// Connection failures and server death, against Xvfb servers of our own.
final class X11ServerLifecycleTests: XCTestCase {
    func testUnknownDisplayThrowsDisplayUnavailable() {
        // -displayfd picks free numbers from 0 up; nothing listens this high.
        for name in [":4093", "no-such-host-name.invalid:0", "garbage"] {
            XCTAssertThrowsError(try X11Connection(displayName: name), name) { error in
                let e = error as? CaptureError
                XCTAssertEqual(e?.code, .displayUnavailable, "\(error)")
                XCTAssertTrue(e?.message.contains(name) ?? false, "message should name the display: \(error)")
            }
        }
    }

    func testMissingDISPLAYThrowsDisplayUnavailable() {
        let saved = getenv("DISPLAY").map { String(cString: $0) }
        unsetenv("DISPLAY")
        defer { if let saved { setenv("DISPLAY", saved, 1) } }
        XCTAssertThrowsError(try X11Connection()) { error in
            XCTAssertEqual((error as? CaptureError)?.code, .displayUnavailable)
            XCTAssertTrue((error as? CaptureError)?.message.contains("DISPLAY") ?? false)
        }
    }

    func testNilNameUsesDISPLAY() throws {
        let server = try PrivateXvfb(width: 640, height: 480)
        let saved = getenv("DISPLAY").map { String(cString: $0) }
        setenv("DISPLAY", server.display, 1)
        defer { if let saved { setenv("DISPLAY", saved, 1) } else { unsetenv("DISPLAY") } }
        let connection = try X11Connection()
        XCTAssertEqual(connection.displayName, server.display)
        XCTAssertEqual(connection.rootWidth, 640)
        XCTAssertEqual(connection.rootHeight, 480)
    }

    func testDepth16IsRejectedWithAClearError() throws {
        let server = try PrivateXvfb(width: 640, height: 480, depth: 16)
        let connection = try X11Connection(displayName: server.display)
        let monitor = try XCTUnwrap(connection.monitors().first)
        XCTAssertThrowsError(try ScreenGrabber(connection: connection, region: monitor, poolSize: 2)) { error in
            let e = error as? CaptureError
            XCTAssertEqual(e?.code, .displayUnavailable)
            XCTAssertTrue(e?.message.contains("depth 24") ?? false, "\(error)")
        }
        XCTAssertTrue(connection.isAlive)
    }

    /// The server dies (SIGKILL) under a connection with a live grabber: every call throws
    /// DISPLAY_UNAVAILABLE, nothing crashes, and the objects tear down cleanly.
    func testKilledServerThrowsDisplayUnavailableAndTheProcessSurvives() throws {
        let server = try PrivateXvfb(width: 800, height: 600)
        let connection = try X11Connection(displayName: server.display)
        let monitor = try XCTUnwrap(connection.monitors().first)
        var grabber: ScreenGrabber? = try ScreenGrabber(connection: connection, region: monitor, poolSize: 3)
        XCTAssertTrue(grabber!.usesShm)
        XCTAssertEqual(try grabber!.grab(into: 0).bounds, PixelRect(x: 0, y: 0, width: 800, height: 600))
        XCTAssertTrue(connection.isAlive)

        server.kill()

        // The first call to touch the socket notices; all later ones throw without Xlib.
        for _ in 0..<3 {
            XCTAssertThrowsError(try grabber!.pollChanges()) { error in
                XCTAssertEqual((error as? CaptureError)?.code, .displayUnavailable)
            }
            XCTAssertThrowsError(try grabber!.grab(into: 1)) { error in
                XCTAssertEqual((error as? CaptureError)?.code, .displayUnavailable)
                XCTAssertTrue((error as? CaptureError)?.message.contains("went away") ?? false, "\(error)")
            }
        }
        XCTAssertFalse(connection.isAlive)
        XCTAssertThrowsError(try connection.monitors()) { error in
            XCTAssertEqual((error as? CaptureError)?.code, .displayUnavailable)
        }
        XCTAssertThrowsError(try ScreenGrabber(connection: connection, region: monitor, poolSize: 1)) { error in
            XCTAssertEqual((error as? CaptureError)?.code, .displayUnavailable)
        }
        grabber = nil   // detaches nothing on the dead wire, frees the pool

        // A fresh server and connection work normally afterwards.
        let other = try PrivateXvfb(width: 320, height: 200)
        let second = try X11Connection(displayName: other.display)
        let m = try XCTUnwrap(second.monitors().first)
        let g = try ScreenGrabber(connection: second, region: m, poolSize: 1)
        XCTAssertEqual(try g.grab(into: 0).bounds.area, 320 * 200)
    }

    /// The server dies while the connection sits idle between polls.
    func testKilledServerNoticedByPollOnly() throws {
        let server = try PrivateXvfb(width: 320, height: 240)
        let connection = try X11Connection(displayName: server.display)
        let grabber = try ScreenGrabber(connection: connection, region: try connection.monitors()[0], poolSize: 1)
        _ = try grabber.grab(into: 0)
        server.kill()
        var thrown: CaptureError?
        for _ in 0..<50 where thrown == nil {
            do { _ = try grabber.pollChanges() } catch { thrown = error }
            usleep(10_000)
        }
        XCTAssertEqual(thrown?.code, .displayUnavailable)
        XCTAssertFalse(connection.isAlive)
    }

    /// The first call after the server died writes before it reads (a request, then XSync):
    /// no SIGPIPE, no exit, just DISPLAY_UNAVAILABLE.
    func testKilledServerNoticedOnAWriteFirstCall() throws {
        let server = try PrivateXvfb(width: 320, height: 240)
        let connection = try X11Connection(displayName: server.display)
        server.kill()
        usleep(50_000)
        XCTAssertThrowsError(try connection.fillRootRectangle(PixelRect(x: 0, y: 0, width: 10, height: 10), color: 0)) { error in
            XCTAssertEqual((error as? CaptureError)?.code, .displayUnavailable)
        }
        XCTAssertFalse(connection.isAlive)
        XCTAssertThrowsError(try connection.warpPointer(x: 1, y: 1))
    }

    /// The screen shrinks under a grabber (xrandr --fb): the grab fails with a protocol error
    /// (BadMatch), which must become a CaptureError, not an exit; the connection stays usable.
    func testScreenShrinkingUnderTheGrabberThrowsAndTheConnectionSurvives() throws {
        let server = try PrivateXvfb(width: 1920, height: 1080)
        let connection = try X11Connection(displayName: server.display)
        let monitor = try XCTUnwrap(connection.monitors().first)
        let grabber = try ScreenGrabber(connection: connection, region: monitor, poolSize: 2)
        _ = try grabber.grab(into: 0)

        let xrandr = Process()
        xrandr.executableURL = URL(fileURLWithPath: "/usr/bin/xrandr")
        xrandr.arguments = ["-display", server.display, "--fb", "1280x720"]
        xrandr.standardError = FileHandle.nullDevice
        try xrandr.run()
        xrandr.waitUntilExit()
        try connection.sync()

        XCTAssertThrowsError(try grabber.grab(into: 1)) { error in
            let e = error as? CaptureError
            XCTAssertEqual(e?.code, .displayUnavailable)
            XCTAssertTrue(e?.message.contains("BadMatch") ?? false, "\(error)")
            XCTAssertTrue(e?.message.contains("list the monitors again") ?? false, "\(error)")
        }
        XCTAssertTrue(connection.isAlive)
        // The layout is re-read: the root is smaller now, and a new grabber works.
        let monitors = try connection.monitors()
        XCTAssertEqual(connection.rootWidth, 1280)
        XCTAssertEqual(connection.rootHeight, 720)
        let m = try XCTUnwrap(monitors.first)
        XCTAssertLessThanOrEqual(m.x + m.width, 1280)
        XCTAssertThrowsError(try ScreenGrabber(connection: connection, region: monitor, poolSize: 1))
        let smaller = try ScreenGrabber(connection: connection, region: m, poolSize: 1)
        XCTAssertEqual(try smaller.grab(into: 0).bounds.area, m.width * m.height)
    }
}
