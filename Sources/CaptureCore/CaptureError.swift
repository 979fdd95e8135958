/// Stable, machine-readable error codes. The raw values are part of the public
/// contract (command line, control protocol, logs): never rename one.
public enum CaptureErrorCode: String, Sendable, CaseIterable, Codable {
    /// No X server, it refused us, or it went away.
    case displayUnavailable = "DISPLAY_UNAVAILABLE"
    /// No PulseAudio (or pipewire-pulse) server, or it went away.
    case audioUnavailable = "AUDIO_UNAVAILABLE"
    /// A requested channel id is malformed or does not exist.
    case invalidChannels = "INVALID_CHANNELS"
    /// Output could not be written (spool, --out directory, disk full, ...).
    case ioError = "IO_ERROR"
    /// An argument or message is malformed.
    case invalidRequest = "INVALID_REQUEST"
    /// The encoder or muxer failed.
    case encoderError = "ENCODER_ERROR"
    /// A bug: something that should not happen did.
    case internalError = "INTERNAL_ERROR"
    /// The command is not allowed in the current state (a second start, a stop with no session, ...).
    case invalidState = "INVALID_STATE"
    /// The control protocol has no command by that name.
    case unknownCommand = "UNKNOWN_COMMAND"
    /// A control message line is longer than the protocol allows (1 MiB).
    case requestTooLarge = "REQUEST_TOO_LARGE"
    /// The peer is not allowed to talk to this daemon (another user), or a capture permission is missing.
    case permissionDenied = "PERMISSION_DENIED"
    /// The upload token is missing, malformed or expired.
    case invalidToken = "INVALID_TOKEN"
    /// Something did not happen in the time allowed.
    case timeout = "TIMEOUT"
    /// A channel stopped producing media while its session is active.
    case channelStalled = "CHANNEL_STALLED"
    /// No capture-agent daemon is listening on the control socket (client side).
    case agentNotRunning = "AGENT_NOT_RUNNING"
    /// The capture endpoint refused a session's upload for good (no such session, it is
    /// closed, a protocol error); the chunks stay in the spool.
    case uploadRefused = "UPLOAD_REFUSED"
    /// What answers at a session's endpoint does not speak the capture uplink protocol
    /// (docs/uplink-protocol.md): its upgrade was refused with an HTTP status, or no welcome
    /// came. VideoDB's own cloud is such a server. Capture goes on into the spool.
    case endpointIncompatible = "ENDPOINT_INCOMPATIBLE"
    /// The monitor the user shared in the desktop's screen-sharing dialog is not the display
    /// channel's (Wayland): nothing is recorded from it.
    case monitorMismatch = "MONITOR_MISMATCH"

    /// Process exit status used by the command-line tools for this code.
    public var exitStatus: Int32 {
        switch self {
        case .invalidRequest: 64      // EX_USAGE
        case .invalidChannels: 65     // EX_DATAERR
        case .displayUnavailable: 69  // EX_UNAVAILABLE
        case .audioUnavailable: 69
        case .ioError: 74             // EX_IOERR
        case .encoderError: 70        // EX_SOFTWARE
        case .internalError: 70
        case .invalidState: 75        // EX_TEMPFAIL: try again when the state allows
        case .unknownCommand: 64
        case .requestTooLarge: 64
        case .permissionDenied: 77    // EX_NOPERM
        case .invalidToken: 77
        case .timeout: 75
        case .channelStalled: 70
        case .uploadRefused: 69
        case .endpointIncompatible: 69
        case .agentNotRunning: 69
        case .monitorMismatch: 65
        }
    }
}

/// The one error type that crosses module boundaries: a stable code plus a
/// message meant for a human (what happened and, where possible, what to do).
public struct CaptureError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: CaptureErrorCode
    public var message: String

    public init(_ code: CaptureErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// The product version, shared by capture-agent, capturectl and the protocol's `ping`/`init` replies.
public enum CaptureAgentVersion {
    public static let string = "0.2.0"
}
