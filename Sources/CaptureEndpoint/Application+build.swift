import CaptureCore
import CaptureSystem
import CaptureUplink
public import Hummingbird
import HummingbirdWebSocket
public import Logging
import NIOCore
import NIOPosix

/// The parts of a running endpoint, for the executable and for tests.
public struct EndpointComponents: Sendable {
    public let store: SQLiteEndpointStore
    let files: ChunkFiles
    let uplinks: UplinkHub
    let events: EventHub
    let webhooks: WebhookDispatcher
    let announcer: SessionAnnouncer
    let exports: ExportService
    let housekeeping: Housekeeping
    /// Every account's webhook secret (tests verify signatures with it).
    public let webhookSecrets: WebhookSecrets
    let sockets: SocketsPerAddress

    /// Open uplink connections right now.
    public func uplinkConnectionCount() async -> Int { await uplinks.connectionCount }
    public func eventConnectionCount() async -> Int { await events.connectionCount }
    /// Open TCP connections from `address` (IPv4 text) as the per-address limit counts them.
    public func socketCount(from address: String) -> Int { sockets.count(address) }
}

/// Builds the endpoint: storage (creating the data directory and running the
/// migrations), the routers and the background services.
///
/// `onServerRunning` hears the bound port (useful with `port: 0`).
public func buildApplication(
    _ configuration: EndpointConfiguration,
    logger: Logger,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) throws -> (application: some ApplicationProtocol, components: EndpointComponents) {
    guard let secrets = WebhookSecrets(signingKey: configuration.webhookSecret) else {
        throw CaptureError(.invalidRequest, "the webhook secret is not whsec_<base64 of 24-64 bytes>")
    }
    let minimumBudget = InflightBudget.minimum(maxChunkBytes: configuration.maxChunkBytes)
    guard configuration.limits.inflightBytes >= minimumBudget else {
        throw CaptureError(.invalidRequest, "--limit inflight-bytes: at least \(minimumBudget) (a chunk message of \(configuration.maxChunkBytes) bytes and a frame, counted twice, with a quarter kept back)")
    }
    try makeDirectories(configuration.dataDirectory)
    let store = try SQLiteEndpointStore(path: configuration.databasePath)
    let files = ChunkFiles(dataDirectory: configuration.dataDirectory, threadPool: .singleton)
    let budget = InflightBudget(limit: configuration.limits.inflightBytes, maxChunkBytes: configuration.maxChunkBytes)
    let uplinks = UplinkHub(helloTimeoutSeconds: configuration.helloTimeoutSeconds,
                            writeTimeoutSeconds: configuration.uplinkWriteTimeoutSeconds, limits: configuration.limits,
                            budget: budget, logger: logger)
    let events = EventHub(perAccount: configuration.limits.eventSocketsPerAccount, logger: logger)
    let webhooks = WebhookDispatcher(store: store, secrets: secrets, configuration: configuration, logger: logger)
    let announcer = SessionAnnouncer(events: events, webhooks: webhooks, logger: logger)
    let exports = ExportService(store: store, dataDirectory: configuration.dataDirectory, announcer: announcer,
                                threadPool: .singleton, mixSegmentSeconds: configuration.exportMixSegmentSeconds,
                                injectedHoldMarker: configuration.injectedExportHoldMarker, logger: logger)
    let housekeeping = Housekeeping(
        store: store, uplinks: uplinks, announcer: announcer,
        silenceTimeoutMs: Int64(configuration.silenceTimeoutSeconds) * 1000,
        unstartedTimeoutMs: Int64(configuration.limits.unstartedSessionSeconds) * 1000,
        checkIntervalMs: Int64(configuration.silenceCheckIntervalMilliseconds), exports: exports, logger: logger)
    let components = EndpointComponents(
        store: store, files: files, uplinks: uplinks, events: events, webhooks: webhooks, announcer: announcer,
        exports: exports, housekeeping: housekeeping, webhookSecrets: secrets,
        sockets: SocketsPerAddress(limit: configuration.limits.socketsPerAddress))

    let router = buildRouter(configuration, components: components)
    let webSocketRouter = buildWebSocketRouter(configuration, components: components)
    let application = Application(
        router: router,
        server: GuardedServerChannel.builder(
            webSocketRouter: webSocketRouter,
            configuration: .init(
                http1: .init(idleTimeout: .seconds(120)),
                ws: .init(
                    // Frames, not messages: a chunk message comes fragmented, and each frame is
                    // buffered whole by the decoder, so this bounds what a connection that has
                    // not said hello can make the endpoint hold.
                    maxFrameSize: UplinkProtocol.maxFrameBytes,
                    autoPing: .enabled(timePeriod: .seconds(Int64(configuration.pingIntervalSeconds))),
                    closeTimeout: .seconds(5))),
            maxBodyBytes: configuration.maxRequestBodyBytes,
            sockets: components.sockets),
        configuration: .init(
            address: .hostname(configuration.host, port: configuration.port), serverName: "capture-endpoint"),
        services: [webhooks, housekeeping],
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? configuration.port
            logger.notice("listening", metadata: ["host": "\(configuration.host)", "port": "\(port)"])
            await onServerRunning(port)
        },
        logger: logger)
    return (application, components)
}

