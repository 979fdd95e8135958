import ArgumentParser
import CaptureCore
import CapturePipeline
import Foundation

struct ChannelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "channels",
        abstract: "List the channels this machine offers (monitors, microphones, system audio).")

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let (channels, problems) = ChannelCatalog.list(displayName: global.display)
        for problem in problems {
            FileHandle.standardError.write(Data("capture-agent: warning: \(problem)\n".utf8))
        }
        if channels.isEmpty, let first = problems.first {
            fail(with: first, json: global.json)
        }
        if global.json {
            struct Listing: Encodable { var channels: [ChannelInfo] }
            writeJSON(Listing(channels: channels))
        } else {
            let width = channels.map(\.id.count).max() ?? 0
            for c in channels {
                writeLine(c.id.padding(toLength: width + 2, withPad: " ", startingAt: 0)
                          + c.type.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0) + c.name)
            }
        }
    }
}
