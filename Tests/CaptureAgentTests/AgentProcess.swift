import CaptureControl
import CaptureCore
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

/// A daemon on a private socket for the tests of this module (the daemon tests have their own,
/// richer harness).
final class DaemonClientHarness {
    let process = Process()
    let root: String
    let client: ControlClient

    init(rig: TestRig) throws {
        root = Agent.temporaryDirectory("daemon")
        for dir in ["run", "state", "config"] {
            try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        }
        process.executableURL = URL(fileURLWithPath: Agent.binary)
        process.arguments = ["--transport", "socket"]
        process.environment = Agent.environment(rig, [
            "XDG_RUNTIME_DIR": root + "/run", "XDG_STATE_HOME": root + "/state", "XDG_CONFIG_HOME": root + "/config",
            "CAPTURE_AGENT_SOCKET": nil, "NOTIFY_SOCKET": nil, "LISTEN_FDS": nil, "CAPTURE_AGENT_LOG_LEVEL": "debug",
        ])
        process.standardOutput = FileHandle.nullDevice
        FileManager.default.createFile(atPath: root + "/daemon.log", contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: root + "/daemon.log"))
        try process.run()
        let socket = root + "/run/capture-agent/control.sock"
        let deadline = Date().addingTimeInterval(20)
        var connected: ControlClient?
        while connected == nil && Date() < deadline {
            connected = try? ControlClient(socketPath: socket)
            if connected == nil { usleep(50_000) }
        }
        guard let connected else {
            process.terminate()
            throw CaptureError(.internalError, "the daemon did not open \(socket)")
        }
        client = connected
    }

    /// The daemon's log so far.
    var log: String { (try? String(contentsOfFile: root + "/daemon.log", encoding: .utf8)) ?? "" }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: root)
    }
}
