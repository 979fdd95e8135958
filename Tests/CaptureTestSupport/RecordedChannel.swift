import Foundation

/// One channel's chunks in a recording directory.
public struct RecordedChannel {
    public struct Chunk {
        public var media: String
        public var metadata: [String: Any]
        public var seq: Int { metadata["seq"] as? Int ?? -1 }
        public var startPtsNs: Int64 { (metadata["startPtsNs"] as? NSNumber)?.int64Value ?? -1 }
        public var durationNs: Int64 { (metadata["durationNs"] as? NSNumber)?.int64Value ?? -1 }
        public var frames: Int { metadata["frames"] as? Int ?? -1 }
        public var isFinal: Bool { metadata["isFinal"] as? Bool ?? false }
    }

    public var directory: String
    public var chunks: [Chunk]

    public init(_ directory: String) throws {
        self.directory = directory
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".json") }.sorted()
        chunks = try names.map { name in
            let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name))
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
            return Chunk(media: directory + "/" + (object["file"] as? String ?? ""), metadata: object)
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
