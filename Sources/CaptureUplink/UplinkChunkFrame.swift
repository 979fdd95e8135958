import CaptureCore
#if canImport(FoundationEssentials)
import struct FoundationEssentials.Data
#else
import struct Foundation.Data
#endif

/// What a chunk frame says about the chunk it carries.
public struct UplinkChunkHeader: Codable, Sendable, Equatable {
    public var channelId: String
    /// 0, 1, 2, ... per channel, without gaps.
    public var seq: Int
    /// Start on the session timeline (0 = session start), nanoseconds.
    public var startPtsNs: Int64
    public var durationNs: Int64
    /// Video frames or AAC frames in the chunk.
    public var frames: Int
    /// The payload's length: exactly the rest of the frame.
    public var bytes: Int
    /// Lowercase hex SHA-256 of the payload.
    public var sha256: String
    /// Wall-clock capture time of the chunk's first sample, ns since the Unix epoch.
    public var captureTimeUnixNs: Int64
    /// The channel's last chunk.
    public var isFinal: Bool

    public init(channelId: String, seq: Int, startPtsNs: Int64, durationNs: Int64, frames: Int, bytes: Int,
                sha256: String, captureTimeUnixNs: Int64, isFinal: Bool) {
        self.channelId = channelId
        self.seq = seq
        self.startPtsNs = startPtsNs
        self.durationNs = durationNs
        self.frames = frames
        self.bytes = bytes
        self.sha256 = sha256
        self.captureTimeUnixNs = captureTimeUnixNs
        self.isFinal = isFinal
    }

    /// The header for a spooled chunk.
    public init(_ metadata: ChunkMetadata) {
        self.init(channelId: metadata.channelId, seq: metadata.seq, startPtsNs: metadata.startPtsNs,
                  durationNs: metadata.durationNs, frames: metadata.frames, bytes: metadata.bytes,
                  sha256: metadata.sha256, captureTimeUnixNs: metadata.captureTimeUnixNs, isFinal: metadata.isFinal)
    }
}

/// The binary message that carries one chunk:
///
///     offset 0   4 bytes  magic "CUF1" (0x43 0x55 0x46 0x31)
///     offset 4   4 bytes  H, the header's length, unsigned big-endian, 2...16384
///     offset 8   H bytes  the header, UTF-8 JSON (`UplinkChunkHeader`)
///     offset 8+H          the chunk's bytes: exactly `bytes` of them, to the end of the message
///
/// One WebSocket message per chunk (the transport may fragment it).
public enum UplinkChunkFrame {
    public static let magic: [UInt8] = [0x43, 0x55, 0x46, 0x31]
    public static let prefixBytes = 8

