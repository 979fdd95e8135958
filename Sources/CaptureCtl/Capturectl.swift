import ArgumentParser
import CaptureControl
import CaptureCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

@main
struct Capturectl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capturectl",
        abstract: "Control a running capture-agent daemon over its control socket.",
        discussion: """
            Exit status: 0 on success; on a daemon error the status of its code \
            (64 INVALID_REQUEST and usage errors, 69 AGENT_NOT_RUNNING or DISPLAY_UNAVAILABLE, \
            75 INVALID_STATE, 77 INVALID_TOKEN, ...). Errors go to stderr as \
            `capturectl: CODE: message`; with --json, also {"error":{"code","message"}} on stdout.

            Shell completions: capturectl --generate-completion-script bash|zsh|fish
            """,
        version: CaptureAgentVersion.string,
        subcommands: [
            ChannelsCommand.self, StartCommand.self, StopCommand.self, PauseCommand.self, ResumeCommand.self,
            StatusCommand.self, EventsCommand.self, TokenCommand.self, PingCommand.self,
        ])

    /// ArgumentParser's own handling, plus a JSON error object for usage errors under --json.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) != .success, !(error is CaptureError), CommandLine.arguments.contains("--json") {
                Output.jsonError(code: CaptureErrorCode.invalidRequest.rawValue, message: message(for: error))
            }
            exit(withError: error)
        }
    }
}
