import CaptureControl
import CaptureCore
import CapturePipeline
import Dispatch
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
public import Logging
import Synchronization

/// One connected client, whatever the transport.
public protocol ControlClientHandle: AnyObject, Sendable {
    /// Unique per daemon process.
    var clientId: Int { get }
    /// Queues a framed line for the client; never blocks. A client that does
    /// not read falls behind and is disconnected by its transport.
    func send(_ line: [UInt8])
    /// Queues the one response to a request line (`send` by default). A
    /// transport that counts unanswered requests (the socket: a client that
    /// shut down its sending side still gets its answers) overrides it.
    func respond(_ line: [UInt8])
}

extension ControlClientHandle {
    public func respond(_ line: [UInt8]) { send(line) }
}

/// The command set, shared by every transport: parses a line, runs the
/// command, answers exactly once. Slow commands (device probing, start, stop)
/// answer later from another queue; everything else answers at once.
public final class ControlService: Sendable {
    public static let version = CaptureAgentVersion.string
    public static let protocolVersion = 1

    private let controller: SessionController
    private let events: EventBus
    private let logger: Logger
    private let displayName: String?
    private let displayBackend: DisplayBackendSetting
    private let drawCursor: Bool
    private let screenConsentTimeout: Duration
    private let startedMonotonic = MonotonicClock.now()
    /// Serial: one device probe at a time (each opens an X and a PulseAudio
    /// connection), however many clients ask at once. The libXext race of
    /// concurrent X opens is handled where it lives, in X11Connection.
    private let work = DispatchQueue(label: "capture-agent.control.work", qos: .userInitiated)
    /// Serial: one screen-sharing dialog at a time, kept off `work` (a dialog may wait a
    /// minute for the user; listing must not).
    private let consent = DispatchQueue(label: "capture-agent.control.consent", qos: .userInitiated)
    private let onShutdown: @Sendable () -> Void
    private let clientCount = Atomic<Int>(0)
    private let requests = Atomic<Int>(0)
    private let badRequests = Atomic<Int>(0)

    public init(controller: SessionController, events: EventBus, configuration: DaemonConfiguration, logger: Logger,
                onShutdown: @escaping @Sendable () -> Void) {
        self.controller = controller
        self.events = events
        self.logger = logger
        self.displayName = configuration.display
        self.displayBackend = configuration.displayBackend
        self.drawCursor = configuration.drawCursor
        self.screenConsentTimeout = .nanoseconds(configuration.screenConsentTimeoutNs)
        self.onShutdown = onShutdown
    }

    public func clientConnected(_ client: any ControlClientHandle) {
        clientCount.add(1, ordering: .relaxed)
        logger.debug("client connected", metadata: ["client": "\(client.clientId)"])
    }

    public func clientDisconnected(_ client: any ControlClientHandle) {
        clientCount.subtract(1, ordering: .relaxed)
        events.unsubscribe(id: client.clientId)
        logger.debug("client disconnected", metadata: ["client": "\(client.clientId)"])
    }

    /// Subscribes `client` to every event, as if it had sent `subscribeEvents`
    /// with no params. The stdio client gets this at once: the SDK that starts
    /// us on stdin/stdout never subscribes, yet expects every event.
    public func subscribeToAllEvents(_ client: any ControlClientHandle) {
        _ = subscribe(client, to: Set(ControlEventName.allCases))
    }

    /// Makes `events` the client's subscription; returns the recent ones of those names.
    private func subscribe(_ client: any ControlClientHandle, to names: Set<ControlEventName>) -> [ControlEvent] {
        events.subscribe(id: client.clientId, events: names) { [weak client] _, line in client?.send(line) }
    }

    /// A line longer than the protocol allows.
    public func handleOversized(bytes: Int, client: any ControlClientHandle) {
        badRequests.add(1, ordering: .relaxed)
        client.respond(ControlResponse.failure(commandId: .null, error: CaptureError(
            .requestTooLarge, "message of \(bytes) bytes is over the \(ControlFraming.maxLineBytes)-byte limit; it was skipped")).encodedLine())
    }

