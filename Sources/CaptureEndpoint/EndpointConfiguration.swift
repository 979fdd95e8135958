import CaptureUplink

/// Everything the endpoint is told at start-up. The executable fills it from
/// its options; tests build it directly.
public struct EndpointConfiguration: Sendable {
    /// Where the database, the chunk files, the exports and the generated secrets live.
    public var dataDirectory: String
    public var host: String = "127.0.0.1"
    /// 0 picks a free port (reported by `onServerRunning` and on stderr).
    public var port: Int = 8470
    /// The base URL put into the URLs the endpoint hands out (websocket, HLS,
    /// exports); defaults to `http://host:port` as bound.
    public var publicBaseURL: String?
    /// The API keys; each is an account of its own.
    public var apiKeys: [String]
    /// The endpoint's webhook signing key, `whsec_<base64>`: every account's secret is
    /// derived from it (`WebhookSecrets`); it is never sent to an account.
    public var webhookSecret: String
    /// After `POST /capture/webhook/secret`, the account's previous secret signs too this long.
    public var webhookSecretOverlapSeconds: Int = 86_400
    /// A starting or active session whose uplink is silent this long fails.
    public var silenceTimeoutSeconds: Int = 300
    /// How often the silence check runs.
    public var silenceCheckIntervalMilliseconds: Int = 1000
    public var maxChunkBytes: Int = UplinkProtocol.defaultMaxChunkBytes
    /// How many unacknowledged chunks a client may have in flight (the welcome's `window`).
    public var uplinkWindow: Int = 16
    /// The endpoint pings every WebSocket this often and drops one that did not answer the last ping.
    public var pingIntervalSeconds: Int = 15
    /// A connection that has not said hello this long is closed (4001).
    public var helloTimeoutSeconds: Int = UplinkProtocol.helloTimeoutSeconds
    /// A client that has not taken an ack for this long is disconnected (the TCP connection is dropped).
    public var uplinkWriteTimeoutSeconds: Int = 20
    /// The largest REST request body.
    public var maxRequestBodyBytes: Int = 1 << 20
    /// The longest client-token lifetime `POST /capture/session/token` grants.
    public var maxTokenLifetimeSeconds: Int = 30 * 86_400
    /// Webhook retries: first retry after this, doubling up to `webhookMaxBackoffSeconds`.
    public var webhookInitialBackoffMilliseconds: Int = 1000
    public var webhookMaxBackoffSeconds: Int = 600
    /// Attempts before a delivery is abandoned (about 1 h 40 min with the defaults).
    public var webhookMaxAttempts: Int = 16
    public var webhookTimeoutSeconds: Int = 10
    /// Webhooks may go to loopback, private and link-local addresses (local development:
    /// the demo and the tests). Off: such callbacks are refused (`CallbackTargetPolicy`).
    public var allowPrivateWebhookTargets = false
    /// A receiver's 307/308 is followed (up to 3, each target checked like the first).
    /// Off: a redirect answer is a failed attempt.
    public var followWebhookRedirects = false
    /// PEM file of the CAs trusted for https callbacks (a private CA); nil: the system's store.
    public var webhookCAFile: String?
    /// An export encodes its mixed track in segments this long, on every core.
    public var exportMixSegmentSeconds: Double = 30

    /// What one credential may take: sessions, bytes, chunks, connections, rates.
    public var limits = EndpointLimits()

    /// Fault injection for tests only (no option sets it): each uplink hello pauses this long
    /// between its token check and its attach, the window a revocation can fall into.
    public var injectedHelloDelay: Duration?

    /// Fault injection for tests only (set from CAPTURE_ENDPOINT_TEST_EXPORT_HOLD, no option):
    /// an export creates this file once its MP4 is written but not yet published, then holds
    /// for a minute, so that a test can kill the endpoint in the middle of an export.
    public var injectedExportHoldMarker: String?

    public init(dataDirectory: String, apiKeys: [String], webhookSecret: String) {
        self.dataDirectory = dataDirectory
        self.apiKeys = apiKeys
        self.webhookSecret = webhookSecret
    }

    public var databasePath: String { dataDirectory + "/endpoint.sqlite" }
}
