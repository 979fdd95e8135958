import CaptureCore
import EndpointClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

extension ApplicationProtocol {
    /// Runs the application on a free loopback port (its routers, services and real sockets),
    /// hands `test` a client for it, and shuts it down gracefully afterwards, whether the
    /// test passed or threw.
    func serve<Value: Sendable>(_ test: @Sendable (EndpointTestClient) async throws -> Value) async throws -> Value {
        let served = PortReporting(base: self)
        let group = ServiceGroup(configuration: .init(services: [served], logger: logger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                defer { served.ended() }   // a server that never listened ends the wait for its port
                try await group.run()
            }
            let port = try await served.port()
            let client = EndpointTestClient(port: port)
            do {
                let value = try await test(client)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return value
            } catch {
                await group.triggerGracefulShutdown()
                try? await tasks.waitForAll()
                throw error
            }
        }
    }
}

/// A served endpoint's address and a plain HTTP client for it (a connection per request).
struct EndpointTestClient: Sendable {
    let port: Int

    func executeRequest(uri: String, method: HTTPRequest.Method, headers: HTTPFields = [:], body: ByteBuffer? = nil)
        async throws -> EndpointHTTPClient.Response {
        try await EndpointHTTPClient(port: port).execute(uri: uri, method: method, headers: headers, body: body)
    }
}

/// The application as it is, bound to 127.0.0.1:0, telling the port it got.
private struct PortReporting<Base: ApplicationProtocol>: ApplicationProtocol, Service {
    typealias Responder = Base.Responder
    let base: Base
    private let bound = BoundPort()

    init(base: Base) { self.base = base }

    var responder: Responder { get async throws { try await base.responder } }
    var server: HTTPServerBuilder { base.server }
    var eventLoopGroup: any EventLoopGroup { base.eventLoopGroup }
    var configuration: ApplicationConfiguration { base.configuration.with(address: .hostname("127.0.0.1", port: 0)) }
    var logger: Logger { base.logger }
    var services: [any Service] { base.services }
    var processesRunBeforeServerStart: [@Sendable () async throws -> Void] { base.processesRunBeforeServerStart }

    @Sendable func onServerRunning(_ channel: any Channel) async {
        await base.onServerRunning(channel)
        bound.set(channel.localAddress?.port ?? 0)
    }

    /// The bound port, once the server listens (an error if it stopped without listening).
    func port() async throws -> Int { try await bound.wait() }

    func ended() { bound.set(0) }
}

/// A port set once and awaited by whoever asks (woken, not polled).
private final class BoundPort: Sendable {
    private enum State {
        case waiting([CheckedContinuation<Int, Never>])
        case bound(Int)
    }
    private let state = Mutex(State.waiting([]))

    func set(_ port: Int) {
        let waiters: [CheckedContinuation<Int, Never>] = state.withLock { state in
            guard case .waiting(let waiters) = state else { return [] }
            state = .bound(port)
            return waiters
        }
        for waiter in waiters { waiter.resume(returning: port) }
    }

    func wait() async throws -> Int {
        let port = await withCheckedContinuation { (continuation: CheckedContinuation<Int, Never>) in
            let now: Int? = state.withLock { state in
                switch state {
                case .bound(let port): return port
                case .waiting(var waiters):
                    waiters.append(continuation)
                    state = .waiting(waiters)
                    return nil
                }
            }
            if let now { continuation.resume(returning: now) }
        }
        guard port > 0 else { throw CaptureError(.internalError, "the endpoint listened on no port") }
        return port
    }
}