    public func handle(line: [UInt8], client: any ControlClientHandle) {
        requests.add(1, ordering: .relaxed)
        let request: ControlRequest
        switch ControlRequest.parse(line: line) {
        case .failure(let bad):
            badRequests.add(1, ordering: .relaxed)
            client.respond(ControlResponse.failure(commandId: bad.commandId, error: bad.error).encodedLine())
            return
        case .success(let r):
            request = r
        }
        // Never log params: they may carry a token.
        logger.debug("command", metadata: ["command": "\(request.command.prefix(64))", "client": "\(client.clientId)"])
        let id = request.commandId
        let reply: @Sendable (Result<JSONValue, CaptureError>) -> Void = { result in
            switch result {
            case .success(let value): client.respond(ControlResponse.success(commandId: id, result: value).encodedLine())
            case .failure(let error): client.respond(ControlResponse.failure(commandId: id, error: error).encodedLine())
            }
        }
        guard let command = ControlCommand(rawValue: request.command) else {
            badRequests.add(1, ordering: .relaxed)
            let known = ControlCommand.allCases.map(\.rawValue).joined(separator: ", ")
            reply(.failure(CaptureError(.unknownCommand, "unknown command '\(request.command.prefix(64))' (known: \(known))")))
            return
        }
        do throws(CaptureError) {
            try run(command, request, client: client, reply: reply)
        } catch {
            badRequests.add(1, ordering: .relaxed)
            reply(.failure(error))
        }
    }

    private func run(_ command: ControlCommand, _ request: ControlRequest, client: any ControlClientHandle,
                     reply: @escaping @Sendable (Result<JSONValue, CaptureError>) -> Void) throws(CaptureError) {
        switch command {
        case .initialize:
            let apiUrl = try ParamReader(request).string("apiUrl", maxBytes: 2048)
            try controller.initialize(apiUrl: apiUrl)
            reply(.success(Self.encoded(daemonInfo())))

        case .ping:
            var info = daemonInfo()
            info.pong = true
            reply(.success(Self.encoded(info)))

        case .requestPermission:
            guard let raw = try ParamReader(request).string("permission", maxBytes: 64) else {
                throw CaptureError(.invalidRequest, "requestPermission: params.permission is required (microphone, screen-capture or system-audio)")
            }
            guard let permission = Permission(wire: raw) else {
                throw CaptureError(.invalidRequest, "requestPermission: unknown permission '\(raw)' (microphone, screen-capture, system-audio)")
            }
            let (display, backend) = (displayName, displayBackend)
            if permission == .screenCapture, DisplayBackendChoice.resolve(backend, x11Display: display).backend == .wayland {
                let (timeout, cursor, events) = (screenConsentTimeout, drawCursor, self.events)
                consent.async {
                    let outcome = ScreenPermission.request(consentTimeout: timeout, drawCursor: cursor) { event in
                        events.publish(SessionController.event(for: event, sessionId: nil))
                    }
                    reply(.success(Self.encoded(Self.permissionResult(outcome))))
                }
                return
            }
            work.async {
                reply(.success(Self.encoded(Self.checkPermission(permission, displayName: display, backend: backend))))
            }

        case .getChannels:
            let (display, backend) = (displayName, displayBackend)
            work.async {
                let listing = ChannelCatalog.list(displayName: display, backend: backend)
                reply(.success(Self.encoded(ChannelsResult(
                    channels: listing.channels.map { .init(channelId: $0.id, type: $0.type, name: $0.name) },
                    problems: listing.problems.map { .init(code: $0.code.rawValue, message: $0.message) },
                    displayBackend: DisplayBackendInfo(listing.displayBackend)))))
            }

        case .startRecording:
            controller.start(try StartRecordingParams(request), reply: reply)

        case .stopRecording:
            controller.stop(sessionId: try ParamReader(request).string("sessionId", maxBytes: 128), reply: reply)

        case .pauseTracks:
            reply(.success(Self.encoded(try controller.setPaused(true, tracks: TracksParams(request).tracks))))

        case .resumeTracks:
            reply(.success(Self.encoded(try controller.setPaused(false, tracks: TracksParams(request).tracks))))

        case .getStatus:
            var status = controller.status()
            status.displayBackend = DisplayBackendInfo(DisplayBackendChoice.resolve(displayBackend, x11Display: displayName))
            status.daemon = daemonInfo()
            reply(.success(Self.encoded(status)))

        case .updateToken:
            reply(.success(Self.encoded(controller.updateToken(try UpdateTokenParams(request)))))

        case .subscribeEvents:
            let names = try SubscribeParams(request).events
            let all = events.subscription(id: client.clientId).union(names)
            let recent = subscribe(client, to: all)
            reply(.success(Self.encoded(SubscriptionResult(subscribed: all.sorted(), recent: recent))))

        case .unsubscribeEvents:
            let names = try SubscribeParams(request).events
            events.unsubscribe(id: client.clientId, events: names)
            reply(.success(Self.encoded(SubscriptionResult(subscribed: events.subscription(id: client.clientId).sorted()))))

        case .shutdown:
            reply(.success(Self.encoded(ShutdownResult())))
            logger.notice("shutdown requested by a client")
            onShutdown()
        }
    }

