import CaptureTestSupport
import Foundation
import XCTest

/// Runs the real `capture-agent` binary built next to the test bundle.
enum Agent {
    static var binary: String { BuiltProduct.path("capture-agent") }

    /// The rig's environment on top of this process's, with overrides (nil removes a variable).
    static func environment(_ rig: TestRig?, _ overrides: [String: String?] = [:]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        if let rig { for (k, v) in rig.environment { env[k] = v } }
        for (k, v) in overrides { env[k] = v }
        return env
    }

    static func run(_ args: [String], env: [String: String], timeout: Duration = .seconds(120)) throws
        -> (status: Int32, stdout: String, stderr: String)
    {
        try runProcess(binary, args, environment: env, timeout: timeout)
    }

    /// Starts the agent in the background (output discarded) for tests that signal or kill it.
    static func start(_ args: [String], env: [String: String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = args
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    static func temporaryDirectory(_ name: String) -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("capture-agent-tests-\(getpid())-\(name)-\(UInt32.random(in: 0...UInt32.max))").path
        try? FileManager.default.removeItem(atPath: path)
        return path
    }
}
