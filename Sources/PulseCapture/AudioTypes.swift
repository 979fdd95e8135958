public import CaptureCore

/// One PulseAudio device (a source or a sink) as the server names it.
public struct AudioDevice: Sendable, Hashable {
    /// The pulse name, e.g. "spk.monitor", "mic", "alsa_input.pci-0000_00_1f.3.analog-stereo".
    public var name: String
    /// The human name (pulse "description").
    public var description: String
    /// True for a sink's monitor source (`monitor_of_sink != PA_INVALID_INDEX`).
    public var isMonitor: Bool
    /// For a monitor: the name of the sink it monitors.
    public var monitorOfSink: String?

    public init(name: String, description: String, isMonitor: Bool = false, monitorOfSink: String? = nil) {
        self.name = name
        self.description = description
        self.isMonitor = isMonitor
        self.monitorOfSink = monitorOfSink
    }
}

/// What the audio server had at one moment.
public struct AudioServerSnapshot: Sendable {
    /// e.g. "pulseaudio" or "PulseAudio (on PipeWire 0.3.65)".
    public var serverName: String
    public var serverVersion: String
    public var defaultSinkName: String?
    public var defaultSourceName: String?
    /// Every source, monitors included.
    public var sources: [AudioDevice]
    /// Every sink (`isMonitor` is false).
    public var sinks: [AudioDevice]

    public init(serverName: String, serverVersion: String = "", defaultSinkName: String?, defaultSourceName: String?,
                sources: [AudioDevice], sinks: [AudioDevice]) {
        self.serverName = serverName
        self.serverVersion = serverVersion
        self.defaultSinkName = defaultSinkName
        self.defaultSourceName = defaultSourceName
        self.sources = sources
        self.sinks = sinks
    }

    /// Sources that are not monitors (microphones, line inputs, virtual sources).
    public var microphones: [AudioDevice] { sources.filter { !$0.isMonitor } }

    /// The monitor source of `sinkName`, if the server has one.
    public func monitor(ofSink sinkName: String) -> AudioDevice? {
        sources.first { $0.isMonitor && $0.monitorOfSink == sinkName }
    }
}

/// What an `AudioRecorder` records.
public enum AudioCaptureTarget: Sendable, Hashable, CustomStringConvertible {
    /// The server's default source (if that is a monitor, it is still used). Follows the default
    /// source when it changes.
    case defaultMicrophone
    /// A named non-monitor source. Never moved: if it goes away the recorder fails.
    case microphone(String)
    /// The monitor of the default sink; follows the default sink when it changes.
    case defaultSystemAudio
    /// The monitor of the named sink. Never moved: if the sink goes away the recorder fails.
    case systemAudio(sinkName: String)

    /// The corresponding CaptureCore channel id.
    public var channelID: ChannelID {
        switch self {
        case .defaultMicrophone: .microphone(nil)
        case .microphone(let name): .microphone(name)
        case .defaultSystemAudio: .systemAudio(nil)
        case .systemAudio(let sink): .systemAudio(sink)
        }
    }

    /// Maps `mic:*` / `system_audio:*` channel ids; nil for display channels.
    public init?(channel: ChannelID) {
        switch channel {
        case .display: return nil
        case .microphone(nil): self = .defaultMicrophone
        case .microphone(let name?): self = .microphone(name)
        case .systemAudio(nil): self = .defaultSystemAudio
        case .systemAudio(let sink?): self = .systemAudio(sinkName: sink)
        }
    }

    /// True when the recorder follows the server's default device.
    public var followsDefault: Bool {
        switch self {
        case .defaultMicrophone, .defaultSystemAudio: true
        case .microphone, .systemAudio: false
        }
    }

    public var description: String { channelID.description }
}

/// Receives audio on the recorder's own thread (the pulse mainloop thread), with the recorder's
/// internal lock held. Implementations must not block. Calling `AudioRecorder.stop()` from inside
/// a callback is allowed (no further callbacks follow it).
public protocol AudioCaptureSink: AnyObject, Sendable {
    /// Interleaved stereo Float32 at 48 kHz (`AudioFormat`). `samples` is valid only during the call;
    /// blocks are of any size (usually 20 ms, at times a few frames, up to 1024 frames).
    /// `captureTime`: CLOCK_MONOTONIC ns (`MonotonicClock`) at which the FIRST frame of `samples`
    /// entered the source; for a monitor (system audio), when it is heard, i.e. including the
    /// sink's latency, as libpulse counts it. Smoothed so that consecutive blocks follow the sample
    /// count (strictly increasing, block-to-block jitter of microseconds) while tracking the
    /// device clock's drift. After a start, move or reconnect the first audio is held back until
    /// the stream's latency has settled (typically 0.1-0.4 s, at most 0.5 s), then delivered in
    /// full with timestamps from the settled time line.
    func audioCapture(didCapture samples: UnsafeBufferPointer<Float>, frameCount: Int, captureTime: Int64)
    /// The stream was interrupted and resumed (moved to another device, default changed, suspended,
    /// hole in the stream, server reconnect): the next block's captureTime may jump; the caller fills
    /// the gap with silence. Reported once per gap.
    func audioCaptureDidDiscontinue(reason: String)
    /// Fatal for this recorder (server gone and not back within the retry window, device removed):
    /// `.audioUnavailable` or `.invalidChannels`. No audio callbacks follow it.
    func audioCapture(didFail error: CaptureError)
}
