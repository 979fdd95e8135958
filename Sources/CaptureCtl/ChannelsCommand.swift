import ArgumentParser
import CaptureControl
import CaptureCore

struct ChannelsCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "channels",
        abstract: "List the channels the daemon can record (getChannels).")

    @OptionGroup var connection: ConnectionOptions

    func execute() throws(CaptureError) {
        let result = try connection.connect().call(ControlCommand.getChannels.rawValue, timeout: .seconds(30))
        if connection.json { return Output.json(result) }
        for problem in result["problems"]?.arrayValue ?? [] {
            Output.warn("\(problem["code"]?.stringValue ?? "?"): \(problem["message"]?.stringValue ?? "")")
        }
        let channels = result["channels"]?.arrayValue ?? []
        guard !channels.isEmpty else { return Output.line("no channels") }
        var table = Table(headers: ["CHANNEL", "TYPE", "NAME"])
        for c in channels {
            table.rows.append([c["channel_id"]?.stringValue ?? "?", c["type"]?.stringValue ?? "-", c["name"]?.stringValue ?? ""])
        }
        Output.line(table.render())
    }
}