    /// The frame's bytes before the payload: magic, length and header.
    public static func prefix(for header: UplinkChunkHeader) -> [UInt8] {
        let json = (try? JSONCoding.encoder.encode(header)).map { Array($0) } ?? Array("{}".utf8)
        var out = magic
        out.reserveCapacity(prefixBytes + json.count)
        let n = UInt32(json.count)
        out += [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
        out += json
        return out
    }

    /// A whole frame: prefix and payload in one buffer.
    public static func encode(header: UplinkChunkHeader, payload: some Collection<UInt8>) -> [UInt8] {
        var out = prefix(for: header)
        out.reserveCapacity(out.count + payload.count)
        out += payload
        return out
    }

    /// A parsed frame: the header and where the payload starts in the message.
    public struct Parsed: Sendable, Equatable {
        public var header: UplinkChunkHeader
        public var payloadOffset: Int
        public var payloadCount: Int
    }

    /// Parses a frame without copying its payload. Throws `bad-frame` when the
    /// message is not a chunk frame at all, `bad-chunk` when a header field is out
    /// of range, and `size-mismatch` when the payload is not `bytes` long; the last
    /// two name the header's channel and seq.
    public static func parse(_ message: UnsafeRawBufferPointer, maxChunkBytes: Int) throws(UplinkError) -> Parsed {
        guard message.count >= prefixBytes else {
            throw UplinkError(.badFrame, "a binary message of \(message.count) bytes is too short to be a chunk frame")
        }
        guard message[0] == magic[0], message[1] == magic[1], message[2] == magic[2], message[3] == magic[3] else {
            throw UplinkError(.badFrame, "a binary message must start with the magic \"CUF1\"")
        }
        let length = Int(message[4]) << 24 | Int(message[5]) << 16 | Int(message[6]) << 8 | Int(message[7])
        guard length >= 2, length <= UplinkProtocol.maxHeaderBytes else {
            throw UplinkError(.badFrame, "header length \(length) is out of range (2...\(UplinkProtocol.maxHeaderBytes))")
        }
        guard message.count >= prefixBytes + length else {
            throw UplinkError(.badFrame, "the frame ends inside its \(length)-byte header")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: message[prefixBytes..<(prefixBytes + length)])
        let header: UplinkChunkHeader
        do {
            header = try JSONCoding.decoder.decode(UplinkChunkHeader.self, from: Data(headerBytes))
        } catch {
            throw UplinkError(.badFrame, "the chunk header is not a valid header: \(UplinkError.describe(error))")
        }
        try validate(header, maxChunkBytes: maxChunkBytes)
        let payloadOffset = prefixBytes + length
        let payloadCount = message.count - payloadOffset
        guard payloadCount == header.bytes else {
            throw UplinkError(.sizeMismatch,
                              "\(header.channelId) seq \(header.seq): header says \(header.bytes) bytes, the frame carries \(payloadCount)",
                              channelId: header.channelId, seq: header.seq)
        }
        return Parsed(header: header, payloadOffset: payloadOffset, payloadCount: payloadCount)
    }

    /// Field ranges every header must keep.
    public static func validate(_ header: UplinkChunkHeader, maxChunkBytes: Int) throws(UplinkError) {
        guard !header.channelId.isEmpty, header.channelId.utf8.count <= UplinkChannelRules.maxChannelIdBytes else {
            throw UplinkError(.badChunk, "chunk header: channelId must be 1-\(UplinkChannelRules.maxChannelIdBytes) bytes")
        }
        let what = "\(header.channelId) seq \(header.seq)"
        func bad(_ text: String) -> UplinkError {
            UplinkError(.badChunk, "\(what): \(text)", channelId: header.channelId, seq: header.seq)
        }
        guard header.seq >= 0, header.seq < 1 << 40 else { throw bad("seq out of range") }
        guard header.bytes > 0, header.bytes <= maxChunkBytes else {
            throw bad("\(header.bytes) bytes; a chunk is 1...\(maxChunkBytes) bytes")
        }
        guard header.startPtsNs >= 0, header.startPtsNs <= UplinkProtocol.maxTimelineNs,
              header.durationNs >= 0, header.durationNs <= UplinkProtocol.maxChunkDurationNs else {
            throw bad("startPtsNs must be 0...\(UplinkProtocol.maxTimelineNs) (31 days) and durationNs 0...\(UplinkProtocol.maxChunkDurationNs) (an hour)")
        }
        guard header.frames >= 0 else { throw bad("frames must be >= 0") }
        guard UplinkChannelRules.isHexDigest(header.sha256) else { throw bad("sha256 must be 64 lowercase hex digits") }
    }
}

/// What makes a channel id, a session id and a digest acceptable on the wire.
public enum UplinkChannelRules {
    public static let maxChannelIdBytes = 128
    public static let maxChannels = 16

    /// `prefix:name` with a known prefix, printable ASCII without `/` and `\`.
    public static func validateChannelId(_ id: String) throws(UplinkError) {
        guard !id.isEmpty, id.utf8.count <= maxChannelIdBytes else {
            throw UplinkError(.badHello, "a channel id is 1-\(maxChannelIdBytes) bytes")
        }
        for byte in id.utf8 where byte < 0x21 || byte > 0x7e || byte == UInt8(ascii: "/") || byte == UInt8(ascii: "\\") {
            throw UplinkError(.badHello, "channel id '\(id.prefix(80))' has a character outside printable ASCII, or / or \\")
        }
        do {
            _ = try ChannelID(parsing: id)
        } catch {
            throw UplinkError(.badHello, error.message)
        }
    }

    /// Validates a hello's channel list: 1...16 channels, distinct valid ids, codecs that fit the media type.
    public static func validate(_ channels: [UplinkChannel]) throws(UplinkError) {
        guard !channels.isEmpty, channels.count <= maxChannels else {
            throw UplinkError(.badHello, "a hello names 1...\(maxChannels) channels, not \(channels.count)")
        }
        var seen = Set<String>()
        for channel in channels {
            try validateChannelId(channel.channelId)
            guard seen.insert(channel.channelId).inserted else {
                throw UplinkError(.badHello, "channel '\(channel.channelId)' is named twice")
            }
            let expectedType = (try? ChannelID(parsing: channel.channelId))?.mediaType
            guard channel.mediaType == expectedType else {
                throw UplinkError(.badHello, "channel '\(channel.channelId)' is \(expectedType?.rawValue ?? "?"), not \(channel.mediaType.rawValue)")
            }
            let codecOK = channel.mediaType == .video ? channel.codec == "h264" : channel.codec == "aac"
            guard codecOK, channel.container == "mpegts" else {
                throw UplinkError(.badHello, "channel '\(channel.channelId)': \(channel.codec)/\(channel.container) is not supported (h264 or aac in mpegts)")
            }
            guard channel.chunkDurationNs > 0, channel.chunkDurationNs <= 60_000_000_000 else {
                throw UplinkError(.badHello, "channel '\(channel.channelId)': chunkDurationNs must be in (0, 60 s]")
            }
            if let name = channel.name, name.utf8.count > 256 {
                throw UplinkError(.badHello, "channel '\(channel.channelId)': name longer than 256 bytes")
            }
        }
    }

    public static func isHexDigest(_ text: String) -> Bool {
        guard text.utf8.count == 64 else { return false }
        return text.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }
}
