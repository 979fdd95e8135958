import CaptureControl
import CaptureCore
import CaptureConcurrency
import CaptureSystem
import Dispatch
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
public import Foundation
#endif
public import Logging
import Synchronization
import SystemdSupport
#if canImport(Glibc)
import Glibc
#endif

/// The long-running capture-agent: one SessionController, served on the
/// control socket (its own, or the one systemd passes) or on stdin/stdout.
///
/// Lifecycle: listen -> READY=1 -> serve (WATCHDOG=1 every half watchdog
/// interval, from the I/O queue, so a wedged I/O queue gets us restarted)
/// -> SIGTERM / SIGINT / `shutdown` / end of stdin -> STOPPING=1 -> the
/// running session closes its chunks -> exit 0.
public final class Daemon: Sendable {
    public enum Transport: Sendable {
        case socket
        case stdio
    }

    private let configuration: DaemonConfiguration
    private let logger: Logger
    private let transport: Transport
    private let events = EventBus()
    private let ioQueue = DispatchQueue(label: "capture-agent.io", qos: .userInitiated)
    private let finished = DispatchSemaphore(value: 0)
    private let shuttingDown = Atomic<Bool>(false)
    private let signalsReceived = Atomic<Int>(0)

    public init(configuration: DaemonConfiguration, transport: Transport, logger: Logger) {
        self.configuration = configuration
        self.transport = transport
        self.logger = logger
    }

    /// Runs until shutdown; returns the exit status.
    public func run() -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        let controller = SessionController(configuration: configuration, logger: logger, events: events)
        // Uploads an earlier run of the agent did not finish go on first.
        controller.resumeSpooledUploads()
        let service = ControlService(controller: controller, events: events, configuration: configuration, logger: logger,
                                     onShutdown: { [self] in requestShutdown(reason: "shutdown command") })

        var server: ControlServer?
        var stdio: StdioTransport?
        var ownSocketPath: String?
        switch transport {
        case .socket:
            let listenFD: Int32
            do throws(CaptureError) {
                (listenFD, ownSocketPath) = try openListeningSocket()
            } catch {
                logger.critical("cannot serve the control socket", metadata: ["error": "\(error)"])
                StandardStream.error.write("capture-agent: \(error.code.rawValue): \(error.message)\n")
                return error.code.exitStatus
            }
            let s = ControlServer(listeningSocket: listenFD, service: service, logger: logger, queue: ioQueue)
            s.start()
            server = s
        case .stdio:
            let t = StdioTransport(service: service, logger: logger, ioQueue: ioQueue,
                                   onEnd: { [self] in requestShutdown(reason: "end of stdin") })
            t.start()
            stdio = t
        }

        // The signals are blocked (capture-agent blocks them first thing, see SignalBlocking):
        // one sent before these sources exist waits for them.
        SignalBlocking.block([SIGTERM, SIGINT, SIGHUP])
        let signals = [SIGTERM, SIGINT, SIGHUP].map { sig -> any DispatchSourceSignal in
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [self] in
                if sig == SIGHUP {
                    logger.notice("SIGHUP ignored; restart the service to apply a new configuration")
                    return
                }
                // A second *signal* means "now". (The SDK sends `shutdown` and
                // then SIGTERM: that is one signal, and the chunks still close.)
                if signalsReceived.add(1, ordering: .relaxed).newValue > 1 {
                    logger.warning("second signal; exiting without waiting")
                    _exit(128 + sig)
                }
                requestShutdown(reason: sig == SIGTERM ? "SIGTERM" : "SIGINT")
            }
            source.activate()
            return source
        }

        var watchdog: RepeatingTimer?
        if let interval = SystemdNotifier.watchdogInterval(unsetEnvironment: true) {
            let half = max(interval.nanoseconds / 2, 100_000_000)
            watchdog = RepeatingTimer(queue: ioQueue, interval: .nanoseconds(Int(half))) {
                SystemdNotifier.watchdog()
            }
            logger.info("systemd watchdog enabled", metadata: ["pingEveryMs": "\(half / 1_000_000)"])
        }

        let where_ = transport == .stdio ? "stdin/stdout" : configuration.socketPath
        SystemdNotifier.ready(status: "listening on \(where_)")
        logger.info("capture-agent ready", metadata: ["control": "\(where_)", "pid": "\(getpid())",
                                                      "config": "\(configuration.configFile ?? "defaults")"])

        finished.wait()

        SystemdNotifier.stopping(status: "closing the current chunks")
        logger.info("shutting down")
        controller.stopForShutdown()
        watchdog?.cancel()
        server?.stop()
        stdio?.stop()
        if let ownSocketPath { unlink(ownSocketPath) }
        signals.forEach { $0.cancel() }
        logger.info("capture-agent stopped")
        return 0
    }

    /// Starts an orderly shutdown (idempotent; from any thread).
    public func requestShutdown(reason: String) {
        guard !shuttingDown.exchange(true, ordering: .acquiringAndReleasing) else { return }
        logger.notice("shutdown", metadata: ["reason": "\(reason)"])
        finished.signal()
    }

    /// systemd's socket if we were socket-activated, else our own at the
    /// configured path. Returns the descriptor and, for our own, its path.
    private func openListeningSocket() throws(CaptureError) -> (Int32, String?) {
        let activated = SocketActivation.takeListeningSockets()
        if !activated.isEmpty {
            // Prefer the one named "control"; close any other we do not use.
            let chosen = activated.first { $0.name == "control" } ?? activated[0]
            for other in activated where other.fd != chosen.fd { close(other.fd) }
            do {
                try SocketActivation.requireListeningUnixStreamSocket(chosen.fd)
            } catch {
                throw CaptureError(.invalidRequest, "the socket systemd passed is unusable: \(error.message)")
            }
            logger.info("using the socket passed by systemd", metadata: ["fd": "\(chosen.fd)", "name": "\(chosen.name ?? "-")"])
            return (chosen.fd, nil)
        }
        return (try ControlSocket.listen(path: configuration.socketPath), configuration.socketPath)
    }
}