    private func daemonInfo() -> DaemonInfo {
        DaemonInfo(version: Self.version, protocol: Self.protocolVersion, pid: Int(getpid()),
                   platform: "linux-" + DisplayBackendChoice.resolve(displayBackend, x11Display: displayName).backend.rawValue,
                   uptimeNs: MonotonicClock.now() - startedMonotonic, clients: clientCount.load(ordering: .relaxed),
                   requests: requests.load(ordering: .relaxed), badRequests: badRequests.load(ordering: .relaxed))
    }

    /// A typed result as the response's JSON (encoding these structs cannot fail).
    static func encoded(_ result: some Encodable) -> JSONValue {
        (try? JSONValue(encoding: result)) ?? .null
    }

    /// A Wayland screen permission's outcome as the result.
    static func permissionResult(_ outcome: ScreenPermission.Outcome) -> PermissionResult {
        switch outcome {
        case .granted(let monitor):
            return PermissionResult(permission: Permission.screenCapture.rawValue, status: "granted", monitor: monitor)
        case .denied(let error):
            return PermissionResult(permission: Permission.screenCapture.rawValue, status: "denied", reason: error.message,
                                    code: error.code.rawValue)
        }
    }

    /// On X11 (and for audio) there is no permission dialog: a permission is granted when the
    /// server that provides it is reachable, denied with the reason otherwise.
    static func checkPermission(_ permission: Permission, displayName: String?, backend: DisplayBackendSetting) -> PermissionResult {
        let listing = ChannelCatalog.list(displayName: displayName, backend: backend)
        let (channels, problems) = (listing.channels, listing.problems)
        let (track, problemCode): (Track, CaptureErrorCode) = switch permission {
        case .screenCapture: (.screen, .displayUnavailable)
        case .microphone: (.mic, .audioUnavailable)
        case .systemAudio: (.systemAudio, .audioUnavailable)
        }
        if channels.contains(where: { (try? ChannelID(parsing: $0.id)).map(Track.init(channel:)) == track }) {
            return PermissionResult(permission: permission.rawValue, status: "granted")
        }
        let reason = problems.first { $0.code == problemCode }?.message
            ?? "no \(permission == .screenCapture ? "display" : permission == .microphone ? "microphone" : "audio output") was found"
        return PermissionResult(permission: permission.rawValue, status: "denied", reason: reason, code: problemCode.rawValue)
    }
}

extension DisplayBackendInfo {
    init(_ choice: DisplayBackendChoice) {
        self.init(backend: choice.backend.rawValue, reason: choice.reason)
    }
}
