import Foundation

/// A bare Xvfb of our own, for the cases the shared rig cannot provide (a depth-16 screen)
/// or must not suffer (a server killed under a live connection). Started with
/// -displayfd, so the number never collides with another server; stopped by PID.
final class PrivateXvfb {
    let display: String
    private let process: Process

    init(width: Int, height: Int, depth: Int = 24) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/Xvfb")
        p.arguments = ["-displayfd", "1", "-screen", "0", "\(width)x\(height)x\(depth)", "-nolisten", "tcp", "-noreset"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        // Xvfb writes the display number and a newline to fd 1 once it accepts clients.
        var text = ""
        let deadline = Date().addingTimeInterval(10)
        while !text.contains("\n") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty {
                if !p.isRunning || Date() > deadline {
                    p.terminate()
                    throw NSError(domain: "PrivateXvfb", code: 1,
                                  userInfo: [NSLocalizedDescriptionKey: "Xvfb did not report a display number"])
                }
                continue
            }
            text += String(decoding: chunk, as: UTF8.self)
        }
        display = ":" + text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Kills the server (SIGKILL: it goes away without a goodbye, like a crash) and reaps it.
    func kill() {
        guard process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit { kill() }
}
