public import CaptureCore
import CaptureSystem
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The portal's restore tokens, one per monitor (by connector name), kept so that later
/// sessions, a restarted daemon and the next boot start without the consent dialog.
///
/// One file of its own, `$XDG_STATE_HOME/capture-agent/screencast-tokens.json` (mode 0600,
/// directory 0700), replaced atomically. Every portal Start spends the token it was given and
/// returns a new one, which replaces it here at once.
///
///     {"version":1,"monitors":{"Meta-0":{"token":"…","savedAt":"2026-12-06T03:05:22Z"}}}
public struct RestoreTokenStore: Sendable {
    public let directory: String
    public static let fileName = "screencast-tokens.json"
    public var path: String { directory + "/" + Self.fileName }

    /// Read-modify-write of the file is serialized within the process (two display channels
    /// may save at once); between processes the atomic rename keeps it whole, and a token
    /// lost to a race costs one dialog.
    private static let lock = Mutex(())

    struct File: Codable {
        var version = 1
        var monitors: [String: Entry] = [:]
        struct Entry: Codable {
            var token: String
            var savedAt: String
        }
    }

    public init(directory: String) {
        self.directory = directory
    }

    /// `$XDG_STATE_HOME/capture-agent` (or `~/.local/state/capture-agent`).
    public static func standard(environment: [String: String] = ProcessInfo.processInfo.environment) -> RestoreTokenStore {
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") {
            return RestoreTokenStore(directory: state + "/capture-agent")
        }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? HomeDirectory.fromPasswordDatabase()
        return RestoreTokenStore(directory: home + "/.local/state/capture-agent")
    }

    /// The token that restores the choice of `monitor`, if one was kept.
    public func token(for monitor: String) -> String? {
        Self.lock.withLock { _ in load().monitors[monitor]?.token }
    }

    /// Keeps `token` for `monitor` (nil forgets it).
    public func save(_ token: String?, for monitor: String) throws(CaptureError) {
        try Self.lock.withLock { _ throws(CaptureError) in
            var file = load()
            if let token, !token.isEmpty {
                file.monitors[monitor] = File.Entry(token: token, savedAt: WallClock.iso8601(nanoseconds: WallClock.now()))
            } else {
                file.monitors[monitor] = nil
            }
            try write(file)
        }
    }

    /// Monitors with a kept token.
    public var monitors: [String] { Self.lock.withLock { _ in load().monitors.keys.sorted() } }

    private func load() -> File {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return File() }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 256 * 1024)
        let n = bytes.withUnsafeMutableBytes { raw in (try? POSIX.readFully(fd, into: raw)) ?? 0 }
        // A damaged or foreign file is not fatal: it costs a dialog, and the next save replaces it.
        return (try? JSONDecoder().decode(File.self, from: Data(bytes[0..<n]))) ?? File()
    }

    private func write(_ file: File) throws(CaptureError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(file) else {
            throw CaptureError(.internalError, "cannot encode \(Self.fileName)")
        }
        let dir = try AtomicDirectory(creating: directory)
        try dir.publish(Self.fileName, string: String(decoding: data, as: UTF8.self))
        try dir.sync()
    }
}
