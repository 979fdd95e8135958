import Logging
import ServiceLifecycle
import Synchronization

/// Delivers the webhook outbox: signed POSTs to each session's `callback_url`,
/// in order per session, retried with exponential backoff when the receiver
/// fails or is unreachable. It runs beside ingest and never blocks it: a status
/// change only writes an outbox row (in its own transaction) and wakes this.
///
/// Accounts are isolated: every delivery runs on its own, at most
/// `maxInFlightPerAccount` of one account at once (and `maxInFlight` in all), and each
/// has one deadline for the whole exchange (connect, headers and body), so a receiver
/// that is slow, dead or trickles its answer delays only the deliveries of its account.
/// Where a delivery may go is `CallbackTargetPolicy`'s to say, checked before each request.
final class WebhookDispatcher: Service, Sendable {
    private let store: any EndpointStore
    private let secrets: WebhookSecrets
    private let targets: CallbackTargetPolicy
    private let initialBackoffMs: Int64
    private let maxBackoffMs: Int64
    private let maxAttempts: Int
    private let timeout: Duration
    private let client: WebhookHTTPClient
    private let logger: Logger
    private let wakeups: AsyncStream<Void>
    private let wakeup: AsyncStream<Void>.Continuation

    static let maxInFlightPerAccount = 4
    static let maxInFlight = 64

    /// What is being delivered now.
    private struct InFlight {
        var ids = Set<String>()
        var perAccount: [String: Int] = [:]
        /// The deliveries whose attempt ended while `reserveDue` read the due rows (nil: no
        /// read under way). That read's snapshot may predate the attempt's record: such a row
        /// still looks due there, and taking it would POST it again (a delivered hook twice, or
        /// a failed one again before its backoff). The next read sees the record.
        var endedDuringRead: Set<String>?
    }
    private let inFlight = Mutex(InFlight())

    init(store: any EndpointStore, secrets: WebhookSecrets, configuration: EndpointConfiguration, logger: Logger) {
        self.store = store
        self.secrets = secrets
        targets = CallbackTargetPolicy(allowPrivateTargets: configuration.allowPrivateWebhookTargets,
                                       followRedirects: configuration.followWebhookRedirects)
        initialBackoffMs = Int64(configuration.webhookInitialBackoffMilliseconds)
        maxBackoffMs = Int64(configuration.webhookMaxBackoffSeconds) * 1000
        maxAttempts = configuration.webhookMaxAttempts
        timeout = .seconds(configuration.webhookTimeoutSeconds)
        client = WebhookHTTPClient(caFile: configuration.webhookCAFile)
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
            await withDiscardingTaskGroup { group in
                // Polling covers retries that come due; wake-ups cover new rows at once.
                group.addTask { [wakeup] in
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(250))
                        wakeup.yield()
                    }
                }
                for await _ in wakeups {
                    for due in await reserveDue() {
                        group.addTask {
                            await self.attempt(due)
                            self.release(due)
                            self.wake()   // the session's next hook, if any
                        }
                    }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: { [wakeup] in
            wakeup.finish()
        }
    }

    /// The due deliveries that may start now, marked in flight.
    /// (Called only from `run`'s loop, one read at a time.)
    private func reserveDue() async -> [DueWebhook] {
        inFlight.withLock { $0.endedDuringRead = [] }
        let due: [DueWebhook]
        do {
            due = try await store.dueWebhooks(now: EndpointClock.nowMilliseconds(), limit: 256)
        } catch {
            inFlight.withLock { $0.endedDuringRead = nil }
            logger.error("webhook outbox unreadable", metadata: ["error": "\(error)"])
            return []
        }
        return inFlight.withLock { state in
            let ended = state.endedDuringRead ?? []
            state.endedDuringRead = nil
            var starting: [DueWebhook] = []
            for candidate in due where !state.ids.contains(candidate.delivery.id) && !ended.contains(candidate.delivery.id) {
                guard state.ids.count < Self.maxInFlight else { break }
                guard state.perAccount[candidate.accountId, default: 0] < Self.maxInFlightPerAccount else { continue }
                state.ids.insert(candidate.delivery.id)
                state.perAccount[candidate.accountId, default: 0] += 1
                starting.append(candidate)
            }
            return starting
        }
    }

    private func release(_ due: DueWebhook) {
        inFlight.withLock { state in
            state.ids.remove(due.delivery.id)
            state.perAccount.decrementCount(due.accountId)
            state.endedDuringRead?.insert(due.delivery.id)
        }
    }

    private func request(_ delivery: WebhookDeliveryRecord, to target: CallbackTargetPolicy.Target,
                         signers: [WebhookSigner]) -> WebhookHTTPClient.Request {
        let timestamp = EndpointClock.nowMilliseconds() / 1000
        let signature = signers.map { $0.signature(id: delivery.id, timestamp: timestamp, body: delivery.payload) }
        return WebhookHTTPClient.Request(
            url: target.url, pinnedAddresses: target.isName ? target.addresses : [], host: target.host, port: target.port,
            headers: [
                ("content-type", "application/json"),
                ("user-agent", "capture-endpoint/\(EndpointVersion.current)"),
                ("webhook-id", delivery.id),
                ("webhook-timestamp", String(timestamp)),
                ("webhook-signature", signature.joined(separator: " ")),
            ],
            body: Array(delivery.payload.utf8), timeout: timeout)
    }

    private func attempt(_ due: DueWebhook) async {
        let delivery = due.delivery
        var status: Int?
        var failure: String?
        var refused = false
        var url = delivery.url
        do {
            // Signed with the secret(s) of the session's account, as they are now.
            let signers = secrets.signers(accountId: due.accountId,
                                          state: try await store.webhookSecret(accountId: due.accountId),
                                          now: EndpointClock.nowMilliseconds())
            for hop in 0...CallbackTargetPolicy.maxRedirects {
                let target = try await targets.target(for: url)
                let outcome = await client.post(request(delivery, to: target, signers: signers))
                guard case .answered(let answered, let location) = outcome else {
                    failure = if case .failed(let why) = outcome { why }
                        else { "no complete answer within \(timeout.components.seconds) s" }
                    break
                }
                status = answered
                if hop < CallbackTargetPolicy.maxRedirects,
                   let next = targets.redirect(status: answered, location: location, from: url) {
                    url = next
                    continue
                }
                if !(200..<300).contains(answered) {
                    failure = (300..<400).contains(answered)
                        ? "HTTP \(answered): redirect not followed (only 307/308, and only with --follow-webhook-redirects)"
                        : "HTTP \(answered)"
                }
                break
            }
        } catch let refusal as CallbackTargetPolicy.Refused {
            // Retrying cannot make the address public: given up at once.
            failure = "refused: \(refusal.description)"
            refused = true
        } catch {
            failure = "\(error)".prefix(200).description
        }
        let attempts = delivery.attempts + 1
        let now = EndpointClock.nowMilliseconds()
        let next: Int64? = failure == nil || attempts >= maxAttempts || refused
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
            // Not cancelled with the dispatcher (graceful shutdown cancels it): an attempt that
            // was made is recorded, or a restart would count it again and deliver it twice.
            let store = self.store
            try await Task {
                try await store.webhookAttempted(id: delivery.id, status: status, error: failure, delivered: failure == nil,
                                                 nextAttemptAt: next, now: now)
            }.value
        } catch {
            logger.error("webhook outbox not updated", metadata: ["webhook_id": "\(delivery.id)", "error": "\(error)"])
        }
    }
}

/// The endpoint's version, for `--version` and the webhook user agent.
public enum EndpointVersion {
    public static let current = "0.1.0"
}
