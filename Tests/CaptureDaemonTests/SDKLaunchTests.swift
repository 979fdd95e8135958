import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// The VideoDB SDK starts its runtime with no arguments and pipes on stdin
/// and stdout; capture-agent then serves the protocol there (and no socket).
final class SDKLaunchTests: XCTestCase {
    func testNoArgumentsWithPipesServesStdio() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("sdk-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: BuiltBinary.path("capture-agent"))
        process.arguments = []
        var env = ProcessInfo.processInfo.environment
        env["XDG_RUNTIME_DIR"] = root
        env["CAPTURE_AGENT_SOCKET"] = nil
        env["LISTEN_FDS"] = nil
        process.environment = env
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        let client = ControlClient(readFD: output.fileHandleForReading.fileDescriptor,
                                   writeFD: input.fileHandleForWriting.fileDescriptor)
        let info = try client.call(.initialize, params: ["apiUrl": "https://api.videodb.io"], as: DaemonInfo.self, timeout: .seconds(20))
        XCTAssertEqual(info.pid, Int(process.processIdentifier))
        XCTAssertEqual(try client.call(.ping, as: DaemonInfo.self, timeout: .seconds(10)).pong, true)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/capture-agent/control.sock"),
                       "with pipes it should not listen on the socket")
        try input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        XCTAssertFalse(process.isRunning, "end of stdin did not end the daemon")
        XCTAssertEqual(process.terminationStatus, 0)
    }
}
