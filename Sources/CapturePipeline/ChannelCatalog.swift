public import CaptureCore
public import PulseCapture
public import ScreenCastPortal
public import SessionBus
public import WaylandOutputs
public import X11Capture

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

/// What a listing found: the channels, why a whole family is missing, and which backend
/// serves the displays (and why).
public struct ChannelListing: Sendable {
    public var channels: [ChannelInfo]
    public var problems: [CaptureError]
    public var displayBackend: DisplayBackendChoice
}

/// Finds the channels this machine offers (X11 RandR monitors or a Wayland compositor's
/// outputs, PulseAudio sources and sinks) and checks requested ids against them.
public enum ChannelCatalog {
    /// Every channel on offer, plus the reasons a whole family is missing (no
    /// display, no audio server). Listing never needs a session, nor a dialog.
    public static func list(displayName: String? = nil, backend: DisplayBackendSetting = .auto) -> ChannelListing {
        var channels: [ChannelInfo] = []
        var problems: [CaptureError] = []
        let choice = DisplayBackendChoice.resolve(backend, x11Display: displayName)
        do {
            channels += try displayChannels(displayName: displayName, backend: choice).map(\.info)
        } catch {
            problems.append(error)
        }
        do {
            channels += try audioChannels(AudioServer.snapshot()).map(\.info)
        } catch {
            problems.append(error)
        }
        return ChannelListing(channels: channels, problems: problems, displayBackend: choice)
    }

    static func displayChannels(displayName: String?, backend: DisplayBackendChoice) throws(CaptureError) -> [ResolvedChannel] {
        let monitors: [MonitorInfo]
        switch backend.backend {
        case .x11:
            monitors = try X11Connection(displayName: displayName).monitors()
        case .wayland:
            monitors = try waylandMonitors()
        }
        return monitors.map { m in
            let label = "Display \(m.index) (\(m.name) \(m.width)x\(m.height)+\(m.x)+\(m.y)\(m.isPrimary ? ", primary" : ""))"
            return .display(id: .display(m.index), monitor: m, name: label)
        }
    }

    /// The Wayland session's monitors, from the compositor (no dialog): outputs and their
    /// logical places, the primary from the desktop when it says (GNOME).
    static func waylandMonitors() throws(CaptureError) -> [MonitorInfo] {
        let wayland = try WaylandConnection()
        let outputs = wayland.outputs
        guard !outputs.isEmpty else {
            throw CaptureError(.displayUnavailable, "the Wayland compositor '\(wayland.displayName)' announces no monitor")
        }
        let primary = (try? SessionBus()).flatMap { PrimaryMonitor.connector(bus: $0) }
        return WaylandOutput.numbered(outputs, primary: primary)
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
    static func resolve(_ requested: [ChannelID], displayName: String?, backend: DisplayBackendChoice) throws(CaptureError) -> [ResolvedChannel] {
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
                if displays == nil { displays = try displayChannels(displayName: displayName, backend: backend) }
                guard let match = displays!.first(where: { $0.id == id }) else {
                    let known = displays!.map { $0.id.description }.joined(separator: ", ")
                    let server = backend.backend == .x11 ? "this X server" : "this Wayland desktop"
                    throw CaptureError(.invalidChannels, "\(id) does not exist; \(server) has: \(known)")
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
