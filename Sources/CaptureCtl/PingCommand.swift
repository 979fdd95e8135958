import ArgumentParser
import CaptureControl
import CaptureCore

struct PingCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "ping",
        abstract: "Check that the daemon answers.")

    @OptionGroup var connection: ConnectionOptions

    func execute() throws(CaptureError) {
        let client = try connection.connect()
        let sent = MonotonicClock.now()
        let value = try client.call(ControlCommand.ping.rawValue, timeout: .seconds(10))
        let roundTrip = Double(MonotonicClock.now() - sent) / 1e6
        if connection.json { return Output.json(value) }
        let info = try decodeResult(value, of: .ping, as: DaemonInfo.self)
        Output.line("capture-agent \(info.version) (pid \(info.pid), up \(Format.duration(ns: info.uptimeNs))) "
            + "answered in \(roundTrip.fixed(1)) ms")
    }
}
