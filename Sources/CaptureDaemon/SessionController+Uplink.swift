import CaptureControl
import CaptureCore
import CaptureConcurrency
import CapturePipeline
import CaptureSpool
public import CaptureUplink
import Dispatch
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
public import WebSocketUplink

/// What the daemon needs of an upload (the seam the tests and `record` share):
/// `SessionUplink` is the real one.
public protocol ChunkUploading: AnyObject, Sendable {
    func start()
    func offer(_ chunk: ChunkMetadata)
    func finishCapture()
    func updateToken(_ token: String)
    @discardableResult func stop(timeout: Duration) -> Bool
    var progress: UploadProgress { get }
}

extension SessionUplink: ChunkUploading {}

/// One upload the daemon runs: the current session's, or an earlier one still
/// draining its spool (the network was down, the agent restarted).
struct UploadEntry: Sendable {
    var uplink: any ChunkUploading
    var endpoint: String
    /// When the last upload-progress event went out (monotonic ns).
    var lastProgressEventNs: Int64 = 0
    var disconnectsLogged = 0
    /// Its upload completed: the spool is being removed and recording-complete published.
    var completed = false
}

extension SessionController {
    /// The endpoint a start uploads to: the request's, else the SDK's `init` apiUrl,
    /// else the configuration's; nil: the session stays in the spool.
    func resolveEndpoint(_ params: StartRecordingParams, apiUrl: String?) -> String? {
        params.endpoint ?? apiUrl ?? configuration.endpoint
    }

    /// Starts the upload of a session that just started (its spool record first, so a
    /// restarted agent can finish it).
    func startUpload(sessionId: String, endpoint: String, channels: [UplinkChannel], token: String?, relay: ChunkRelay,
                     directory: String) {
        let record = UplinkSessionRecord(sessionId: sessionId, endpoint: endpoint, channels: channels)
        do throws(CaptureError) {
            try UplinkSpool(sessionDirectory: directory).saveRecord(record)
        } catch {
            logger.error("cannot write the session's upload record; a restarted agent would not resume it",
                         metadata: ["session": "\(sessionId)", "error": "\(error)"])
        }
        if let token { tokenStore.save(token, sessionId: sessionId) }
        guard let uplink = makeUplink(record: record, token: token, directory: directory) else { return }
        relay.attach { uplink.offer($0) }
        uplink.start()
    }

    func makeUplink(record: UplinkSessionRecord, token: String?, directory: String) -> (any ChunkUploading)? {
        let id = record.sessionId
        do throws(CaptureError) {
            let target = try UplinkTarget(endpoint: record.endpoint, allowInsecure: configuration.allowInsecureUplink)
            var config = SessionUplink.Configuration(target: target, sessionId: id, channels: record.channels,
                                                     sessionDirectory: directory)
            config.agent = "capture-agent/\(CaptureAgentVersion.string)"
            config.caFile = configuration.caFile
            let uplink = try SessionUplink(config, token: token) { [weak self] report in
                self?.uplinkReported(report, sessionId: id)
            }
            uploads.withLock { $0[id] = UploadEntry(uplink: uplink, endpoint: target.description) }
            logger.info("upload started", metadata: ["session": "\(id)", "endpoint": "\(target)",
                                                     "token": "\(token == nil ? "missing" : "present")"])
            return uplink
        } catch {
            logger.error("cannot start the upload; the chunks stay in the spool", metadata: ["session": "\(id)", "error": "\(error)"])
            events.publish(ControlEvent(.uploadFailed(.init(code: error.code, message: error.message)), sessionId: id))
            return nil
        }
    }

    /// The session's capture is over: the upload sends what is left, then ends the stream.
    func finishUpload(sessionId: String, directory: String) -> Bool {
        guard let entry = uploads.withLock({ $0[sessionId] }) else { return false }
        let spool = UplinkSpool(sessionDirectory: directory)
        if var record = spool.loadRecord() {
            record.captureFinished = true
            try? spool.saveRecord(record)
        }
        entry.uplink.finishCapture()
        return true
    }

