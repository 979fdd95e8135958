public import CaptureCore
import CaptureSystem
import CaptureSpool
public import CaptureUplink
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// What the spool keeps about a session's upload, as `uplink.json` beside its
/// channel directories: enough for a restarted agent to finish the upload (the
/// token is not in it; see `UplinkTokenStore`).
public struct UplinkSessionRecord: Codable, Sendable, Equatable {
    public var version = 1
    public var sessionId: String
    /// The endpoint URL as configured (`http://…`, `ws://…`).
    public var endpoint: String
    /// The hello's channels: a resumed upload must name the same.
    public var channels: [UplinkChannel]
    /// The capture ended normally (every channel's final chunk is spooled).
    public var captureFinished = false

    public init(sessionId: String, endpoint: String, channels: [UplinkChannel]) {
        self.sessionId = sessionId
        self.endpoint = endpoint
        self.channels = channels
    }

    public static let fileName = "uplink.json"
}

/// A session's chunks in the spool, as the uplink reads and deletes them. A chunk
/// is there when its `.json` is (docs/spool-format.md).
public struct UplinkSpool: Sendable {
    public let sessionDirectory: String

    public init(sessionDirectory: String) {
        self.sessionDirectory = sessionDirectory
    }

    /// The layout's reader, beside its writer in CaptureSpool.
    var reader: SpoolReader { SpoolReader(sessionDirectory: sessionDirectory) }

    func channelDirectory(_ channelId: String) -> String { reader.channelDirectory(channelId) }

    func mediaPath(_ chunk: ChunkMetadata) -> String { reader.mediaPath(chunk) }

    /// Reads the chunk's media file into `buffer`; it must be exactly `chunk.bytes` long.
    func read(_ chunk: ChunkMetadata, into buffer: UnsafeMutableRawBufferPointer) throws(CaptureError) {
        let path = mediaPath(chunk)
        let fd: Int32
        do { fd = try POSIX.open(path, O_RDONLY) } catch { throw error.captureError("cannot open spooled chunk") }
        defer { close(fd) }
        let n: Int
        do { n = try POSIX.readFully(fd, into: buffer) } catch { throw error.captureError("cannot read \(path)") }
        var extra: UInt8 = 0
        let more = (try? POSIX.call("read") { Glibc.read(fd, &extra, 1) }) ?? 0
        guard n == chunk.bytes, more == 0 else {
            throw CaptureError(.ioError, "\(path) is not \(chunk.bytes) bytes long as its metadata says")
        }
    }

    /// Removes an acknowledged chunk: the metadata first, so a crash in between leaves
    /// a media file without metadata (garbage, swept with the session), never metadata
    /// naming a file that is gone.
    func delete(_ chunk: ChunkMetadata) {
        let dir = channelDirectory(chunk.channelId)
        unlink(dir + "/" + ChunkMetadata.metadataFileName(seq: chunk.seq))
        unlink(dir + "/" + ChunkMetadata.mediaFileName(seq: chunk.seq))
    }

    /// Every complete chunk in the spool, per channel in seq order.
    public func spooledChunks(channels: [UplinkChannel]) -> [ChunkMetadata] {
        let reader = self.reader
        return channels.flatMap { reader.chunks(of: $0.channelId) }
    }

    public func loadRecord() -> UplinkSessionRecord? {
        guard let data = FileManager.default.contents(atPath: sessionDirectory + "/" + UplinkSessionRecord.fileName) else {
            return nil
        }
        return try? JSONCoding.decoder.decode(UplinkSessionRecord.self, from: data)
    }

    public func saveRecord(_ record: UplinkSessionRecord) throws(CaptureError) {
        let dir = try AtomicDirectory(creating: sessionDirectory)
        try dir.publish(UplinkSessionRecord.fileName, string: JSONCoding.text(record))
        try dir.sync()
    }

    /// The upload is complete: the session's directory goes, with whatever is left in
    /// it (session.json, leftovers of a crash).
    public func removeSession() {
        try? FileManager.default.removeItem(atPath: sessionDirectory)
    }
}

/// Where an upload token waits for a restarted agent: `$XDG_RUNTIME_DIR/capture-agent/
/// tokens/<session>`, mode 0600 in a 0700 directory. XDG_RUNTIME_DIR is a tmpfs that
/// only this user can read and that is gone at logout, so the token never reaches a
/// persistent disk. Without XDG_RUNTIME_DIR the token stays in memory only.
public struct UplinkTokenStore: Sendable {
    public let directory: String?

    public init(runtimeDirectory: String? = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"]) {
        if let runtimeDirectory, runtimeDirectory.hasPrefix("/") {
            directory = runtimeDirectory + "/capture-agent/tokens"
        } else {
            directory = nil
        }
    }

    private func path(_ sessionId: String) -> String? {
        guard let directory, !sessionId.contains("/"), !sessionId.hasPrefix(".") else { return nil }
        return directory + "/" + sessionId
    }

    /// Keeps `token` for the session (replacing an older one).
    public func save(_ token: String, sessionId: String) {
        guard let directory, let path = path(sessionId) else { return }
        guard (try? makeDirectories(directory)) != nil else { return }
        let temporary = path + ".tmp"
        let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return }
        let ok = Array(token.utf8).withUnsafeBytes { raw in
            (try? POSIX.writeAll(fd, raw)) != nil
        }
        close(fd)
        if ok, rename(temporary, path) == 0 { return }
        unlink(temporary)
    }

    public func load(sessionId: String) -> String? {
        guard let path = path(sessionId), let data = FileManager.default.contents(atPath: path),
              let token = String(data: data, encoding: .utf8), !token.isEmpty else { return nil }
        return token
    }

    public func remove(sessionId: String) {
        if let path = path(sessionId) { unlink(path) }
    }
}

extension UplinkChannel {
    /// The hello's channels for a started recording: h264 video, AAC audio (48 kHz
    /// stereo), the primary video channel marked (the first video one unless `primary`).
    public static func channels(of recorded: [ChannelInfo], chunkDurationNs: Int64, frameRate: Int,
                                primary: String? = nil) -> [UplinkChannel] {
        let firstVideo = recorded.first { $0.type == .video }?.id
        return recorded.map { c in
            let video = c.type == .video
            return UplinkChannel(channelId: c.id, mediaType: c.type, codec: video ? "h264" : "aac", name: c.name,
                                 isPrimary: video ? c.id == (primary ?? firstVideo) : nil, chunkDurationNs: chunkDurationNs,
                                 frameRate: video ? frameRate : nil, sampleRate: video ? nil : 48_000,
                                 audioChannels: video ? nil : 2)
        }
    }
}
