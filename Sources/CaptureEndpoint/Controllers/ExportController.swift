import CaptureCore
import Hummingbird
import Logging

/// `POST /collection/{cid}/capture/session/{sid}/export` (SDK `session.export()`,
/// called repeatedly to poll) and the exported file, `GET /exports/{sid}/{key}/{video}.mp4`.
struct ExportController {
    let store: any EndpointStore
    let exports: ExportService
    let urls: URLResolver
    let maxBodyBytes: Int

    func addRoutes(to group: RouterGroup<EndpointRequestContext>) {
        group.post("collection/{cid}/capture/session/{sid}/export", use: export)
    }

    func addPlaybackRoutes(to router: Router<EndpointRequestContext>) {
        router.get("exports/{sid}/{key}/{file}", use: download)
    }

    struct ExportRequest: Decodable {
        var videoChannelId: String?
        var connectionId: String?
        enum CodingKeys: String, CodingKey { case videoChannelId = "video_channel_id", connectionId = "connection_id" }
    }

    struct ExportResource: Codable, Sendable, Equatable {
        var sessionId: String
        var videoChannelId: String
        var exportStatus: ExportStatus
        var videoId: String?
        var streamUrl: String?
        var playerUrl: String?
        var error: String?
        enum CodingKeys: String, CodingKey {
            case sessionId = "session_id", videoChannelId = "video_channel_id", exportStatus = "export_status"
            case videoId = "video_id", streamUrl = "stream_url", playerUrl = "player_url", error
        }
    }

    @Sendable func export(_ request: Request, context: EndpointRequestContext) async throws -> Response {
        let session = try await Identifiers.session(context, store: store)
        let body = try await RequestBodyReader.decode(ExportRequest.self, from: request, limit: maxBodyBytes, allowEmpty: true)
        guard session.status == .stopped || session.status == .exported else {
            throw APIError(.conflict, .invalidState, "the session is \(session.status.rawValue); it can be exported once stopped")
        }
        let channels = try await store.channels(sessionId: session.id)
        let videoChannel = body.videoChannelId ?? session.primaryVideoChannelId
        guard let videoChannel, channels.contains(where: { $0.channelId == videoChannel && $0.mediaType == .video }) else {
            throw APIError.invalid(body.videoChannelId == nil ? "the session has no video channel to export"
                                   : "'\(body.videoChannelId!.prefix(80))' is not a video channel of the session")
        }
        if let connection = body.connectionId { try Identifiers.checkText(connection, field: "connection_id", max: 128) }
        guard let current = try await store.beginExport(sessionId: session.id, videoChannelId: videoChannel,
                                                        now: EndpointClock.nowMilliseconds()) else {
            throw APIError.notFound("no capture session '\(session.id)'")
        }
        // beginExport moved it to exporting only if it was neither exporting nor exported.
        if current.exportStatus == .exporting && session.exportStatus != .exporting {
            context.logger.info("export started", metadata: ["session": "\(session.id)", "video_channel": "\(videoChannel)"])
            exports.start(current, videoChannelId: videoChannel, notify: body.connectionId)
        }
        return APIResponse.ok(resource(current, videoChannel: videoChannel, urls: urls.urls(for: request)))
    }

    func resource(_ session: SessionRecord, videoChannel: String, urls: EndpointURLs) -> ExportResource {
        var out = ExportResource(sessionId: session.id, videoChannelId: videoChannel,
                                 exportStatus: session.exportStatus ?? .exporting)
        if session.exportStatus == .exported, let video = session.exportedVideoId {
            out.videoId = video
            out.streamUrl = "\(urls.base)/exports/\(session.id)/\(session.playbackKey)/\(video).mp4"
            out.playerUrl = out.streamUrl
        }
        if session.exportStatus == .failed { out.error = session.exportError }
        return out
    }

    @Sendable func download(_ request: Request, context: EndpointRequestContext) async throws -> Response {
        let id = context.parameters.get("sid") ?? ""
        let key = context.parameters.get("key") ?? ""
        let file = context.parameters.get("file") ?? ""
        guard Identifiers.isSessionId(id), let session = try await store.session(id: id),
              Secrets.constantTimeEqual(session.playbackKey, key), let video = session.exportedVideoId,
              session.exportStatus == .exported, file == video + ".mp4" else {
            throw APIError.notFound("no such export")
        }
        let path = exports.dataDirectory + "/" + ExportService.relativePath(sessionId: id, videoId: video)
        let body = try await FileIO().loadFile(path: path, context: context)
        return Response(status: .ok, headers: [.contentType: "video/mp4", .cacheControl: "max-age=86400"], body: body)
    }
}
