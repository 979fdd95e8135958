import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// Finds executables built next to the test bundle (capture-agent, capturectl).
typealias BuiltBinary = BuiltProduct

/// Private runtime, state and config directories for one daemon under test
/// (so tests never touch the user's), and the environment that points it there.
struct DaemonSandbox {
    let root: String
    var runtimeDir: String { root + "/run" }
    var stateDir: String { root + "/state" }
    var configDir: String { root + "/config" }

    /// The directories of an earlier daemon (a restart of the same agent).
    init(existing root: String) {
        self.root = root
    }

    init(kind: String, name: String) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent(
            "capture-\(kind)-\(getpid())-\(name)-\(UInt32.random(in: 0...UInt32.max))").path
        for dir in [runtimeDir, stateDir, configDir] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        }
    }

    /// This process's environment with the rig's on top (or no display and no
    /// audio server), the private XDG directories, debug logs, and nothing
    /// systemd would pass.
    func environment(rig: TestRig?) -> [String: String] {
        var e = ProcessInfo.processInfo.environment
        if let rig { for (k, v) in rig.environment { e[k] = v } } else {
            e["DISPLAY"] = nil
            e["PULSE_SERVER"] = nil
        }
        // The daemon's own runtime dir; the rig's pulse server stays reachable through PULSE_SERVER.
        e["XDG_RUNTIME_DIR"] = runtimeDir
        e["XDG_STATE_HOME"] = stateDir
        e["XDG_CONFIG_HOME"] = configDir
        e["CAPTURE_AGENT_SOCKET"] = nil
        e["CAPTURE_AGENT_LOG_LEVEL"] = "debug"
        for k in ["NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "WATCHDOG_USEC"] { e[k] = nil }
        return e
    }
}

/// A real `capture-agent` daemon process with private runtime, state and
/// config directories (so tests never touch the user's), talking on its own
/// socket. Its stderr (the log) is kept in `logPath`.
final class DaemonProcess {
    let root: String
    let runtimeDir: String
    let stateDir: String
    let configDir: String
    let socketPath: String
    let logPath: String
    let process = Process()
    let environment: [String: String]

    /// - Parameters:
    ///   - rig: the X/Pulse rig to capture (nil: no display, no audio server).
    ///   - arguments: extra daemon arguments.
    ///   - env: extra environment (nil values remove a variable).
    init(rig: TestRig?, name: String, arguments: [String] = [], env: [String: String?] = [:],
         launcher: [String] = [], waitForSocket: Bool = true, reusing earlier: DaemonProcess? = nil) throws {
        let sandbox = try earlier.map { DaemonSandbox(existing: $0.root) } ?? DaemonSandbox(kind: "daemon", name: name)
        root = sandbox.root
        runtimeDir = sandbox.runtimeDir
        stateDir = sandbox.stateDir
        configDir = sandbox.configDir
        socketPath = runtimeDir + "/capture-agent/control.sock"
        logPath = root + "/daemon-\(name).log"
        var e = sandbox.environment(rig: rig)
        for (k, v) in env { e[k] = v }
        environment = e

        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        if launcher.isEmpty {
            process.executableURL = URL(fileURLWithPath: BuiltBinary.path("capture-agent"))
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: launcher[0])
            process.arguments = Array(launcher.dropFirst()) + [BuiltBinary.path("capture-agent")] + arguments
        }
        process.environment = e
        process.standardOutput = FileHandle.nullDevice
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        if waitForSocket { try self.waitForSocket() }
    }

    func waitForSocket(timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let client = try? ControlClient(socketPath: socketPath), (try? client.call("ping", timeout: .seconds(5))) != nil {
                return
            }
            guard process.isRunning else {
                throw NSError(domain: "DaemonProcess", code: 2, userInfo: [NSLocalizedDescriptionKey:
                    "the daemon exited with status \(process.terminationStatus); log:\n\(log)"])
            }
            usleep(50_000)
        }
        throw NSError(domain: "DaemonProcess", code: 1, userInfo: [NSLocalizedDescriptionKey:
            "the daemon did not answer on \(socketPath) within \(timeout) s; log:\n\(log)"])
    }

    func client() throws -> ControlClient { try ControlClient(socketPath: socketPath) }

    /// The daemon's log so far.
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Where the session's chunks go.
    func sessionDirectory(_ id: String) -> String { stateDir + "/capture-agent/spool/" + id }

    /// Sends SIGTERM and waits; returns the exit status.
    @discardableResult
    func terminate(timeout: Double = 30) -> Int32 {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        return waitForExit(timeout: timeout)
    }

    @discardableResult
    func waitForExit(timeout: Double = 30) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return -9
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: root)
    }
}

extension ControlClient {
    /// `call` that fails the test with the daemon's error message.
    func ok(_ command: String, _ params: [String: JSONValue] = [:], timeout: Duration = .seconds(60),
            file: StaticString = #filePath, line: UInt = #line) throws -> JSONValue {
        do {
            return try call(command, params: params, timeout: timeout)
        } catch {
            XCTFail("\(command) failed: \(error)", file: file, line: line)
            throw error
        }
    }

    /// `ok` with the result read as its struct (Results.swift), never by string key.
    func ok<Result: Decodable>(_ command: ControlCommand, _ params: [String: JSONValue] = [:], as type: Result.Type,
                               timeout: Duration = .seconds(60), file: StaticString = #filePath, line: UInt = #line) throws -> Result {
        do {
            return try call(command, params: params, as: type, timeout: timeout)
        } catch {
            XCTFail("\(command.rawValue) failed: \(error)", file: file, line: line)
            throw error
        }
    }

    /// `call` that must fail; returns the error.
    func failure(_ command: String, _ params: [String: JSONValue] = [:], timeout: Duration = .seconds(60),
                 file: StaticString = #filePath, line: UInt = #line) -> CaptureError? {
        do {
            let result = try call(command, params: params, timeout: timeout)
            XCTFail("\(command) succeeded but should have failed: \(result)", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    func event(_ name: ControlEventName, within seconds: Double = 10) throws -> ControlEvent? {
        try waitForEvent(name, timeoutNs: Int64(seconds * 1e9))
    }
}
