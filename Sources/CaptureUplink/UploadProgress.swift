/// An upload's phase, as `getStatus` shows it (`upload.phase`). The raw values are the
/// wire names. The uplink's state machine runs in these phases (`UplinkMachine.Phase`).
public enum UploadPhase: String, Sendable, Codable, CaseIterable {
    /// For a reconnect (after the backoff).
    case waiting
    case connecting
    /// The hello is sent; no welcome yet.
    case greeting
    case streaming
    /// `end` is sent.
    case ending
    case finished
    /// The endpoint refused the token: waits for `updateToken`.
    case needsToken
    /// The endpoint refused the session for good (`upload-failed`).
    case stopped
}

/// Where a session's upload stands: what the agent's uplink counts, what getStatus
/// shows (`upload`, `earlierUploads`) and `capturectl status` reads back.
public struct UploadProgress: Codable, Sendable, Equatable {
    public var phase: UploadPhase
    public var connected: Bool
    public var chunksUploaded: Int
    public var bytesUploaded: Int
    public var chunksPending: Int
    public var bytesPending: Int
    /// Chunks the endpoint already had (resent after a lost ack).
    public var duplicates: Int
    /// Chunks the endpoint refused (each resent on a new connection).
    public var refusedChunks: Int
    /// Messages from the endpoint that broke the protocol (binary, oversized, malformed).
    public var protocolViolations: Int
    /// Spooled chunks that could not be read back (never sent; reported, not skipped).
    public var unreadableChunks: Int
    /// Connections that reached a welcome.
    public var connections: Int
    /// What answers at the endpoint's uplink URL does not speak the capture uplink protocol
    /// (an HTTP answer other than 101 to the upgrade, no welcome): set until a welcome comes.
    public var incompatibleEndpoint: Bool
    /// Age of the oldest chunk not yet acknowledged, from its capture (0: none pending).
    public var uploadLagMs: Int64
    public var chunksUploadedByChannel: [String: Int]
    /// CPU time the uplink's thread used so far, ns.
    public var threadCPUNs: Int64

    public init(phase: UploadPhase, connected: Bool, chunksUploaded: Int, bytesUploaded: Int, chunksPending: Int,
                bytesPending: Int, duplicates: Int, refusedChunks: Int, protocolViolations: Int, unreadableChunks: Int,
                connections: Int, incompatibleEndpoint: Bool, uploadLagMs: Int64, chunksUploadedByChannel: [String: Int], threadCPUNs: Int64) {
        self.phase = phase
        self.connected = connected
        self.chunksUploaded = chunksUploaded
        self.bytesUploaded = bytesUploaded
        self.chunksPending = chunksPending
        self.bytesPending = bytesPending
        self.duplicates = duplicates
        self.refusedChunks = refusedChunks
        self.protocolViolations = protocolViolations
        self.unreadableChunks = unreadableChunks
        self.connections = connections
        self.incompatibleEndpoint = incompatibleEndpoint
        self.uploadLagMs = uploadLagMs
        self.chunksUploadedByChannel = chunksUploadedByChannel
        self.threadCPUNs = threadCPUNs
    }
}
