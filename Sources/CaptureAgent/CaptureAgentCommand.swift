public import ArgumentParser
import CaptureCore
import CaptureSystem
public import CapturePipeline
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging

@main
struct CaptureAgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture-agent",
        abstract: "The Linux capture runtime: screen, microphone and system audio into media chunks.",
        version: CaptureAgentVersion.string,
        subcommands: [DaemonCommand.self, ChannelsCommand.self, RecordCommand.self, UploadCommand.self],
        defaultSubcommand: DaemonCommand.self)
}

/// Options every subcommand shares.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = ProcessInfo.processInfo.environment["CAPTURE_AGENT_LOG_LEVEL"] ?? "info"

    @Option(name: .long, help: "X11 display to capture (default: $DISPLAY).")
    var display: String?

    @Option(name: .long, help: ArgumentHelp(
        "Where display channels come from: auto (Wayland in a Wayland session, else X11), x11 or wayland.",
        discussion: "In a Wayland session the X11 DISPLAY belongs to XWayland, which shows X11 windows only; x11 uses it anyway. Default: $CAPTURE_AGENT_DISPLAY_BACKEND, else auto."))
    var displayBackend: DisplayBackendSetting = DisplayBackendSetting(
        rawValue: ProcessInfo.processInfo.environment["CAPTURE_AGENT_DISPLAY_BACKEND"]?.lowercased() ?? "") ?? .auto

    @Flag(name: .long, help: "Machine-readable JSON on stdout.")
    var json = false

    func makeLogger() throws -> Logger {
        guard let level = Logger.Level(rawValue: logLevel.lowercased()) else {
            throw CaptureError(.invalidRequest, "unknown log level '\(logLevel)'")
        }
        LoggingSystem.bootstrapOnce()
        var logger = Logger(label: "capture-agent")
        logger.logLevel = level
        return logger
    }
}

extension DisplayBackendSetting: ExpressibleByArgument {}

extension LoggingSystem {
    private static let once: Void = LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
    static func bootstrapOnce() { _ = once }
}

/// Writes a CaptureError the same way everywhere and exits with its status.
func fail(with error: CaptureError, json: Bool) -> Never {
    StandardStream.error.write("capture-agent: \(error.code.rawValue): \(error.message)\n")
    if json {
        let object = JSONValue.object(["error": .object(["code": .string(error.code.rawValue), "message": .string(error.message)])])
        // Sorted keys and '/' escaped as "\/": the bytes JSONSerialization wrote here before.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        if let data = try? encoder.encode(object) {
            StandardStream.output.write(data + Data("\n".utf8))
        }
    }
    exit(error.code.exitStatus)
}

func writeJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
    if let data = try? encoder.encode(value) {
        StandardStream.output.write(data + Data("\n".utf8))
    }
}

func writeLine(_ text: String) {
    StandardStream.output.write(text + "\n")
}
