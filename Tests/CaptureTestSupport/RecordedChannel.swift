public import CaptureUplink
import CaptureCore
import Foundation

/// One channel's chunks in a recording directory.
public struct RecordedChannel {
    public struct Chunk {
        public var media: String
        /// The chunk's `chunk-NNNNNN.json`, read as the spool writes it.
        public var metadata: ChunkMetadata
        public var seq: Int { metadata.seq }
        public var startPtsNs: Int64 { metadata.startPtsNs }
        public var durationNs: Int64 { metadata.durationNs }
        public var frames: Int { metadata.frames }
        public var isFinal: Bool { metadata.isFinal }
        public var bytes: Int { metadata.bytes }
        public var sha256: String { metadata.sha256 }
        public var channelId: String { metadata.channelId }
        public var captureTime: String { metadata.captureTime }
        public var captureTimeUnixNs: Int64 { metadata.captureTimeUnixNs }
    }

    public var directory: String
    public var chunks: [Chunk]

    public init(_ directory: String) throws {
        self.directory = directory
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".json") }.sorted()
        chunks = try names.map { name in
            let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name))
            let metadata = try JSONCoding.decoder.decode(ChunkMetadata.self, from: data)
            return Chunk(media: directory + "/" + metadata.file, metadata: metadata)
        }
    }

    /// Concatenates the chunks in order into one file (a channel's chunks play as one stream).
    public func concatenated(into path: String) throws -> String {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? out.close() }
        for chunk in chunks {
            out.write(try Data(contentsOf: URL(fileURLWithPath: chunk.media)))
        }
        return path
    }
}
