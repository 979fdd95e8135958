@testable import CaptureEndpoint
import CaptureTestSupport
import Foundation
import Hummingbird
import XCTest

/// docs/openapi.yaml and the server agree: the routes are exactly the listed
/// operations, and schemathesis finds no 5xx and no response outside the schemas.
final class OpenAPIAgreementTests: XCTestCase {
    static var spec: String { Repo.root + "/docs/openapi.yaml" }

    func testTheRoutesAreExactlyTheOperationsOfTheSpec() async throws {
        try SDKCompatibilityTests.requirePython()
        let run = try await runProcessOffPool(SDKCompatibilityTests.python,
                                              [SDKCompatibilityTests.script("openapi_operations.py"), Self.spec])
        XCTAssertEqual(run.status, 0, run.stderr)
        let documented = Set(try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String]))

        let harness = EndpointHarness()
        defer { harness.remove() }
        let (_, components) = try harness.build()
        let router = buildRouter(harness.configuration, components: components)
        try router.validate()
        func normalized(_ route: Router<EndpointRequestContext>.RouteDescription) -> String {
            var path = "\(route.path)"
            if !path.hasPrefix("/") { path = "/" + path }
            path = path.replacingOccurrences(of: #"\{[^}]*\}"#, with: "{}", options: .regularExpression)
            path = path.replacingOccurrences(of: #":[A-Za-z_]+"#, with: "{}", options: .regularExpression)
            return "\(route.method.rawValue) \(path)"
        }
        let served = Set(router.routes.map(normalized))
        XCTAssertGreaterThan(served.count, 8, "\(served)")
        XCTAssertEqual(served.subtracting(documented), [], "served but not in docs/openapi.yaml")
        XCTAssertEqual(documented.subtracting(served), [], "in docs/openapi.yaml but not served")
        // The WebSocket routes are documented as the GETs of their paths.
        let webSockets = Set(buildWebSocketRouter(harness.configuration, components: components).routes.map(normalized))
        XCTAssertEqual(webSockets, ["GET /capture/uplink", "GET /collection/{}/events"])
        XCTAssertTrue(webSockets.isSubset(of: documented))
    }

    func testSchemathesisFindsNoServerErrorAndNoSchemaViolation() async throws {
        try SDKCompatibilityTests.requirePython()
        let schemathesis = Repo.root + "/.venv-test/bin/schemathesis"
        let harness = EndpointHarness()
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            var environment = ProcessInfo.processInfo.environment
            environment["SCHEMATHESIS_HOOKS"] = nil
            let run = try await runProcessOffPool(schemathesis, [
                "run", Self.spec, "--base-url", "http://127.0.0.1:\(port)",
                "-H", "x-access-token: \(EndpointHarness.keyA)",
                // Every check but negative_data_rejection, which reads an optional body sent
                // without a content type as "negative data accepted" (POST /capture/session/token
                // with no body is valid: expires_in has a default).
                "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                    + "response_headers_conformance,response_schema_conformance,ignored_auth",
                "--hypothesis-max-examples", "60", "--hypothesis-seed", "20261201",
                "--hypothesis-derandomize", "--no-color", "--show-trace", "--data-generation-method", "all",
            ], environment: environment, timeout: .seconds(600))
            let tail = run.stdout.split(separator: "\n").suffix(40).joined(separator: "\n")
            XCTAssertEqual(run.status, 0, "schemathesis found problems:\n\(tail)\n\(run.stderr.suffix(2000))")
            XCTAssertTrue(run.stdout.contains("passed"), tail)
            print("schemathesis: " + (run.stdout.split(separator: "\n").last { $0.contains("passed") || $0.contains("failed") } ?? ""))
        }
    }
}
