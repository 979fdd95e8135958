import Logging
import ServiceLifecycle

/// Tells the world about committed status changes: the log, the event
/// WebSocket, and the webhook dispatcher (whose outbox rows the same
/// transaction already wrote).
struct SessionAnnouncer: Sendable {
    let events: EventHub
    let webhooks: WebhookDispatcher
    let logger: Logger

    func announce(_ transitions: [SessionTransition], alsoTo connectionId: String? = nil) async {
        guard !transitions.isEmpty else { return }
        for transition in transitions {
            logger.info("session \(transition.session.status.rawValue)", metadata: [
                "session": "\(transition.session.id)", "event": "\(transition.event.rawValue)",
            ])
        }
        await events.publish(transitions, alsoTo: connectionId)
        webhooks.wake()
    }
}

/// The periodic chores: the uplink watchdog (hello timeout, peers that stopped
/// reading) every second, and failing sessions whose uplink went silent or never began.
struct Housekeeping: Service {
    let store: any EndpointStore
    let uplinks: UplinkHub
    let announcer: SessionAnnouncer
    let silenceTimeoutMs: Int64
    /// A session still `created` this long after its creation fails (`EndpointLimits.unstartedSessionSeconds`).
    let unstartedTimeoutMs: Int64
    let checkIntervalMs: Int64
    let exports: ExportService
    let logger: Logger

    func run() async throws {
        await exports.resumeInterrupted()
        // Cancelled on graceful shutdown, so a sleep between chores does not hold the shutdown up.
        try? await cancelWhenGracefulShutdown { try await self.loop() }
    }

    private func loop() async throws {
        var lastSilenceCheck: Int64 = 0
        while !Task.isCancelled {
            let now = EndpointClock.nowMilliseconds()
            await uplinks.sweep(now: now)
            if now - lastSilenceCheck >= checkIntervalMs {
                lastSilenceCheck = now
                do {
                    try await store.touchUplink(sessionIds: await uplinks.liveSessionIds(), now: now)
                    let failed = try await store.failSilentSessions(
                        silentSince: now - silenceTimeoutMs, unstartedSince: now - unstartedTimeoutMs, now: now)
                    await announcer.announce(failed)
                } catch where Task.isCancelled {
                    return  // shutting down (the store's calls end with CancellationError): not a fault
                } catch {
                    logger.error("silence check failed", metadata: ["error": "\(error)"])
                }
            }
            try await Task.sleep(for: .milliseconds(min(checkIntervalMs, 1000)))
        }
    }
}
