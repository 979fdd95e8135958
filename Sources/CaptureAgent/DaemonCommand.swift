import ArgumentParser
import CaptureCore
import CaptureConcurrency
import CaptureSystem
import CaptureDaemon
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging

/// `capture-agent` with no subcommand: the daemon, in the foreground, as systemd starts it.
struct DaemonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon",
        abstract: "Run the capture daemon in the foreground (the default when no subcommand is given).",
        discussion: """
            Serves the control protocol on $XDG_RUNTIME_DIR/capture-agent/control.sock (or the socket systemd
            passes), or on stdin/stdout with --stdio. Settings: built-in defaults, then
            $XDG_CONFIG_HOME/capture-agent/config.toml, then CAPTURE_AGENT_<KEY> environment variables, then flags.
            See `capture-agent --print-config` and docs/control-protocol.md.
            """)

    @Flag(name: .long, help: "Serve one client on stdin/stdout instead of the socket (how the VideoDB SDK runs its runtime). Logs go to stderr.")
    var stdio = false

    @Option(name: .long, help: ArgumentHelp("Where to serve: socket, stdio, or auto: stdio when stdin and stdout are both pipes or sockets and systemd passed no socket (how the VideoDB SDK starts its runtime, with no arguments), else the socket.", valueName: "auto|socket|stdio"))
    var transport: String = "auto"

    @Flag(name: .long, help: "Print the effective configuration (and where each value came from) and exit.")
    var printConfig = false

    @Option(name: .long, help: "Configuration file (default: $XDG_CONFIG_HOME/capture-agent/config.toml, if it exists).")
    var config: String?

    @Option(name: .long, help: "Control socket path.")
    var socket: String?

    @Option(name: .long, help: "Video frames per second, 1-60.")
    var fps: Int?

    @Option(name: .long, help: "Chunk duration, 0.5s-10s.")
    var chunk: String?

    @Option(name: .long, help: "x264 preset.")
    var preset: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?

    @Option(name: .long, help: "X11 display to capture (default: $DISPLAY).")
    var display: String?

    @Option(name: .customLong("set"), help: ArgumentHelp("Any setting, as in config.toml (repeatable), e.g. --set crf=28.", valueName: "key=value"))
    var settings: [String] = []

    func run() throws {
        // First, while this is the only thread: termination signals wait for the daemon's
        // sources (see SignalBlocking) instead of being lost or killing it during start-up.
        SignalBlocking.block([SIGTERM, SIGINT, SIGHUP])
        SignalBlocking.testOnlySetupDelay()
        ProcessMemory.configure()
        var flags: [(key: String, value: String)] = []
        for item in settings {
            guard let eq = item.firstIndex(of: "=") else {
                fail(with: CaptureError(.invalidRequest, "--set takes key=value, got '\(item)'"), json: false)
            }
            flags.append((item[..<eq].trimmingWhitespace(newlines: false), String(item[item.index(after: eq)...])))
        }
        if let socket { flags.append(("socket", socket)) }
        if let fps { flags.append(("fps", String(fps))) }
        if let chunk { flags.append(("chunk", chunk)) }
        if let preset { flags.append(("preset", preset)) }
        if let logLevel { flags.append(("log_level", logLevel)) }
        if let display { flags.append(("display", display)) }

        let configuration: DaemonConfiguration
        do throws(CaptureError) {
            configuration = try DaemonConfiguration.load(file: config, flags: flags)
        } catch {
            fail(with: error, json: false)
        }
        if printConfig {
            StandardStream.output.write(configuration.rendered())
            return
        }
        LoggingSystem.bootstrapOnce()
        var logger = Logger(label: "capture-agent")
        logger.logLevel = Logger.Level(rawValue: configuration.logLevel) ?? .info
        let chosen: Daemon.Transport
        switch (stdio, transport) {
        case (true, _), (false, "stdio"): chosen = .stdio
        case (false, "socket"): chosen = .socket
        case (false, "auto"): chosen = Self.stdioLooksPiped() ? .stdio : .socket
        default: fail(with: CaptureError(.invalidRequest, "--transport takes auto, socket or stdio"), json: false)
        }
        if chosen == .stdio && !stdio && transport == "auto" {
            logger.info("stdin and stdout are pipes: serving the control protocol on them (--transport socket to override)")
        }
        let daemon = Daemon(configuration: configuration, transport: chosen, logger: logger)
        let status = daemon.run()
        if status != 0 { throw ExitCode(status) }
    }

    /// Both standard streams are pipes or sockets, and systemd passed no socket.
    static func stdioLooksPiped() -> Bool {
        if ProcessInfo.processInfo.environment["LISTEN_FDS"] != nil { return false }
        func piped(_ fd: Int32) -> Bool {
            var info = stat()
            guard fstat(fd, &info) == 0 else { return false }
            let kind = info.st_mode & S_IFMT
            return kind == S_IFIFO || kind == S_IFSOCK
        }
        return piped(STDIN_FILENO) && piped(STDOUT_FILENO)
    }
}
