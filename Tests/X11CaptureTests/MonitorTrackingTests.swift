import CaptureCore
import X11Capture
import XCTest

/// Which monitor is "ours" after the layout changed: followed by RandR name.
final class MonitorTrackingTests: XCTestCase {
    let dummy0 = MonitorInfo(index: 1, name: "DUMMY0", x: 0, y: 0, width: 1920, height: 1080, isPrimary: true)
    let dummy1 = MonitorInfo(index: 2, name: "DUMMY1", x: 1920, y: 0, width: 1280, height: 1024, isPrimary: false)

    func testFollowsByNameThroughModeChangesMovesAndUnplugging() {
        XCTAssertEqual(MonitorTracking.follow(dummy1, in: [dummy0, dummy1]), .unchanged(dummy1))
        // DUMMY0 unplugged: DUMMY1 becomes monitor 1, same place.
        var renumbered = dummy1
        renumbered.index = 1
        XCTAssertEqual(MonitorTracking.follow(dummy1, in: [renumbered]), .unchanged(renumbered))
        var smaller = dummy0
        smaller.width = 1680; smaller.height = 1050
        XCTAssertEqual(MonitorTracking.follow(dummy0, in: [smaller, dummy1]), .changed(smaller))
        var moved = dummy1
        moved.x = 1680
        XCTAssertEqual(MonitorTracking.follow(dummy1, in: [smaller, moved]), .changed(moved))
        XCTAssertEqual(MonitorTracking.follow(dummy1, in: [dummy0]), .lost)
        XCTAssertEqual(MonitorTracking.follow(dummy1, in: []), .lost)
    }
}