    /// Uploads of earlier sessions left in the spool (an agent that stopped or was
    /// killed before the endpoint had everything): each resumes, with its token from
    /// `$XDG_RUNTIME_DIR` if it is still there, else after `updateToken`.
    public func resumeSpooledUploads() {
        let root = SpoolLocation.root
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: root) else { return }
        for name in names.sorted() {
            let directory = root + "/" + name
            let spool = UplinkSpool(sessionDirectory: directory)
            guard let record = spool.loadRecord(), record.sessionId == name,
                  uploads.withLock({ $0[name] == nil }) else { continue }
            let chunks = spool.spooledChunks(channels: record.channels)
            // The current token only if it was given for this upload's endpoint.
            let target = Self.target(record.endpoint)
            let token = tokenStore.load(sessionId: name) ?? snapshot.withLock { $0.tokenEndpoint == target ? $0.token : nil }
            logger.notice("resuming the upload of an earlier session", metadata: [
                "session": "\(name)", "chunks": "\(chunks.count)", "captureFinished": "\(record.captureFinished)",
                "token": "\(token == nil ? "missing (send updateToken)" : "present")"])
            guard let uplink = makeUplink(record: record, token: token, directory: directory) else { continue }
            for chunk in chunks { uplink.offer(chunk) }
            uplink.finishCapture()
            uplink.start()
        }
    }

    /// `updateToken` reaches every upload to the token's endpoint (a token is the account's,
    /// not one session's) and no other; returns their session ids.
    func updateUploadTokens(_ token: String, target: String?) -> [String] {
        guard let target else { return [] }
        let entries = uploads.withLock { $0 }.filter { $0.value.endpoint == target }
        for (id, entry) in entries {
            tokenStore.save(token, sessionId: id)
            entry.uplink.updateToken(token)
        }
        return entries.keys.sorted()
    }

    /// Waits until every upload has finished, for at most `timeoutNs`. An upload that cannot
    /// move (it waits for a token, the endpoint refused it) is not waited for, nor one that
    /// stayed disconnected for `giveUpDisconnectedNs` of the wait (the endpoint is down: the
    /// spool keeps it).
    func drainUploads(timeoutNs: Int64, giveUpDisconnectedNs: Int64 = 5_000_000_000) {
        let start = MonotonicClock.now()
        var lastConnected: [String: Int64] = [:]
        var announced = false
        while true {
            let now = MonotonicClock.now()
            let waiting = uploads.withLock { $0 }.filter { id, entry in
                let p = entry.uplink.progress
                if p.phase == .needsToken || p.phase == .stopped { return false }
                if p.connected || lastConnected[id] == nil { lastConnected[id] = p.connected ? now : start }
                return now - lastConnected[id]! < giveUpDisconnectedNs
            }
            if waiting.isEmpty { return }
            let pending = waiting.values.reduce(0) { $0 + $1.uplink.progress.chunksPending }
            if now - start >= timeoutNs {
                logger.notice("uploads not finished at exit; they stay in the spool for the next start",
                              metadata: ["sessions": "\(waiting.keys.sorted())", "chunksPending": "\(pending)"])
                return
            }
            if !announced {
                logger.notice("waiting for uploads to finish before exiting", metadata: [
                    "sessions": "\(waiting.keys.sorted())", "chunksPending": "\(pending)",
                    "atMostSeconds": "\(timeoutNs / 1_000_000_000)"])
                announced = true
            }
            // Woken by the uploads' reports (an ack, a drop, the end); the slice bounds how
            // late a give-up that only time decides is noticed.
            uploadsChanged.waitForChange(deadlineNs: min(start + timeoutNs, now + 250_000_000))
        }
    }

    func stopUploads() {
        let entries = uploads.withLock { u -> [String: UploadEntry] in
            let all = u
            u.removeAll()
            return all
        }
        for (_, entry) in entries { entry.uplink.stop(timeout: .seconds(5)) }
    }

    func uploadProgress(_ sessionId: String?) -> UploadProgress? {
        guard let sessionId else { return nil }
        return uploads.withLock { $0[sessionId] }?.uplink.progress
    }

    var uploadSessions: [String: UploadProgress] {
        uploads.withLock { $0 }.mapValues(\.uplink.progress)
    }

    // MARK: Reports (on the uplink's thread: never block)

    func uplinkReported(_ report: UplinkMachine.UplinkReport, sessionId: String) {
        defer { uploadsChanged.changed() }
        switch report {
        case .connected(let resumed):
            logger.info("uplink connected", metadata: [
                "session": "\(sessionId)",
                "resume": "\(resumed.sorted { $0.key < $1.key }.map { "\($0.key)@\($0.value)" }.joined(separator: ","))"])
            uploads.withLock { $0[sessionId]?.disconnectsLogged = 0 }
            publishProgress(sessionId, force: true)
        case .acknowledged:
            publishProgress(sessionId, force: false)
        case .disconnected(let code, let reason, let retry):
            // The first few drops of an outage in full, then quietly (status shows the rest).
            let n = uploads.withLock { u -> Int in
                u[sessionId]?.disconnectsLogged += 1
                return u[sessionId]?.disconnectsLogged ?? 0
            }
            if n <= 3 {
                logger.notice("uplink disconnected; chunks wait in the spool", metadata: [
                    "session": "\(sessionId)", "code": "\(code.map(String.init) ?? "none")", "reason": "\(reason)",
                    "retryInMs": "\(retry / 1_000_000)"])
            }
            if n == 1 { publishProgress(sessionId, force: true) }
        case .tokenRejected(let code):
            let why: ControlEvent.TokenExpired.Reason = switch code {
            case UplinkCloseCode.tokenExpired.rawValue: .expired
            case UplinkCloseCode.tokenRevoked.rawValue: .revoked
            default: .invalid
            }
            tokenStore.remove(sessionId: sessionId)
            logger.warning("the endpoint refused the upload token; capture goes on into the spool until updateToken",
                           metadata: ["session": "\(sessionId)", "reason": "\(why.rawValue)", "code": "\(code)"])
            events.publish(ControlEvent(.tokenExpired(.init(
                message: "the endpoint refused the upload token (\(why.rawValue)); send updateToken with a new one",
                reason: why, closeCode: Int(code))), sessionId: sessionId))
        case .tokenReplaced(let code):
            logger.notice("the endpoint refused the session's old upload token; going on with the one updateToken gave",
                          metadata: ["session": "\(sessionId)", "code": "\(code)"])
        case .refused(let code, let reason):
            logger.error("the endpoint refused the session's upload; its chunks stay in the spool", metadata: [
                "session": "\(sessionId)", "code": "\(code.map(String.init) ?? "none")", "reason": "\(reason)"])
            events.publish(ControlEvent(.uploadFailed(.init(code: .uploadRefused, message: reason, closeCode: code.map { Int($0) })),
                                        sessionId: sessionId))
        case .chunkRefused(let error):
            logger.warning("the endpoint refused a chunk; resending from where it stands", metadata: [
                "session": "\(sessionId)", "code": "\(error.code.rawValue)", "message": "\(error.message)"])
        case .welcomeAhead(let channel, let next, let spooled):
            logger.warning("the endpoint's welcome claims chunks never spooled; nothing deleted for them", metadata: [
                "session": "\(sessionId)", "channel": "\(channel)", "next_seq": "\(next)", "spooled_up_to": "\(spooled)"])
        case .incompatibleEndpoint(let status, let reason):
            let endpoint = uploads.withLock { $0[sessionId]?.endpoint } ?? "?"
            let message = "\(endpoint) does not speak the capture uplink protocol (docs/uplink-protocol.md): \(reason). "
                + "Chunks stay in the spool and the upload keeps retrying; point the session at a capture endpoint "
                + "(such as capture-endpoint), not at VideoDB's cloud"
            logger.error("the endpoint does not speak the capture uplink protocol; capture goes on into the spool",
                         metadata: ["session": "\(sessionId)", "endpoint": "\(endpoint)", "reason": "\(reason)"])
            events.publish(ControlEvent(.endpointIncompatible(.init(endpoint: endpoint, httpStatus: status.map { Int($0) },
                                                                   message: message)), sessionId: sessionId))
        case .complete:
            uploadComplete(sessionId)
        }
    }

    /// Fault injection for tests: sleeps `CAPTURE_AGENT_TEST_COMPLETE_DELAY_MS` between an
    /// upload's completion and its recording-complete event, so a test can shut the agent
    /// down inside that gap (and fail if the event were lost).
    private static let completionDelayMs: UInt32 = ProcessInfo.processInfo
        .environment["CAPTURE_AGENT_TEST_COMPLETE_DELAY_MS"].flatMap { UInt32($0) } ?? 0

    private static func testOnlyCompletionDelay() {
        if completionDelayMs > 0 { usleep(completionDelayMs * 1000) }
    }

    private func publishProgress(_ sessionId: String, force: Bool) {
        let now = MonotonicClock.now()
        let due: UploadEntry? = uploads.withLock { u in
            guard var entry = u[sessionId] else { return nil }
            guard force || now - entry.lastProgressEventNs >= 1_000_000_000 || entry.uplink.progress.chunksPending == 0 else {
                return nil
            }
            entry.lastProgressEventNs = now
            u[sessionId] = entry
            return entry
        }
        guard let entry = due else { return }
        let p = entry.uplink.progress
        events.publish(ControlEvent(.uploadProgress(.init(
            connected: p.connected, chunksUploaded: p.chunksUploaded, bytesUploaded: p.bytesUploaded,
            chunksPending: p.chunksPending, bytesPending: p.bytesPending, uploadLagMs: p.uploadLagMs,
            endpoint: entry.endpoint)), sessionId: sessionId))
    }

    /// Every chunk is at the endpoint and its stream ended: the session's spool goes.
    private func uploadComplete(_ sessionId: String) {
        guard let entry = uploads.withLock({ u -> UploadEntry? in
            guard var entry = u[sessionId], !entry.completed else { return nil }
            entry.completed = true
            u[sessionId] = entry
            return entry
        }) else { return }
        let p = entry.uplink.progress
        let directory = SpoolLocation.sessionDirectory(sessionId)
        tokenStore.remove(sessionId: sessionId)
        UplinkSpool(sessionDirectory: directory).removeSession()
        logger.info("upload complete", metadata: ["session": "\(sessionId)", "chunks": "\(p.chunksUploaded)",
                                                  "duplicates": "\(p.duplicates)", "connections": "\(p.connections)"])
        Self.testOnlyCompletionDelay()
        events.publish(ControlEvent(.recordingComplete(.endpoint(chunks: p.chunksUploaded, bytes: p.bytesUploaded,
                                                                  endpoint: entry.endpoint)), sessionId: sessionId))
        // Listed until the event is out: a shutdown waits for the uploads listed
        // (`drainUploads`), and must not end the agent between the two (seen in CI: the
        // SDK's client, which shuts the agent down right after stopping, missed
        // recording-complete).
        uploads.withLock { _ = $0.removeValue(forKey: sessionId) }
        // The uplink's thread called us: it cannot wait for itself to end.
        DispatchQueue.global(qos: .utility).async { entry.uplink.stop(timeout: .seconds(5)) }
    }
}
