public import CaptureCore
import Foundation

extension RecordingSummary {
    /// What `capture-agent record --json` printed (the summary, as stopRecording's).
    public init(json text: String) throws {
        self = try JSONCoding.decoder.decode(RecordingSummary.self, from: Data(text.utf8))
    }

    /// The counters of channel `id`.
    public func channel(_ id: ChannelID) -> ChannelStatsSnapshot? {
        channels.first { $0.channelID == id }
    }
}

extension ChannelStatsSnapshot {
    /// `channel` parsed (nil: not a channel id).
    public var channelID: ChannelID? { try? ChannelID(parsing: channel) }
}
