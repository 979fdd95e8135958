public import CaptureCore
public import CaptureUplink
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Reads what `SpoolWriter` writes (docs/spool-format.md): a session directory's channel
/// directories and their complete chunks. The layout's only reader: the uplink
/// (`UplinkSpool`), `capture-agent upload` and the replay tools (`RecordedSpool`) all list
/// chunks through it, so they agree on what is there.
///
/// A chunk is complete when its metadata (`chunk-NNNNNN.json`) is: the writer publishes
/// the media first and the metadata last, each atomically, and the uplink deletes the
/// metadata first. Hidden files (a write cut short) and metadata that does not decode or
/// names another channel are not chunks.
public struct SpoolReader: Sendable {
    public let sessionDirectory: String

    public init(sessionDirectory: String) {
        self.sessionDirectory = sessionDirectory
    }

    /// One channel directory and its complete chunks, in seq order.
    public struct Channel: Sendable, Equatable {
        public var channelId: String
        public var directory: String
        public var chunks: [ChunkMetadata]
    }

    /// The directory of a channel id (`display:1` -> `display-1`).
    public func channelDirectory(_ channelId: String) -> String {
        let name = (try? ChannelID(parsing: channelId))?.directoryName ?? channelId
        return sessionDirectory + "/" + name
    }

    public func mediaPath(_ chunk: ChunkMetadata) -> String {
        channelDirectory(chunk.channelId) + "/" + ChunkMetadata.mediaFileName(seq: chunk.seq)
    }

    /// The complete chunks of `channelId`, in seq order (none when its directory is missing).
    public func chunks(of channelId: String) -> [ChunkMetadata] {
        Self.chunks(in: channelDirectory(channelId), channelId: channelId)
    }

    /// Every channel directory with at least one complete chunk, video first, then by id;
    /// its id is the one its chunks' metadata names.
    public func channels() throws(CaptureError) -> [Channel] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: sessionDirectory) else {
            throw CaptureError(.ioError, "cannot read \(sessionDirectory)")
        }
        var out: [Channel] = []
        for name in names.sorted() where !name.hasPrefix(".") {
            let directory = sessionDirectory + "/" + name
            var st = stat()
            guard stat(directory, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { continue }
            let chunks = Self.chunks(in: directory, channelId: nil)
            guard let first = chunks.first else { continue }
            out.append(Channel(channelId: first.channelId, directory: directory,
                               chunks: chunks.filter { $0.channelId == first.channelId }))
        }
        return out.sorted {
            ($0.chunks[0].mediaType == .video ? 0 : 1, $0.channelId) < ($1.chunks[0].mediaType == .video ? 0 : 1, $1.channelId)
        }
    }

    /// The channels as an uplink hello names them, from their chunks: codec and container
    /// from the metadata, the chunk length the longest chunk's (the last may be shorter),
    /// the first video channel primary.
    public func uplinkChannels() throws(CaptureError) -> [UplinkChannel] {
        var sawVideo = false
        return try channels().map { channel in
            let first = channel.chunks[0]
            let primary = first.mediaType == .video && !sawVideo
            if first.mediaType == .video { sawVideo = true }
            return UplinkChannel(channelId: channel.channelId, mediaType: first.mediaType, codec: first.codec,
                                 container: first.container, isPrimary: primary,
                                 chunkDurationNs: max(channel.chunks.map(\.durationNs).max() ?? 1, 1))
        }
    }

    private static func chunks(in directory: String, channelId: String?) -> [ChunkMetadata] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var out: [ChunkMetadata] = []
        for name in names where name.hasPrefix("chunk-") && name.hasSuffix(".json") {
            guard let data = FileManager.default.contents(atPath: directory + "/" + name),
                  let meta = try? JSONCoding.decoder.decode(ChunkMetadata.self, from: data),
                  channelId.map({ meta.channelId == $0 }) ?? true else { continue }
            out.append(meta)
        }
        return out.sorted { $0.seq < $1.seq }
    }
}
