import ArgumentParser
import CaptureControl
import CaptureCore

struct ChannelsCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "channels",
        abstract: "List the channels the daemon can record (getChannels).")

    @OptionGroup var connection: ConnectionOptions

    func execute() throws(CaptureError) {
        let value = try connection.connect().call(ControlCommand.getChannels.rawValue, timeout: .seconds(30))
        if connection.json { return Output.json(value) }
        let result = try decodeResult(value, of: .getChannels, as: ChannelsResult.self)
        for problem in result.problems {
            Output.warn("\(problem.code): \(problem.message)")
        }
        if result.channels.isEmpty {
            Output.line("no channels")
        } else {
            var table = Table(headers: ["CHANNEL", "TYPE", "NAME"])
            for c in result.channels {
                table.rows.append([c.channelId, c.type.rawValue, c.name])
            }
            Output.line(table.render())
        }
        Output.line("displays: \(result.displayBackend.backend): \(result.displayBackend.reason)")
    }
}
