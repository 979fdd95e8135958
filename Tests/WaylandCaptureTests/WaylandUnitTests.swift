import CaptureCore
@testable import CapturePipeline
import Foundation
import ScreenCastPortal
import WaylandOutputs
import XCTest

/// The Wayland pieces that need no desktop: which backend a session gets, how monitors are
/// numbered, where restore tokens are kept.
final class WaylandUnitTests: XCTestCase {
    func testBackendFollowsTheSessionUnlessAskedFor() {
        func resolve(_ setting: DisplayBackendSetting, _ env: [String: String], display: String? = nil) -> DisplayBackendChoice {
            DisplayBackendChoice.resolve(setting, x11Display: display, environment: env)
        }
        let wayland = resolve(.auto, ["WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"])
        XCTAssertEqual(wayland.backend, .wayland)
        XCTAssertTrue(wayland.reason.contains("WAYLAND_DISPLAY=wayland-0"), wayland.reason)
        XCTAssertTrue(wayland.reason.contains("XWayland's DISPLAY :0 is not used"), wayland.reason)
        XCTAssertEqual(resolve(.auto, ["XDG_SESSION_TYPE": "wayland"]).backend, .wayland)
        XCTAssertEqual(resolve(.auto, ["XDG_SESSION_TYPE": "x11", "DISPLAY": ":1"]).backend, .x11)
        XCTAssertEqual(resolve(.auto, ["WAYLAND_DISPLAY": "", "DISPLAY": ":1"]).backend, .x11, "an empty WAYLAND_DISPLAY is unset")
        XCTAssertEqual(resolve(.auto, [:]).backend, .x11, "no session at all: X11 says what is missing, as before")
        // Explicit choices win over the session.
        XCTAssertEqual(resolve(.x11, ["WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"]).backend, .x11)
        XCTAssertEqual(resolve(.wayland, ["DISPLAY": ":0"]).backend, .wayland)
        // An explicit X display does not turn a Wayland session into an X11 one.
        XCTAssertEqual(resolve(.auto, ["WAYLAND_DISPLAY": "wayland-1"], display: ":5").backend, .wayland)
    }

    func testMonitorsAreNumberedPrimaryFirstThenByPlace() {
        let outputs = [
            WaylandOutput(name: "HDMI-A-1", x: 1920, y: 0, width: 1280, height: 720, pixelWidth: 1280, pixelHeight: 720),
            WaylandOutput(name: "DP-2", x: 0, y: 1080, width: 1920, height: 1080, pixelWidth: 3840, pixelHeight: 2160, scale: 2),
            WaylandOutput(name: "eDP-1", x: 0, y: 0, width: 1920, height: 1080, pixelWidth: 1920, pixelHeight: 1080),
        ]
        let byOrigin = WaylandOutput.numbered(outputs)
        XCTAssertEqual(byOrigin.map(\.name), ["eDP-1", "DP-2", "HDMI-A-1"])
        XCTAssertEqual(byOrigin.map(\.index), [1, 2, 3])
        XCTAssertEqual(byOrigin.map(\.isPrimary), [true, false, false])
        XCTAssertEqual(byOrigin[1].rect, PixelRect(x: 0, y: 1080, width: 1920, height: 1080), "logical, not pixels")
        let gnome = WaylandOutput.numbered(outputs, primary: "HDMI-A-1")
        XCTAssertEqual(gnome.map(\.name), ["HDMI-A-1", "eDP-1", "DP-2"])
        XCTAssertEqual(gnome.map(\.isPrimary), [true, false, false])
        XCTAssertEqual(WaylandOutput.numbered(outputs.reversed()).map(\.name), byOrigin.map(\.name), "order of announcement does not matter")
        XCTAssertEqual(WaylandOutput.numbered(outputs, primary: "gone").map(\.name), byOrigin.map(\.name))
    }

    func testRestoreTokensAreKeptPerMonitorInAPrivateFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tokens-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = RestoreTokenStore(directory: dir + "/capture-agent")
        XCTAssertNil(store.token(for: "Meta-0"))
        try store.save("token-a", for: "Meta-0")
        try store.save("token-b", for: "Meta-1")
        try store.save("token-c", for: "Meta-0")
        XCTAssertEqual(store.token(for: "Meta-0"), "token-c")
        XCTAssertEqual(store.token(for: "Meta-1"), "token-b")
        XCTAssertEqual(store.monitors, ["Meta-0", "Meta-1"])
        var info = stat()
        XCTAssertEqual(stat(store.path, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o600)
        XCTAssertEqual(stat(store.directory, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o700)
        try store.save(nil, for: "Meta-1")
        XCTAssertNil(store.token(for: "Meta-1"))
        // A damaged file costs a dialog, nothing more; the next save replaces it.
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: store.path))
        XCTAssertNil(store.token(for: "Meta-0"))
        try store.save("token-d", for: "Meta-0")
        XCTAssertEqual(store.token(for: "Meta-0"), "token-d")
        let names = try FileManager.default.contentsOfDirectory(atPath: store.directory)
        XCTAssertEqual(names, [RestoreTokenStore.fileName], "no temporary file left behind")
    }

    /// Which monitor the user shared: by place and size (GNOME says both), by size alone when
    /// the portal gives only that (KDE), and none when nothing fits.
    func testTheSharedStreamIsMatchedToAMonitor() {
        let left = MonitorInfo(index: 1, name: "DP-1", x: 0, y: 0, width: 1920, height: 1080, isPrimary: true)
        let right = MonitorInfo(index: 2, name: "HDMI-A-1", x: 1920, y: 0, width: 1280, height: 720, isPrimary: false)
        let twin = MonitorInfo(index: 3, name: "DP-2", x: 3200, y: 0, width: 1920, height: 1080, isPrimary: false)
        let two = [left, right]
        XCTAssertEqual(ScreenConsent.identify(PortalStream(nodeId: 1, position: (1920, 0), size: (1280, 720)), among: two, wanted: left), right)
        XCTAssertNil(ScreenConsent.identify(PortalStream(nodeId: 1, position: (5, 0), size: (1280, 720)), among: two, wanted: left))
        XCTAssertEqual(ScreenConsent.identify(PortalStream(nodeId: 1, size: (1280, 720)), among: two, wanted: left), right,
                       "size alone: the one monitor of that size")
        XCTAssertEqual(ScreenConsent.identify(PortalStream(nodeId: 1, size: (1920, 1080)), among: [left, right, twin], wanted: twin), twin,
                       "size alone, shared by two: the one asked for")
        XCTAssertNil(ScreenConsent.identify(PortalStream(nodeId: 1, size: (1920, 1080)), among: [left, right, twin], wanted: right),
                     "size alone, two others of that size: cannot tell")
        XCTAssertNil(ScreenConsent.identify(PortalStream(nodeId: 1), among: two, wanted: left), "the portal says nothing")
    }
}

