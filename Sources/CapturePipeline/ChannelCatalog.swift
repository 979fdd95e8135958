import CaptureCore
import PulseCapture
import X11Capture

/// A channel ready to record: what it is and where its data comes from.
enum ResolvedChannel: Sendable {
    case display(id: ChannelID, monitor: MonitorInfo, name: String)
    case audio(id: ChannelID, target: AudioCaptureTarget, name: String)

    var id: ChannelID {
        switch self {
        case .display(let id, _, _), .audio(let id, _, _): id
        }
    }

    var info: ChannelInfo {
        switch self {
        case .display(let id, _, let name), .audio(let id, _, let name): ChannelInfo(id: id, name: name)
        }
    }
}

/// Finds the channels this machine offers (RandR monitors, PulseAudio sources
/// and sinks) and checks requested ids against them.
public enum ChannelCatalog {
    /// Every channel on offer, plus the reasons a whole family is missing (no
    /// X server, no audio server). Listing never needs a session.
    public static func list(displayName: String? = nil) -> (channels: [ChannelInfo], problems: [CaptureError]) {
        var channels: [ChannelInfo] = []
        var problems: [CaptureError] = []
        do {
            channels += try displayChannels(displayName: displayName).map(\.info)
        } catch {
            problems.append(error)
        }
        do {
            channels += try audioChannels(AudioServer.snapshot()).map(\.info)
        } catch {
            problems.append(error)
        }
        return (channels, problems)
    }

    static func displayChannels(displayName: String?) throws(CaptureError) -> [ResolvedChannel] {
        let connection = try X11Connection(displayName: displayName)
        return try connection.monitors().map { m in
            let label = "Display \(m.index) (\(m.name) \(m.width)x\(m.height)+\(m.x)+\(m.y)\(m.isPrimary ? ", primary" : ""))"
            return .display(id: .display(m.index), monitor: m, name: label)
        }
    }

    static func audioChannels(_ server: AudioServerSnapshot) -> [ResolvedChannel] {
        var out: [ResolvedChannel] = []
        let microphones = server.sources.filter { !$0.isMonitor }
        if let name = server.defaultSourceName {
            let description = server.sources.first { $0.name == name }?.description ?? name
            out.append(.audio(id: .microphone(nil), target: .defaultMicrophone, name: "Default microphone (\(description))"))
        }
        for source in microphones {
            out.append(.audio(id: .microphone(source.name), target: .microphone(source.name), name: source.description))
        }
        if let sink = server.defaultSinkName {
            let description = server.sinks.first { $0.name == sink }?.description ?? sink
            out.append(.audio(id: .systemAudio(nil), target: .defaultSystemAudio,
                              name: "System audio (monitor of the default output, now \(description))"))
        }
        for sink in server.sinks {
            out.append(.audio(id: .systemAudio(sink.name), target: .systemAudio(sinkName: sink.name),
                              name: "System audio of \(sink.description)"))
        }
        return out
    }

    /// Resolves the requested ids (or the defaults when `requested` is empty).
    /// Throws DISPLAY_UNAVAILABLE / AUDIO_UNAVAILABLE when a needed server is
    /// missing, INVALID_CHANNELS for ids that do not exist.
    static func resolve(_ requested: [ChannelID], displayName: String?) throws(CaptureError) -> [ResolvedChannel] {
        let wantsDefaults = requested.isEmpty
        var ids = requested
        if wantsDefaults { ids = [.display(1), .microphone(nil), .systemAudio(nil)] }
        var seen = Set<ChannelID>()
        for id in ids where !seen.insert(id).inserted {
            throw CaptureError(.invalidChannels, "channel \(id) is listed twice")
        }

        var displays: [ResolvedChannel]?
        var audio: [ResolvedChannel]?
        var out: [ResolvedChannel] = []
        for id in ids {
            switch id {
            case .display:
                if displays == nil { displays = try displayChannels(displayName: displayName) }
                guard let match = displays!.first(where: { $0.id == id }) else {
                    let known = displays!.map { $0.id.description }.joined(separator: ", ")
                    throw CaptureError(.invalidChannels, "\(id) does not exist; this X server has: \(known)")
                }
                out.append(match)
            case .microphone, .systemAudio:
                if audio == nil { audio = audioChannels(try AudioServer.snapshot()) }
                guard let match = audio!.first(where: { $0.id == id }) else {
                    if wantsDefaults { continue } // defaults are taken "where present"
                    let known = audio!.map { $0.id.description }.joined(separator: ", ")
                    throw CaptureError(.invalidChannels, "\(id) does not exist; the audio server offers: \(known)")
                }
                out.append(match)
            }
        }
        return out
    }
}
