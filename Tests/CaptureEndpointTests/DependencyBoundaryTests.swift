import CaptureTestSupport
import XCTest

/// The endpoint's dependency set (SwiftNIO, Hummingbird, GRDB, AsyncHTTPClient)
/// must never reach the daemon: its symbols are looked for in the built binaries.
final class DependencyBoundaryTests: XCTestCase {
    private let foreignModules = ["7NIOCore", "8NIOPosix", "11Hummingbird", "4GRDB", "15AsyncHTTPClient", "7WSCore"]

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
                XCTAssertFalse(table.contains("$s\(module)"), "\(product) links \(module)")
            }
        }
        // The check can fail: the endpoint itself has them.
        let endpoint = try symbols("capture-endpoint")
        XCTAssertTrue(endpoint.contains("$s7NIOCore") && endpoint.contains("$s11Hummingbird") && endpoint.contains("$s4GRDB"))
    }
}
