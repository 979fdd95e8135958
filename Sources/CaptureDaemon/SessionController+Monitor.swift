import CaptureControl
import CaptureCore
import CaptureConcurrency
import CapturePipeline
import CaptureSpool
import Dispatch
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import Synchronization
import CaptureUplink

/// The monitor: every 250 ms, on its own queue, a look at the running session. A source that
/// failed ends it; so does the spool budget; a channel that spools nothing for a while is
/// reported stalled (and recovered); an audio channel that was interrupted is reported, and its
/// recovery; video's measured frame rate is sampled; the token's expiry is announced.
extension SessionController {
    /// How long a channel may go without a new chunk before it counts as stalled.
    var stallThresholdNs: Int64 { max(3 * configuration.chunkNs, configuration.chunkNs + 3_000_000_000) }

    func checkSession() {
        dispatchPrecondition(condition: .onQueue(monitorQueue))
        let now = MonotonicClock.now()
        let (state, session, id) = snapshot.withLock { ($0.state, $0.session, $0.sessionId) }
        checkToken(sessionId: id)
        guard state == .active, let session else { return }

        if let failure = session.failure {
            let claimed = snapshot.withLock { s -> Bool in
                guard s.state == .active else { return false }
                s.state = .stopping
                return true
            }
            if claimed {
                logger.error("a source failed; stopping the session", metadata: ["session": "\(id ?? "?")", "error": "\(failure)"])
                operations.async { [self] in _ = finishSession(failure: failure) }
            }
            return
        }

        let stats = session.liveStats()
        // What the session spooled, less what its upload already got acknowledged (and deleted).
        // Earlier sessions count as they were at the start: their uploads only shrink them.
        let uploaded = Int64(uploadProgress(id)?.bytesUploaded ?? 0)
        let spoolBytes = snapshot.withLock { $0.spoolBytesAtStart } + Int64(stats.reduce(0) { $0 + $1.bytes }) - uploaded
        // Stop while the next round of chunks (one per channel, as large as the largest so far)
        // still fits, so the spool ends within the budget plus the chunks the stop closes.
        let nextChunks = Int64(stats.reduce(0) { $0 + $1.largestChunkBytes })
        if spoolBytes + nextChunks >= configuration.spoolBudgetBytes {
            let claimed = snapshot.withLock { s -> Bool in
                guard s.state == .active else { return false }
                s.state = .stopping
                return true
            }
            if claimed {
                let error = CaptureError(.ioError,
                    "spool_budget reached: the spool holds \(spoolBytes) bytes of \(configuration.spoolBudgetBytes) allowed and the next chunks (up to \(nextChunks) bytes) would not fit; the session was stopped and nothing unacknowledged was deleted")
                logger.error("spool budget reached; stopping the session", metadata: ["session": "\(id ?? "?")"])
                operations.async { [self] in _ = finishSession(failure: error) }
            }
            return
        }

        var pending: [ControlEvent] = []
        let threshold = stallThresholdNs
        snapshot.withLock { s in
            for stat in stats {
                var w = s.watches[stat.channel] ?? ChannelWatch(lastProgress: now, lastRateSample: now)
                if stat.chunks != w.lastChunks {
                    if w.stallReported {
                        pending.append(ControlEvent(.channelError(.init(
                            code: .channelStalled, message: "\(stat.channel) produces media again", recovered: true)),
                            sessionId: id, channel: stat.channel))
                    }
                    w.lastChunks = stat.chunks
                    w.lastProgress = now
                    w.stallReported = false
                } else if !w.stallReported && now - w.lastProgress > threshold
                            && (w.interruptedSince == 0 || now - w.interruptedSince > configuration.audioReconnectTimeoutNs + threshold) {
                    // (An audio channel that is reconnecting is reported as
                    // interrupted, not stalled, until its reconnect time is up.)
                    w.stallReported = true
                    let seconds = (Double(now - w.lastProgress) / 1e9).fixed(1)
                    logger.warning("channel stalled", metadata: ["channel": "\(stat.channel)", "seconds": "\(seconds)"])
                    pending.append(ControlEvent(.channelError(.init(
                        code: .channelStalled,
                        message: "\(stat.channel) has produced no media for \(seconds) s while the session is active",
                        recovered: false)), sessionId: id, channel: stat.channel))
                }
                if stat.discontinuities > w.lastDiscontinuities {
                    pending.append(ControlEvent(.channelError(.init(
                        code: .audioUnavailable,
                        message: "audio was interrupted (the audio server went away or the device changed); reconnecting, the gap is filled with silence",
                        recovered: false, interruptions: stat.discontinuities)), sessionId: id, channel: stat.channel))
                    w.lastDiscontinuities = stat.discontinuities
                    w.interruptedSince = now
                    w.capturedAtInterruption = stat.captured
                } else if w.interruptedSince != 0 && stat.captured > w.capturedAtInterruption + 4 {
                    // Audio flows again (the hole before it was filled with silence).
                    pending.append(ControlEvent(.channelError(.init(
                        code: .audioUnavailable, message: "audio is back; the interruption was filled with silence",
                        recovered: true, silenceFilledMs: stat.silenceFilledMs)), sessionId: id, channel: stat.channel))
                    w.interruptedSince = 0
                }
                if now - w.lastRateSample >= 1_000_000_000 {
                    w.measuredFps = Double(stat.encoded - w.lastEncoded) * 1e9 / Double(now - w.lastRateSample)
                    w.lastEncoded = stat.encoded
                    w.lastRateSample = now
                }
                s.watches[stat.channel] = w
            }
        }
        for event in pending { events.publish(event) }
    }

    func checkToken(sessionId: String?) {
        let expired: Int64? = snapshot.withLock { s in
            guard let expiry = s.tokenExpiresAtUnix, s.token != nil, !s.tokenExpiredReported,
                  WallClock.now() / 1_000_000_000 >= expiry else { return nil }
            s.tokenExpiredReported = true
            return expiry
        }
        if let expired {
            logger.warning("upload token expired; send updateToken")
            events.publish(ControlEvent(.tokenExpired(.init(
                message: "the upload token expired; send updateToken with a new one", expiredAt: expired)), sessionId: sessionId))
        }
    }
}