/// The HTTP routes: health and playback in the open, the REST API behind the API key.
func buildRouter(_ configuration: EndpointConfiguration, components: EndpointComponents) -> Router<EndpointRequestContext> {
    let router = Router(context: EndpointRequestContext.self)
    router.add(middleware: AccessLogMiddleware())
    router.add(middleware: ErrorBodyMiddleware())
    let urls = URLResolver(configured: configuration.publicBaseURL, fallbackHost: configuration.host,
                           fallbackPort: configuration.port)

    router.get("health") { _, _ -> Response in APIResponse.ok(["status": "ok"]) }
    PlaybackController(store: components.store, files: components.files).addRoutes(to: router)
    UplinkController(services: uplinkServices(configuration, components)).addRoutes(to: router)

    let api = router.group().add(middleware: APIKeyMiddleware(apiKeys: configuration.apiKeys, store: components.store))
    SessionsController(store: components.store, urls: urls, maxBodyBytes: configuration.maxRequestBodyBytes,
                       allowPrivateCallbacks: configuration.allowPrivateWebhookTargets,
                       maxOpenSessions: configuration.limits.openSessionsPerAccount)
        .addRoutes(to: api)
    TokensController(store: components.store, uplinks: components.uplinks,
                     maxBodyBytes: configuration.maxRequestBodyBytes,
                     maxLifetimeSeconds: configuration.maxTokenLifetimeSeconds).addRoutes(to: api)
    let export = ExportController(store: components.store, exports: components.exports, urls: urls,
                                  maxBodyBytes: configuration.maxRequestBodyBytes)
    export.addRoutes(to: api)
    export.addPlaybackRoutes(to: router)
    WebhookSecretController(store: components.store, secrets: components.webhookSecrets,
                            overlapSeconds: configuration.webhookSecretOverlapSeconds).addRoutes(to: api)
    let events = EventsController(events: components.events, urls: urls)
    events.addRoutes(to: api)
    events.addPlainRoutes(to: router)
    return router
}

/// The WebSocket routes (consulted only for requests that ask for an upgrade).
func buildWebSocketRouter(_ configuration: EndpointConfiguration, components: EndpointComponents)
    -> Router<EndpointRequestContext> {
    let router = Router(context: EndpointRequestContext.self)
    router.add(middleware: ErrorBodyMiddleware())
    UplinkController(services: uplinkServices(configuration, components)).addWebSocketRoutes(to: router)
    EventsController(events: components.events, urls: URLResolver(configured: nil, fallbackHost: "", fallbackPort: 0))
        .addWebSocketRoutes(to: router)
    return router
}

func uplinkServices(_ configuration: EndpointConfiguration, _ components: EndpointComponents) -> UplinkConnection.Services {
    UplinkConnection.Services(store: components.store, files: components.files, hub: components.uplinks,
                              announcer: components.announcer, maxChunkBytes: configuration.maxChunkBytes,
                              window: configuration.uplinkWindow, quota: StorageQuota(configuration.limits),
                              chunksPerSecond: configuration.limits.chunksPerSecond, budget: components.uplinks.budget,
                              injectedHelloDelay: configuration.injectedHelloDelay)
}

/// Logs one line per request: method, the matched route's template (never the
/// concrete path or query, which can hold a ticket or a playback key), status, time.
struct AccessLogMiddleware: RouterMiddleware {
    typealias Context = EndpointRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response {
        let started = MonotonicClock.now()
        let response = try await next(request, context)
        context.logger.info("request", metadata: [
            "method": "\(request.method.rawValue)", "route": "\(context.endpointPath ?? "(none)")",
            "status": "\(response.status.code)", "ms": "\((MonotonicClock.now() - started) / 1_000_000)",
        ])
        return response
    }
}
