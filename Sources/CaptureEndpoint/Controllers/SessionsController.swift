import CaptureCore
import Foundation
import Hummingbird
import Logging

/// `POST|GET /collection/{cid}/capture/session`, `GET .../{sid}`: the backend's
/// view of capture sessions.
struct SessionsController {
    let store: any EndpointStore
    let urls: URLResolver
    let maxBodyBytes: Int
    /// Whether a callback may name a loopback or private address (`--allow-private-webhook-targets`).
    let allowPrivateCallbacks: Bool
    /// `EndpointLimits.openSessionsPerAccount`.
    let maxOpenSessions: Int

    func addRoutes(to group: RouterGroup<EndpointRequestContext>) {
        group.post("collection/{cid}/capture/session", use: create)
        group.get("collection/{cid}/capture/session", use: list)
        group.get("collection/{cid}/capture/session/{sid}", use: get)
    }

    struct CreateRequest: Decodable {
        var endUserId: String
        var callbackUrl: String?
        var wsConnectionId: String?
        var metadata: JSONValue?
        var clientId: String?

        enum CodingKeys: String, CodingKey {
            case endUserId = "end_user_id", callbackUrl = "callback_url", wsConnectionId = "ws_connection_id"
            case metadata, clientId = "client_id"
        }
    }

    @Sendable func create(_ request: Request, context: EndpointRequestContext) async throws -> Response {
        let account = try context.requireAccount()
        let collectionId = try Identifiers.collection(context)
        let body = try await RequestBodyReader.decode(CreateRequest.self, from: request, limit: maxBodyBytes)
        try Identifiers.checkText(body.endUserId, field: "end_user_id", max: 256)
        if let clientId = body.clientId { try Identifiers.checkText(clientId, field: "client_id", max: 256) }
        if let connection = body.wsConnectionId { try Identifiers.checkText(connection, field: "ws_connection_id", max: 128) }
        if let url = body.callbackUrl { try Identifiers.checkCallbackURL(url, allowPrivate: allowPrivateCallbacks) }
        let metadata = body.metadata ?? .object([:])
        guard case .object = metadata else { throw APIError.invalid("'metadata' must be a JSON object") }
        let metadataJSON = metadata.description
        guard metadataJSON.utf8.count <= 64 << 10 else { throw APIError.invalid("'metadata' is larger than 64 KiB") }

        let now = EndpointClock.nowMilliseconds()
        let session = SessionRecord(
            id: Secrets.newIdentifier(prefix: "cap-"), accountId: account.id, collectionId: collectionId,
            endUserId: body.endUserId, clientId: body.clientId, status: .created, callbackURL: body.callbackUrl,
            wsConnectionId: body.wsConnectionId, metadataJSON: metadataJSON, primaryVideoChannelId: nil,
            exportStatus: nil, exportedVideoId: nil, exportError: nil, failureReason: nil, createdAt: now,
            updatedAt: now, startedAt: nil, activeAt: nil, stoppedAt: nil, lastUplinkAt: nil,
            playbackKey: Secrets.base64URL(Secrets.randomBytes(24)))
        guard try await store.createSession(session, maxOpen: maxOpenSessions) else {
            throw APIError(.tooManyRequests, .quotaExceeded,
                           "the account has \(maxOpenSessions) sessions created, starting or active (its quota): stop or finish one first")
        }
        context.logger.info("session created", metadata: ["session": "\(session.id)", "account": "\(account.id)"])
        return APIResponse.ok(CaptureSessionResource(session, channels: [], urls: urls.urls(for: request)))
    }

    @Sendable func list(_ request: Request, context: EndpointRequestContext) async throws -> Response {
        let account = try context.requireAccount()
        let collectionId = try Identifiers.collection(context)
        var status: SessionStatus?
        if let text = request.uri.queryParameters["status"].map(String.init), !text.isEmpty {
            guard let parsed = SessionStatus(rawValue: text) else {
                throw APIError.invalid("'status' must be one of \(SessionStatus.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            status = parsed
        }
        let sessions = try await store.sessions(accountId: account.id, collectionId: collectionId, status: status)
        let base = urls.urls(for: request)
        var resources: [CaptureSessionResource] = []
        for session in sessions {
            resources.append(CaptureSessionResource(session, channels: try await store.channels(sessionId: session.id), urls: base))
        }
        return APIResponse.ok(SessionListResource(sessions: resources))
    }

    @Sendable func get(_ request: Request, context: EndpointRequestContext) async throws -> Response {
        let session = try await Identifiers.session(context, store: store)
        return APIResponse.ok(CaptureSessionResource(
            session, channels: try await store.channels(sessionId: session.id), urls: urls.urls(for: request)))
    }
}

/// Path parameters and text fields, checked before they reach the store or a path.
enum Identifiers {
    /// A collection id: `default`, or 1-64 of `A-Z a-z 0-9 - _`.
    static func collection(_ context: EndpointRequestContext) throws -> String {
        let id = context.parameters.get("cid") ?? ""
        guard isToken(id, max: 64) else {
            throw APIError.notFound("no collection '\(id.prefix(64))' (collection ids are 1-64 of A-Z a-z 0-9 - _)")
        }
        return id
    }

    /// `cap-` and 32 lowercase hex digits, the only shape the endpoint makes.
    static func isSessionId(_ id: String) -> Bool {
        id.hasPrefix("cap-") && id.utf8.count == 36 && id.utf8.dropFirst(4).allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66)
        }
    }

    /// The session named by `{cid}` and `{sid}`, if it is the caller's: another
    /// account's session is as absent as one that never existed.
    static func session(_ context: EndpointRequestContext, store: any EndpointStore) async throws -> SessionRecord {
        let account = try context.requireAccount()
        let collectionId = try collection(context)
        let id = context.parameters.get("sid") ?? ""
        guard isSessionId(id), let session = try await store.session(id: id), session.accountId == account.id,
              session.collectionId == collectionId else {
            throw APIError.notFound("no capture session '\(id.prefix(64))' in collection '\(collectionId)'")
        }
        return session
    }

    static func isToken(_ text: String, max: Int) -> Bool {
        !text.isEmpty && text.utf8.count <= max && text.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2d || $0 == 0x5f
        }
    }

    static func checkText(_ text: String, field: String, max: Int) throws {
        guard !text.isEmpty, text.utf8.count <= max else {
            throw APIError.invalid("'\(field)' must be 1-\(max) bytes")
        }
        guard !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw APIError.invalid("'\(field)' must not contain control characters")
        }
    }

    /// The URL's shape, and (unless private targets are allowed) that an address written in
    /// it is public. A name is checked where it matters, on what it resolves to at delivery.
    static func checkCallbackURL(_ text: String, allowPrivate: Bool) throws {
        guard text.utf8.count <= 2048, let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(),
              scheme == "http" || scheme == "https", var host = url.host, !host.isEmpty else {
            throw APIError.invalid("'callback_url' must be an http or https URL of at most 2048 bytes")
        }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let lowered = host.lowercased()
        if !allowPrivate {
            if let address = CallbackTargetPolicy.literal(host), let why = CallbackTargetPolicy.nonPublicReason(address) {
                throw APIError.invalid("'callback_url' points at \(host) (\(why)); the endpoint sends webhooks to public addresses only unless it runs with --allow-private-webhook-targets")
            }
            if lowered == "localhost" || lowered.hasSuffix(".localhost") {
                throw APIError.invalid("'callback_url' points at \(host) (loopback); the endpoint sends webhooks to public addresses only unless it runs with --allow-private-webhook-targets")
            }
        }
    }
}
