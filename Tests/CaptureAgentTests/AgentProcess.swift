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

/// One channel's chunks in a recording directory.
struct RecordedChannel {
    struct Chunk {
        var media: String
        var metadata: [String: Any]
        var seq: Int { metadata["seq"] as? Int ?? -1 }
        var startPtsNs: Int64 { (metadata["startPtsNs"] as? NSNumber)?.int64Value ?? -1 }
        var durationNs: Int64 { (metadata["durationNs"] as? NSNumber)?.int64Value ?? -1 }
        var frames: Int { metadata["frames"] as? Int ?? -1 }
        var isFinal: Bool { metadata["isFinal"] as? Bool ?? false }
    }

    var directory: String
    var chunks: [Chunk]

    init(_ directory: String) throws {
        self.directory = directory
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".json") }.sorted()
        chunks = try names.map { name in
            let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name))
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
            return Chunk(media: directory + "/" + (object["file"] as? String ?? ""), metadata: object)
        }
    }

    /// Concatenates the chunks in order into one file (a channel's chunks play as one stream).
    func concatenated(into path: String) throws -> String {
        FileManager.default.createFile(atPath: path, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? out.close() }
        for chunk in chunks {
            out.write(try Data(contentsOf: URL(fileURLWithPath: chunk.media)))
        }
        return path
    }
}
