import CaptureTestSupport
import XCTest

/// The endpoint's dependency set (SwiftNIO, Hummingbird, GRDB, libcurl for its webhooks, and
/// the test clients) must never reach the daemon: its symbols are looked for in the built binaries.
final class DependencyBoundaryTests: XCTestCase {
    private let foreignModules = ["7NIOCore", "8NIOPosix", "11Hummingbird", "4GRDB", "14EndpointClient", "7WSCore", "webhook_http_post"]

    private func symbols(_ product: String) throws -> String {
        let path = BuiltProduct.path(product)
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: path), "\(product) is not built at \(path)")
        let nm = try runProcess("/usr/bin/nm", ["--defined-only", path], timeout: .seconds(60))
        XCTAssertEqual(nm.status, 0, nm.stderr)
        return nm.stdout
    }

    func testTheAgentAndCapturectlLinkNoEndpointDependency() throws {
        for product in ["capture-agent", "capturectl"] {
            let table = try symbols(product)
            XCTAssertGreaterThan(table.count, 10_000, "\(product) has a symbol table to look in")
            for module in foreignModules {
                let symbol = module.first!.isNumber ? "$s\(module)" : module
                XCTAssertFalse(table.contains(symbol), "\(product) links \(module)")
            }
        }
        // The check can fail: the endpoint itself has them.
        let endpoint = try symbols("capture-endpoint")
        XCTAssertTrue(endpoint.contains("$s7NIOCore") && endpoint.contains("$s11Hummingbird") && endpoint.contains("$s4GRDB")
                      && endpoint.contains("webhook_http_post"))
    }

    /// Wayland capture reads PipeWire and speaks D-Bus itself: no GStreamer, no GLib main loop
    /// (and no libdbus) among what the agent calls; libpipewire, sd-bus and libwayland-client
    /// are what it calls for that.
    func testTheAgentCallsPipeWireAndSDBusDirectly() throws {
        let path = BuiltProduct.path("capture-agent")
        let nm = try runProcess("/usr/bin/nm", ["--undefined-only", "--dynamic", path], timeout: .seconds(60))
        XCTAssertEqual(nm.status, 0, nm.stderr)
        // "U sd_bus_call@LIBSYSTEMD_221": the name without its version.
        let called = Set(nm.stdout.split(separator: "\n").compactMap { line in
            line.split(separator: " ").last.map { String($0.split(separator: "@").first ?? $0) }
        })
        for symbol in ["pw_stream_new", "pw_thread_loop_new", "sd_bus_open_user", "sd_bus_call", "wl_display_connect"] {
            XCTAssertTrue(called.contains(symbol), "the agent does not call \(symbol)")
        }
        let foreign = called.filter { $0.hasPrefix("gst_") || $0.hasPrefix("g_main_") || $0.hasPrefix("dbus_") }
        XCTAssertEqual(foreign.sorted(), [], "the agent calls GStreamer, a GLib main loop or libdbus")
    }

    func testTheEndpointCommandLine() throws {
        let endpoint = BuiltProduct.path("capture-endpoint")
        let version = try runProcess(endpoint, ["--version"], timeout: .seconds(20))
        XCTAssertEqual(version.status, 0)
        XCTAssertEqual(version.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "0.1.0")
        let help = try runProcess(endpoint, ["--help"], timeout: .seconds(20))
        XCTAssertEqual(help.status, 0)
        for option in ["--data-dir", "--host", "--port", "--api-key-file", "--webhook-secret-file", "--silence-timeout"] {
            XCTAssertTrue(help.stdout.contains(option), option)
        }
        let bad = try runProcess(endpoint, ["--port", "70000"], timeout: .seconds(20))
        XCTAssertEqual(bad.status, 64, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("--port"), bad.stderr)
    }
}
