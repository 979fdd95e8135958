import CaptureCore
import CaptureUplink
import Foundation

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
        var channels: [UplinkChannel] = []
        var chunks: [String: [Chunk]] = [:]
        let fm = FileManager.default
        for entry in try fm.contentsOfDirectory(atPath: directory).sorted() {
            let channelDirectory = directory + "/" + entry
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: channelDirectory, isDirectory: &isDirectory), isDirectory.boolValue else { continue }
            let metadataFiles = try fm.contentsOfDirectory(atPath: channelDirectory)
                .filter { $0.hasPrefix("chunk-") && $0.hasSuffix(".json") }.sorted()
            var list: [Chunk] = []
            for file in metadataFiles {
                let data = try Data(contentsOf: URL(fileURLWithPath: channelDirectory + "/" + file))
                let metadata = try JSONDecoder().decode(ChunkMetadata.self, from: data)
                let bytes = try Data(contentsOf: URL(fileURLWithPath: channelDirectory + "/" + metadata.file))
                list.append(Chunk(metadata: metadata, bytes: Array(bytes)))
            }
            guard let first = list.first?.metadata else { continue }
            list.sort { $0.metadata.seq < $1.metadata.seq }
            chunks[first.channelId] = list
            channels.append(UplinkChannel(
                channelId: first.channelId, mediaType: first.mediaType, codec: first.codec, container: first.container,
                isPrimary: first.mediaType == .video && !channels.contains { $0.mediaType == .video },
                chunkDurationNs: max(list.map(\.metadata.durationNs).max() ?? 1_000_000_000, 1)))
        }
        guard !channels.isEmpty else { throw CaptureError(.invalidRequest, "\(directory) holds no chunks") }
        // Video first, then audio, as the agent lists them.
        self.channels = channels.sorted { ($0.mediaType == .video ? 0 : 1, $0.channelId) < ($1.mediaType == .video ? 0 : 1, $1.channelId) }
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
