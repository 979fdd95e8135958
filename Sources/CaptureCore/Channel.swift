/// Audio or video, as the VideoDB SDK's `type` field spells it.
public enum MediaType: String, Sendable, Codable, Hashable {
    case audio
    case video
}

/// A capture channel id in the VideoDB runtime's vocabulary:
/// `display:N` (1-based RandR monitor), `mic:default`, `mic:<source>`,
/// `system_audio:default` (monitor of the default sink, following it),
/// `system_audio:<sink>`.
public enum ChannelID: Hashable, Sendable, CustomStringConvertible, Comparable {
    case display(Int)
    case microphone(String?)      // nil = the server's default source
    case systemAudio(String?)     // nil = monitor of the server's default sink

    public init(parsing text: String) throws(CaptureError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw CaptureError(.invalidChannels, "channel id '\(text)' has no prefix; expected display:N, mic:NAME or system_audio:NAME")
        }
        let prefix = text[..<colon]
        let rest = String(text[text.index(after: colon)...])
        guard !rest.isEmpty else {
            throw CaptureError(.invalidChannels, "channel id '\(text)' has an empty name")
        }
        switch prefix {
        case "display", "screen":
            guard let n = Int(rest), n >= 1, n <= 64 else {
                throw CaptureError(.invalidChannels, "channel id '\(text)': display numbers are 1-based integers")
            }
            self = .display(n)
        case "mic":
            self = .microphone(rest == "default" ? nil : rest)
        case "system_audio":
            self = .systemAudio(rest == "default" ? nil : rest)
        default:
            throw CaptureError(.invalidChannels, "channel id '\(text)': unknown prefix '\(prefix)' (display, mic, system_audio)")
        }
    }

    public var description: String {
        switch self {
        case .display(let n): "display:\(n)"
        case .microphone(let name): "mic:\(name ?? "default")"
        case .systemAudio(let name): "system_audio:\(name ?? "default")"
        }
    }

    public var mediaType: MediaType {
        if case .display = self { return .video }
        return .audio
    }

    /// The track name used by pause/resume (`screen`, `mic`, `system_audio`).
    public var trackName: String {
        switch self {
        case .display: "screen"
        case .microphone: "mic"
        case .systemAudio: "system_audio"
        }
    }

    /// A file-system-safe directory name for the spool (`display-1`, `mic-default`, ...).
    public var directoryName: String {
        var out = ""
        for scalar in description.unicodeScalars {
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", "-", "_", ".": out.unicodeScalars.append(scalar)
            case ":": out += "-"
            default: out += "_"
            }
        }
        return out
    }

    public static func < (lhs: ChannelID, rhs: ChannelID) -> Bool {
        func rank(_ c: ChannelID) -> Int {
            switch c { case .display: 0; case .microphone: 1; case .systemAudio: 2 }
        }
        if rank(lhs) != rank(rhs) { return rank(lhs) < rank(rhs) }
        if case .display(let a) = lhs, case .display(let b) = rhs { return a < b }
        return lhs.description < rhs.description
    }
}

/// One entry of a channel listing: stable id, human name, media type.
public struct ChannelInfo: Sendable, Hashable, Codable {
    public var id: String
    public var name: String
    public var type: MediaType

    public init(id: ChannelID, name: String) {
        self.id = id.description
        self.name = name
        self.type = id.mediaType
    }

    enum CodingKeys: String, CodingKey {
        case id = "channel_id"
        case name
        case type
    }
}
