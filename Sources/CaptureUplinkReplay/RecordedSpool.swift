import CaptureCore
import CaptureSpool
public import CaptureUplink
public import Foundation

/// A recorded session directory (`capture-agent record --out DIR`, or a daemon
/// spool), read the way an uplink client reads it: every complete chunk
/// (its `.json` exists) with its metadata and bytes.
public struct RecordedSpool: Sendable {
    public struct Chunk: Sendable {
        public var metadata: ChunkMetadata
        public var bytes: [UInt8]
        public var header: UplinkChunkHeader { UplinkChunkHeader(metadata) }
    }

    public var channels: [UplinkChannel]
    /// Per channel id, its chunks in seq order.
    public var chunks: [String: [Chunk]]

    public init(directory: String) throws {
        let reader = SpoolReader(sessionDirectory: directory)
        let channels = try reader.uplinkChannels()
        guard !channels.isEmpty else { throw CaptureError(.invalidRequest, "\(directory) holds no chunks") }
        var chunks: [String: [Chunk]] = [:]
        for channel in channels {
            chunks[channel.channelId] = try reader.chunks(of: channel.channelId).map { metadata in
                Chunk(metadata: metadata, bytes: Array(try Data(contentsOf: URL(fileURLWithPath: reader.mediaPath(metadata)))))
            }
        }
        self.channels = channels
        self.chunks = chunks
    }

    public var chunkCount: Int { chunks.values.reduce(0) { $0 + $1.count } }

    /// Every chunk in the order it was captured (by its end on the timeline), channels interleaved.
    public var captureOrder: [Chunk] {
        chunks.values.flatMap { $0 }.sorted {
            ($0.metadata.startPtsNs + $0.metadata.durationNs, $0.metadata.channelId)
                < ($1.metadata.startPtsNs + $1.metadata.durationNs, $1.metadata.channelId)
        }
    }
}
