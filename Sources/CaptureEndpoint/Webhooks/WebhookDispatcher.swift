import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle

/// Delivers the webhook outbox: signed POSTs to each session's `callback_url`,
/// in order per session, retried with exponential backoff when the receiver
/// fails or is unreachable. It runs beside ingest and never blocks it: a status
/// change only writes an outbox row (in its own transaction) and wakes this.
final class WebhookDispatcher: Service, Sendable {
    private let store: any EndpointStore
    private let signer: WebhookSigner
    private let client: HTTPClient
    private let initialBackoffMs: Int64
    private let maxBackoffMs: Int64
    private let maxAttempts: Int
    private let timeout: TimeAmount
    private let logger: Logger
    private let wakeups: AsyncStream<Void>
    private let wakeup: AsyncStream<Void>.Continuation

    init(store: any EndpointStore, signer: WebhookSigner, configuration: EndpointConfiguration, logger: Logger,
         client: HTTPClient = .shared) {
        self.store = store
        self.signer = signer
        self.client = client
        initialBackoffMs = Int64(configuration.webhookInitialBackoffMilliseconds)
        maxBackoffMs = Int64(configuration.webhookMaxBackoffSeconds) * 1000
        maxAttempts = configuration.webhookMaxAttempts
        timeout = .seconds(Int64(configuration.webhookTimeoutSeconds))
        self.logger = logger
        (wakeups, wakeup) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Something new is in the outbox.
    func wake() { wakeup.yield() }

    /// The delay before attempt `attempt + 1` after `attempt` failed ones: 1 s, 2 s, 4 s, ... capped.
    static func backoff(afterAttempts attempts: Int, initialMs: Int64, maxMs: Int64) -> Int64 {
        let exponent = min(max(attempts - 1, 0), 30)
        return min(initialMs << Int64(exponent), maxMs)
    }

    func run() async throws {
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                // Polling covers retries that come due; wake-ups cover new rows at once.
                group.addTask { [wakeup] in
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(250))
                        wakeup.yield()
                    }
                }
                for await _ in wakeups {
                    await deliverDue()
                }
                group.cancelAll()
            }
        } onGracefulShutdown: { [wakeup] in
            wakeup.finish()
        }
    }

    private func deliverDue() async {
        let due: [WebhookDeliveryRecord]
        do {
            due = try await store.dueWebhooks(now: EndpointClock.nowMilliseconds(), limit: 32)
        } catch {
            logger.error("webhook outbox unreadable", metadata: ["error": "\(error)"])
            return
        }
        await withTaskGroup(of: Void.self) { group in
            for delivery in due {
                group.addTask { await self.attempt(delivery) }
            }
        }
    }

    private func attempt(_ delivery: WebhookDeliveryRecord) async {
        let timestamp = EndpointClock.nowMilliseconds() / 1000
        var request = HTTPClientRequest(url: delivery.url)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "user-agent", value: "capture-endpoint/\(EndpointVersion.current)")
        request.headers.add(name: "webhook-id", value: delivery.id)
        request.headers.add(name: "webhook-timestamp", value: String(timestamp))
        request.headers.add(name: "webhook-signature",
                            value: signer.signature(id: delivery.id, timestamp: timestamp, body: delivery.payload))
        request.body = .bytes(ByteBuffer(string: delivery.payload))
        var status: Int?
        var failure: String?
        do {
            let response = try await client.execute(request, timeout: timeout)
            status = Int(response.status.code)
            _ = try? await response.body.collect(upTo: 64 << 10)
            if !(200..<300).contains(Int(response.status.code)) { failure = "HTTP \(response.status.code)" }
        } catch {
            failure = "\(error)".prefix(200).description
        }
        let attempts = delivery.attempts + 1
        let now = EndpointClock.nowMilliseconds()
        let next: Int64? = failure == nil || attempts >= maxAttempts
            ? nil : now + Self.backoff(afterAttempts: attempts, initialMs: initialBackoffMs, maxMs: maxBackoffMs)
        if let failure {
            logger.warning("webhook delivery failed", metadata: [
                "webhook_id": "\(delivery.id)", "event": "\(delivery.eventType)", "session": "\(delivery.sessionId)",
                "attempt": "\(attempts)", "error": "\(failure)", "retry_in_ms": "\(next.map { $0 - now } ?? -1)",
            ])
        } else {
            logger.info("webhook delivered", metadata: [
                "webhook_id": "\(delivery.id)", "event": "\(delivery.eventType)", "session": "\(delivery.sessionId)",
                "attempt": "\(attempts)",
            ])
        }
        do {
            try await store.webhookAttempted(id: delivery.id, status: status, error: failure, delivered: failure == nil,
                                             nextAttemptAt: next, now: now)
        } catch {
            logger.error("webhook outbox not updated", metadata: ["webhook_id": "\(delivery.id)", "error": "\(error)"])
        }
    }
}

/// The endpoint's version, for `--version` and the webhook user agent.
public enum EndpointVersion {
    public static let current = "0.1.0"
}
