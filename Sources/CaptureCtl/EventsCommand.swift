import ArgumentParser
import CaptureControl
import CaptureCore

struct EventsCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Print the daemon's recent events; with --follow, keep printing new ones (subscribeEvents).",
        discussion: """
            One line per event: `TIME NAME session=ID channel=ID key=value...`; with --json one \
            compact JSON object per line. With --follow, runs until Ctrl-C (exit 0) or until the \
            daemon goes away (exit 69).
            """)

    @Flag(name: .long, help: "Keep printing events as they arrive.")
    var follow = false

    @Option(name: .customLong("event"), help: ArgumentHelp(
        "Only this event; repeat for more (\(ControlEventName.allCases.map(\.rawValue).joined(separator: ", "))).",
        valueName: "name"), completion: .list(ControlEventName.allCases.map(\.rawValue)))
    var events: [String] = []

    @OptionGroup var connection: ConnectionOptions

    func execute() throws(CaptureError) {
        let client = try connection.connect()
        var params: [String: JSONValue] = [:]
        if !events.isEmpty { params["events"] = .array(events.map { .string($0) }) }
        let result = try client.call(.subscribeEvents, params: params, as: SubscriptionResult.self, timeout: .seconds(30))
        if follow { exitZeroOnInterrupt() }
        for event in result.recent ?? [] { show(event) }
        guard follow else { return }
        while true {
            let event: ControlEvent?
            do { event = try client.nextEvent(timeoutNs: 1_000_000_000) } catch { throw daemonWentAway(error, client) }
            if let event {
                show(event)
            } else if client.isClosed {
                throw daemonWentAway(CaptureError(.ioError, "closed"), client)
            }
        }
    }

    /// With --json the event as the daemon sent it (the typed event encodes to the same bytes).
    private func show(_ event: ControlEvent) {
        if connection.json { return Output.json(event, pretty: false) }
        Output.line(Self.line(event))
    }

    /// `2026-11-22T10:00:00.123Z recording-started session=cap-1 channel=display:1 key=value...`: every
    /// field of the payload, whichever event it is.
    static func line(_ event: ControlEvent) -> String {
        var parts = [WallClock.iso8601(nanoseconds: event.timestampUnixNs), event.name.rawValue]
        if let session = event.sessionId { parts.append("session=\(session)") }
        if let channel = event.channel { parts.append("channel=\(channel)") }
        for (key, value) in (event.payload.dataValue.objectValue ?? [:]).sorted(by: { $0.key < $1.key }) {
            parts.append("\(key)=\(Format.value(value))")
        }
        return parts.joined(separator: " ")
    }
}
