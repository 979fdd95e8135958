/// Stable error codes of the uplink protocol: the `code` of an `error`
/// message. The raw values are part of the wire contract; never rename one.
public enum UplinkErrorCode: String, Codable, Sendable, CaseIterable {
    // Protocol errors: the endpoint sends the error, then closes with 4000.
    /// A binary message that is not a chunk frame (magic, header length, JSON).
    case badFrame = "bad-frame"
    /// A text message that is not JSON or not one of the protocol's messages.
    case badMessage = "bad-message"
    /// A chunk or `end` before the hello, or a second hello.
    case helloExpected = "hello-expected"
    /// The hello is malformed (no channels, a bad channel id, duplicate ids, a bad codec).
    case badHello = "bad-hello"
    /// The hello names other channels than the session's first hello did.
    case channelMismatch = "channel-mismatch"

    // Chunk errors: the chunk is refused (not stored, not acknowledged); the connection stays open.
    /// The header names a channel the hello did not.
    case unknownChannel = "unknown-channel"
    /// The frame's payload is not `bytes` long.
    case sizeMismatch = "size-mismatch"
    /// The payload's SHA-256 is not the header's `sha256`.
    case hashMismatch = "hash-mismatch"
    /// `seq` is beyond the next one expected: an earlier chunk is missing. `expectedSeq` says which.
    case seqGap = "seq-gap"
    /// `seq` was stored already, with other bytes: a resend must be the same chunk.
    case seqConflict = "seq-conflict"
    /// The channel's final chunk is stored: nothing more is accepted for it.
    case channelComplete = "channel-complete"
    /// A chunk larger than the welcome's `maxChunkBytes`, or a header field out of range.
    case badChunk = "bad-chunk"
    /// `end` before every channel's final chunk is stored; the message lists what is missing.
    case incomplete = "incomplete"
    /// The endpoint could not store the chunk (disk full, I/O error). Resend later.
    case storageFailed = "storage-failed"
    /// The chunk would take the session or the account past a storage quota (bytes,
    /// chunks); the connection then closes with 4014.
    case quotaExceeded = "quota-exceeded"
    /// The chunk is not MPEG-TS, or its media's timestamps (PES PTS) lie outside the
    /// header's `startPtsNs ... startPtsNs + durationNs` by more than 2 s. Not stored.
    case mediaMismatch = "media-mismatch"

    // Refusal of a hello: the endpoint sends the error, then closes with 4015.
    /// The endpoint is overloaded (its budget of uplink bytes in memory is half spent):
    /// try again after `retryAfterMs`.
    case busy = "busy"
}

/// WebSocket close codes the endpoint uses. 4000-4999 are the application's
/// range (RFC 6455 7.4.2). A client reconnects after 1001, 1011 and 4002; the
/// others mean that reconnecting with the same hello cannot succeed.
public enum UplinkCloseCode: UInt16, Sendable, CaseIterable {
    /// After `ended`: the session's stream is complete.
    case normal = 1000
    /// The endpoint is shutting down. Reconnect.
    case goingAway = 1001
    /// The endpoint failed (storage). Reconnect and resume.
    case internalError = 1011
    /// A protocol error; the `error` message before the close says which.
    case protocolError = 4000
    /// No hello within the hello timeout.
    case helloTimeout = 4001
    /// A newer connection for the same session took over. Do not reconnect from here.
    case superseded = 4002
    /// The session is stopped, failed or exported: it accepts no more chunks.
    case sessionClosed = 4003
    /// No such session (or it belongs to another account than the token's).
    case sessionNotFound = 4004
    /// The hello's `protocolVersion` is not one the endpoint speaks.
    case unsupportedProtocol = 4005
    /// The token is unknown or malformed.
    case tokenInvalid = 4010
    /// The token's lifetime is over (at the hello, or while the connection was open).
    case tokenExpired = 4011
    /// The token was revoked.
    case tokenRevoked = 4012
    /// Another token of the account streams this session and is still valid: only that
    /// token (or, once it has expired or was revoked, a new one) may upload it.
    case anotherTokenStreams = 4013
    /// A quota of the account or the session is used up (sessions, bytes, chunks,
    /// connections); the reason says which. Reconnecting cannot succeed until it frees up.
    case quotaExceeded = 4014
    /// Too many connections right now (from this address, of this account, or in all), or
    /// the endpoint is overloaded (a `busy` error before the close says how long to wait):
    /// reconnect after the backoff, and not before the `busy` error's `retryAfterMs`.
    case tryLater = 4015
}

/// An uplink protocol error with its stable code.
public struct UplinkError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: UplinkErrorCode
    public var message: String
    /// The chunk the error is about, when it is about one.
    public var channelId: String?
    public var seq: Int?

    public init(_ code: UplinkErrorCode, _ message: String, channelId: String? = nil, seq: Int? = nil) {
        self.code = code
        self.message = message
        self.channelId = channelId
        self.seq = seq
    }

    /// The `error` message that reports this error to the peer.
    public var wireMessage: UplinkErrorMessage {
        UplinkErrorMessage(code: code, message: message, channelId: channelId, seq: seq)
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// A short, single-line account of a decoding error (never the input itself).
    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "missing field '\(key.stringValue)'"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return "wrong type at '\(path)'"
        case DecodingError.dataCorrupted(let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? "not valid JSON" : "invalid value at '\(path)'"
        default: return "not valid JSON"
        }
    }
}
