public import CaptureCore

/// What one credential may take of the endpoint. Every limit refuses with its own
/// answer (HTTP 429 `QUOTA_EXCEEDED`, uplink error `quota-exceeded` then close 4014, or
/// close 4015 for connections, which a client retries) and none of them stops the
/// process. Set with `--limit NAME=VALUE` (SECURITY.md lists them with their defaults).
public struct EndpointLimits: Sendable, Equatable {
    /// Sessions of one account that are created, starting or active.
    public var openSessionsPerAccount = 1000
    /// A session created and never streamed fails after this long (and frees its place).
    public var unstartedSessionSeconds = 86_400
    /// Chunk bytes one session may store, over all its channels.
    public var bytesPerSession: Int64 = 64 << 30
    /// Chunks one session may store, over all its channels (a day of three channels in
    /// 1 s chunks is 259 200).
    public var chunksPerSession = 2_000_000
    /// Chunk bytes one account may store, over all its sessions.
    public var bytesPerAccount: Int64 = 1 << 40
    /// Uplink connections of one account that have said hello.
    public var uplinksPerAccount = 64
    /// Uplink connections from one remote address, hello or not.
    public var connectionsPerAddress = 64
    /// TCP connections of any kind (REST, uplink, event sockets) from one remote address
    /// (IPv6: one /64); one more is closed at once, before anything is read.
    public var socketsPerAddress = 256
    /// Uplink connections in all.
    public var connections = 4096
    /// Chunks per second one uplink connection may send (a burst of as many first); faster
    /// senders are slowed, not refused: their next chunk is read when the rate allows.
    public var chunksPerSecond = 200
    /// Open event sockets of one account, and tickets it holds unused.
    public var eventSocketsPerAccount = 32
    /// What the endpoint's memory may grow by for uplinks: the connections and the data read
    /// and not yet handled (`InflightBudget` says how each part is charged). Past three
    /// quarters of it no uplink is read; from half full on a hello is refused
    /// (`busy`, close 4015). At least what one connection holds reading the largest chunk,
    /// and a quarter more (`InflightBudget.minimum`, 91.0 MiB with the default chunk size).
    public var inflightBytes = 256 << 20

    public init() {}

    static let maxChunksPerSecond: Int64 = 1_000_000

    /// The names `--limit` takes, each with its largest value (so no arithmetic on a limit
    /// can overflow) and a setter.
    static let settable: [(name: String, max: Int64, set: @Sendable (inout EndpointLimits, Int64) -> Void)] = [
        ("open-sessions-per-account", 1 << 31, { $0.openSessionsPerAccount = Int($1) }),
        ("unstarted-session-seconds", 10 * 366 * 86_400, { $0.unstartedSessionSeconds = Int($1) }),
        ("bytes-per-session", 1 << 56, { $0.bytesPerSession = $1 }),
        ("chunks-per-session", 1 << 40, { $0.chunksPerSession = Int($1) }),
        ("bytes-per-account", 1 << 60, { $0.bytesPerAccount = $1 }),
        ("uplinks-per-account", 1 << 31, { $0.uplinksPerAccount = Int($1) }),
        ("connections-per-address", 1 << 31, { $0.connectionsPerAddress = Int($1) }),
        ("connections", 1 << 31, { $0.connections = Int($1) }),
        ("sockets-per-address", 1 << 31, { $0.socketsPerAddress = Int($1) }),
        ("chunks-per-second", maxChunksPerSecond, { $0.chunksPerSecond = Int($1) }),
        ("event-sockets-per-account", 1 << 31, { $0.eventSocketsPerAccount = Int($1) }),
        ("inflight-bytes", 1 << 40, { $0.inflightBytes = Int($1) }),
    ]

    /// Applies one `NAME=VALUE` (VALUE a positive integer, with K, M, G or T for powers of 1024).
    public mutating func set(_ assignment: String) throws(CaptureError) {
        guard let equals = assignment.firstIndex(of: "=") else {
            throw CaptureError(.invalidRequest, "--limit takes NAME=VALUE, not '\(assignment.prefix(80))'")
        }
        let name = String(assignment[..<equals])
        var text = String(assignment[assignment.index(after: equals)...])
        guard let limit = Self.settable.first(where: { $0.name == name }) else {
            throw CaptureError(.invalidRequest, "--limit: unknown limit '\(name.prefix(80))' (one of \(Self.settable.map(\.name).joined(separator: ", ")))")
        }
        var shift: Int64 = 0
        if let unit = text.last, let power = ["K": 10, "M": 20, "G": 30, "T": 40][String(unit).uppercased()] {
            shift = Int64(power)
            text.removeLast()
        }
        guard let base = Int64(text), base >= 1, base <= (Int64.max >> shift) else {
            throw CaptureError(.invalidRequest, "--limit \(name): '\(assignment[assignment.index(after: equals)...].prefix(40))' is not a positive integer (K, M, G, T allowed)")
        }
        guard base << shift <= limit.max else {
            throw CaptureError(.invalidRequest, "--limit \(name): at most \(limit.max)")
        }
        limit.set(&self, base << shift)
    }
}
