import ArgumentParser
import CaptureCore
import CaptureSystem
import CapturePipeline
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

struct ChannelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "channels",
        abstract: "List the channels this machine offers (monitors, microphones, system audio).")

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let listing = ChannelCatalog.list(displayName: global.display, backend: global.displayBackend)
        let (channels, problems) = (listing.channels, listing.problems)
        for problem in problems {
            StandardStream.error.write("capture-agent: warning: \(problem)\n")
        }
        if channels.isEmpty, let first = problems.first {
            fail(with: first, json: global.json)
        }
        if global.json {
            struct Listing: Encodable {
                var channels: [ChannelInfo]
                var displayBackend: DisplayBackendChoice
            }
            writeJSON(Listing(channels: channels, displayBackend: listing.displayBackend))
        } else {
            writeLine("# displays: \(listing.displayBackend.backend.rawValue): \(listing.displayBackend.reason)")
            let width = channels.map(\.id.count).max() ?? 0
            for c in channels {
                writeLine(c.id.padded(toLength: width + 2) + c.type.rawValue.padded(toLength: 7) + c.name)
            }
        }
    }
}
