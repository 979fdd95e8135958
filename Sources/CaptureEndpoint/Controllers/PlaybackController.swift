import CaptureUplink
import Hummingbird

/// Live HLS per channel: `GET /hls/{sid}/{key}/{channel}/index.m3u8` and its
/// segments, which are the stored chunks as they are (each a self-contained
/// MPEG-TS segment with continuous timestamps). The playback key in the path
/// is the credential, so any player can open the URL; the API key is not needed.
struct PlaybackController {
    let store: any EndpointStore
    let files: ChunkFiles

    func addRoutes(to router: Router<EndpointRequestContext>) {
        router.get("hls/{sid}/{key}/{channel}/index.m3u8", use: playlist)
        router.get("hls/{sid}/{key}/{channel}/{segment}", use: segment)
    }

    @Sendable func playlist(_ request: Request, context: EndpointRequestContext) async throws -> Response {
        let (session, channel) = try await resolve(context)
        let chunks = try await store.chunks(sessionId: session.id, channelId: channel.channelId)
        let ended = channel.complete || session.status.isClosed
        let text = HLSPlaylist.render(chunks: chunks, chunkDurationNs: channel.chunkDurationNs, ended: ended)
        return Response(
            status: .ok,
            headers: [.contentType: "application/vnd.apple.mpegurl", .cacheControl: ended ? "max-age=60" : "no-cache"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    @Sendable func segment(_ request: Request, context: EndpointRequestContext) async throws -> Response {
        let (session, channel) = try await resolve(context)
        let name = context.parameters.get("segment") ?? ""
        guard let seq = HLSPlaylist.seq(ofSegment: name),
              let chunk = try await store.chunk(sessionId: session.id, channelId: channel.channelId, seq: seq) else {
            throw APIError.notFound("no such segment")
        }
        let bytes = try await files.read(chunk.file)
        return Response(
            status: .ok, headers: [.contentType: "video/mp2t", .cacheControl: "max-age=86400"],
            body: ResponseBody(byteBuffer: bytes))
    }

    private func resolve(_ context: EndpointRequestContext) async throws -> (SessionRecord, ChannelRecord) {
        let id = context.parameters.get("sid") ?? ""
        let key = context.parameters.get("key") ?? ""
        let directory = context.parameters.get("channel") ?? ""
        guard Identifiers.isSessionId(id), let session = try await store.session(id: id),
              Secrets.constantTimeEqual(session.playbackKey, key) else {
            throw APIError.notFound("no such stream")
        }
        guard let channel = try await store.channels(sessionId: id).first(where: { $0.directoryName == directory }) else {
            throw APIError.notFound("no such stream")
        }
        return (session, channel)
    }
}

/// An HLS media playlist (RFC 8216) over a channel's stored chunks.
enum HLSPlaylist {
    static func render(chunks: [ChunkRecord], chunkDurationNs: Int64, ended: Bool) -> String {
        let longest = max(chunks.map(\.durationNs).max() ?? 0, chunkDurationNs)
        let target = Int((longest + 999_999_999) / 1_000_000_000)
        var out = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:\(max(target, 1))\n#EXT-X-MEDIA-SEQUENCE:0\n"
        out += "#EXT-X-PLAYLIST-TYPE:EVENT\n"
        for chunk in chunks {
            let seconds = Double(chunk.durationNs) / 1e9
            out += "#EXTINF:\(String(format: "%.6f", seconds)),\n\(ChunkMetadata.mediaFileName(seq: chunk.seq))\n"
        }
        if ended { out += "#EXT-X-ENDLIST\n" }
        return out
    }

    /// `chunk-000042.ts` -> 42.
    static func seq(ofSegment name: String) -> Int? {
        guard name.hasPrefix("chunk-"), name.hasSuffix(".ts"), name.utf8.count <= 20 else { return nil }
        return Int(name.dropFirst(6).dropLast(3))
    }
}

import Foundation
