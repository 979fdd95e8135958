import CaptureControl
import CaptureCore
import CaptureTestSupport
import CaptureUplink
import Foundation
import XCTest

/// Faults of the endpoint, the network and the agent during a live upload: nothing the
/// agent captured is lost, nothing is stored twice, and the agent keeps answering.
final class UplinkFaultTests: XCTestCase {
    /// The endpoint SIGKILLed and restarted three times during a 30 s session (the endpoint's
    /// own EndpointRestartTests kills it five times under a replayed stream).
    func testEndpointKilledThreeTimesDuringASessionLosesAndDoublesNothing() throws {
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "kill5")
        try endpoint.start()
        defer { endpoint.terminate() }
        let session = try endpoint.createSession()
        let daemon = try DaemonProcess(rig: rig, name: "uplink-kill5")
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        try UplinkSessionTests.start(client, session: session, token: try endpoint.mintToken(), endpoint: endpoint)
        for _ in 0..<3 {
            Thread.sleep(forTimeInterval: 6)
            endpoint.kill9()
            Thread.sleep(forTimeInterval: 1)
            try endpoint.start()
            _ = try assertAnswers(daemon)
        }
        Thread.sleep(forTimeInterval: 6)
        let status = try assertAnswers(daemon)
        XCTAssertGreaterThanOrEqual(status.upload?.connections ?? 0, 4, "\(status)")
        try finish(client, daemon: daemon, endpoint: endpoint, session: session)
    }

    /// The endpoint gone for 30 s with half-second chunks (as many chunks wait as a minute of
    /// the default's, and the backoff reaches its 10 s ceiling): the spool grows, the agent
    /// answers, and it drains once the endpoint is back.
    func testEndpointUnreachableForHalfAMinuteThenDrains() throws {
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "away")
        try endpoint.start()
        defer { endpoint.terminate() }
        let session = try endpoint.createSession()
        let daemon = try DaemonProcess(rig: rig, name: "uplink-away", env: ["CAPTURE_AGENT_CHUNK": "0.5s"])
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        try UplinkSessionTests.start(client, session: session, token: try endpoint.mintToken(), endpoint: endpoint)
        Thread.sleep(forTimeInterval: 3)
        XCTAssertEqual(endpoint.terminate(), 0)
        var pending: [Int] = []
        for _ in 0..<6 {
            Thread.sleep(forTimeInterval: 5)
            let status = try assertAnswers(daemon)
            XCTAssertEqual(status.upload?.connected, false)
            pending.append(status.upload?.chunksPending ?? -1)
        }
        XCTAssertTrue(zip(pending, pending.dropFirst()).allSatisfy { $1 > $0 }, "the spool grows: \(pending)")
        // 3 channels x 2 chunks a second x (30 s less the last chunk's half second in the making).
        XCTAssertGreaterThanOrEqual(pending.last ?? 0, 3 * 2 * 29, "\(pending)")
        let lag = try assertAnswers(daemon).upload?.uploadLagMs ?? 0
        XCTAssertGreaterThan(lag, 28_000, "the lag says how far behind the upload is")
        try endpoint.start()
        // Drains while recording goes on.
        let deadline = Date().addingTimeInterval(90)
        var drained = false
        while Date() < deadline {
            Thread.sleep(forTimeInterval: 2)
            if let n = try assertAnswers(daemon).upload?.chunksPending, n <= 6 { drained = true; break }
        }
        XCTAssertTrue(drained, "the spool drains once the endpoint is back; log:\n\(daemon.log.suffix(3000))")
        try finish(client, daemon: daemon, endpoint: endpoint, session: session)
    }

    /// The agent SIGKILLed mid-session and started again: the chunks its spool kept arrive
    /// (with the token it kept in its runtime dir), and the stream ends as interrupted.
    func testAgentKilledMidSessionDeliversItsSpoolAfterRestart() throws {
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "agentkill")
        try endpoint.start()
        defer { endpoint.terminate() }
        let session = try endpoint.createSession()
        let token = try endpoint.mintToken()
        let daemon = try DaemonProcess(rig: rig, name: "uplink-agentkill")
        let client = try daemon.client()
        try UplinkSessionTests.start(client, session: session, token: token, endpoint: endpoint)
        Thread.sleep(forTimeInterval: 3)
        // The endpoint goes away first so that the spool holds chunks when the agent dies.
        endpoint.kill9()
        Thread.sleep(forTimeInterval: 5)
        let spooled = try spooledChunkFiles(daemon.sessionDirectory(session))
        XCTAssertGreaterThanOrEqual(spooled, 9, "chunks wait in the spool")
        kill(daemon.process.processIdentifier, SIGKILL)
        daemon.process.waitUntilExit()
        try endpoint.start()

        let again = try DaemonProcess(rig: rig, name: "uplink-agentkill-2", reusing: daemon)
        let second = try again.client()
        // The resumed upload may finish before this subscription: then it is among the recent events.
        let recent = try second.ok(.subscribeEvents, as: SubscriptionResult.self).recent ?? []
        let complete = try XCTUnwrap(try recent.first { $0.name == .recordingComplete }
            ?? second.event(.recordingComplete, within: 60), "log:\n\(again.log.suffix(3000))")
        XCTAssertEqual(complete.recordingComplete?.deliveredTo, .endpoint)
        let stored = try endpoint.verifyStored(session, interrupted: true)
        XCTAssertEqual(stored.count, 3)
        XCTAssertGreaterThanOrEqual(stored.values.reduce(0, +), spooled, "everything the spool had, and what came before")
        XCTAssertEqual(try endpoint.session(session)["status"] as? String, "stopped")
        XCTAssertFalse(FileManager.default.fileExists(atPath: again.sessionDirectory(session)))
        XCTAssertTrue(again.log.contains("resuming the upload of an earlier session"))
        _ = try endpoint.export(session)
    }

    /// A token the endpoint does not know, and one that expires mid-session: clear errors
    /// and events, capture goes on, and after updateToken everything arrives.
    func testBadAndExpiredTokensThenUpdateTokenLosesNothing() throws {
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "tokens")
        try endpoint.start()
        defer { endpoint.terminate() }
        let daemon = try DaemonProcess(rig: rig, name: "uplink-tokens")
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")

        // Unknown token.
        let first = try endpoint.createSession()
        try UplinkSessionTests.start(client, session: first, token: "cct_not_a_token_the_endpoint_made", endpoint: endpoint)
        let rejected = try XCTUnwrap(try client.event(.tokenExpired, within: 10))
        XCTAssertEqual(rejected.tokenExpired?.reason, .invalid)
        XCTAssertEqual(rejected.tokenExpired?.closeCode, 4010)
        Thread.sleep(forTimeInterval: 3)
        var status = try assertAnswers(daemon)
        XCTAssertEqual(status.state, .active, "capture goes on")
        XCTAssertEqual(status.upload?.phase, .needsToken)
        _ = try client.ok("updateToken", ["token": .string(try endpoint.mintToken())])
        try finish(client, daemon: daemon, endpoint: endpoint, session: first)

        // A token that expires after 4 s of a 12 s session.
        let second = try endpoint.createSession()
        try UplinkSessionTests.start(client, session: second, token: try endpoint.mintToken(expiresIn: 4), endpoint: endpoint)
        let expired = try XCTUnwrap(try client.event(.tokenExpired, within: 15))
        XCTAssertEqual(expired.tokenExpired?.reason, .expired)
        XCTAssertEqual(expired.tokenExpired?.closeCode, 4011)
        Thread.sleep(forTimeInterval: 6)
        status = try assertAnswers(daemon)
        XCTAssertGreaterThan(status.upload?.chunksPending ?? 0, 6, "the spool holds what waits: \(status)")
        _ = try client.ok("updateToken", ["token": .string(try endpoint.mintToken())])
        Thread.sleep(forTimeInterval: 2)
        try finish(client, daemon: daemon, endpoint: endpoint, session: second)

        // A token revoked while the session uploads: the endpoint closes at once (4012).
        let third = try endpoint.createSession()
        let doomed = try endpoint.mintToken()
        try UplinkSessionTests.start(client, session: third, token: doomed, endpoint: endpoint)
        Thread.sleep(forTimeInterval: 3)
        try endpoint.revoke(doomed)
        let revoked = try XCTUnwrap(try client.event(.tokenExpired, within: 10))
        XCTAssertEqual(revoked.tokenExpired?.reason, .revoked)
        XCTAssertEqual(revoked.tokenExpired?.closeCode, 4012)
        Thread.sleep(forTimeInterval: 3)
        _ = try client.ok("updateToken", ["token": .string(try endpoint.mintToken())])
        try finish(client, daemon: daemon, endpoint: endpoint, session: third)
        XCTAssertTrue(daemon.log.contains("refused the upload token"))
        for token in [doomed] { XCTAssertFalse(daemon.log.contains(token)) }
    }

    /// A backend rotates the token while the session streams: the session belongs to the old
    /// token at the endpoint until it expires (another token's hello is refused, 4013), so the
    /// agent streams on with it and goes on with the new one the moment the old one is
    /// refused, without asking for a token and without losing a chunk.
    func testATokenGivenWhileStreamingTakesOverWhenTheOldOneExpires() throws {
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "rotation")
        try endpoint.start()
        defer { endpoint.terminate() }
        let daemon = try DaemonProcess(rig: rig, name: "uplink-rotation")
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        let session = try endpoint.createSession()
        try UplinkSessionTests.start(client, session: session, token: try endpoint.mintToken(expiresIn: 5), endpoint: endpoint)
        Thread.sleep(forTimeInterval: 2)
        _ = try client.ok("updateToken", ["token": .string(try endpoint.mintToken())])
        XCTAssertNil(try client.event(.tokenExpired, within: 8), "the agent asked for a token it already has")
        let status = try assertAnswers(daemon)
        XCTAssertEqual(status.upload?.phase, .streaming, "\(status)")
        try finish(client, daemon: daemon, endpoint: endpoint, session: session)
        XCTAssertTrue(daemon.log.contains("going on with the one updateToken gave"), "the old token's expiry is what this test is about")
    }

    /// Two uploads to two endpoints: A's waits (A is down) while a session records to B.
    /// `updateToken` with B's new token reaches B's upload only (the answer lists it), so
    /// when A comes back its upload finishes with A's own token: A never sees B's.
    func testUpdateTokenReachesOnlyTheUploadsOfItsEndpoint() throws {
        let rig = try TestRig.shared()
        let a = try LiveEndpoint(name: "token-a")
        let b = try LiveEndpoint(name: "token-b")
        try a.start()
        try b.start()
        defer {
            a.terminate()
            b.terminate()
        }
        let daemon = try DaemonProcess(rig: rig, name: "uplink-two-endpoints")
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")

        let onA = try a.createSession()
        try UplinkSessionTests.start(client, session: onA, token: try a.mintToken(), endpoint: a)
        Thread.sleep(forTimeInterval: 2)
        a.kill9()
        Thread.sleep(forTimeInterval: 1)
        _ = try client.ok("stopRecording")

        let onB = try b.createSession()
        try UplinkSessionTests.start(client, session: onB, token: try b.mintToken(), endpoint: b)
        Thread.sleep(forTimeInterval: 2)
        let newToken = try b.mintToken()
        let answer = try client.ok(.updateToken, ["token": .string(newToken)], as: UpdateTokenResult.self)
        XCTAssertEqual(answer.uploads, [onB], "\(answer)")
        XCTAssertTrue(answer.endpoint?.contains(":\(b.port)/") == true, "\(answer)")
        let named = try client.ok(.updateToken, ["token": .string(newToken), "endpoint": .string(b.baseURL)], as: UpdateTokenResult.self)
        XCTAssertEqual(named.uploads, [onB], "\(named)")
        try finish(client, daemon: daemon, endpoint: b, session: onB)

        try a.start()
        var completed: [String] = []
        let deadline = Date().addingTimeInterval(60)
        while !completed.contains(onA), Date() < deadline {
            if let event = try client.event(.recordingComplete, within: 1), let id = event.sessionId { completed.append(id) }
        }
        // Had B's token reached it, A would close the upload with 4010 and it would wait for a token.
        XCTAssertTrue(completed.contains(onA), "A's upload finished with A's token; log:\n\(daemon.log.suffix(3000))")
        XCTAssertFalse(daemon.log.contains(newToken))
        _ = try a.verifyStored(onA, interrupted: false)
    }

    /// The agent killed, and its token gone with the runtime directory's file (a logout):
    /// the restarted agent keeps the spool, says the upload needs a token, and delivers
    /// everything after updateToken. The session belongs to the lost token while it is
    /// valid (4013 for another): a new token is first told to retry, and takes the session
    /// over once the backend revokes the lost one.
    func testAgentKilledWithoutItsTokenDeliversAfterUpdateToken() throws {
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "agentkill-notoken")
        try endpoint.start()
        defer { endpoint.terminate() }
        let session = try endpoint.createSession()
        let daemon = try DaemonProcess(rig: rig, name: "uplink-notoken")
        let client = try daemon.client()
        let lost = try endpoint.mintToken()
        try UplinkSessionTests.start(client, session: session, token: lost, endpoint: endpoint)
        Thread.sleep(forTimeInterval: 2)
        endpoint.kill9()
        Thread.sleep(forTimeInterval: 4)
        kill(daemon.process.processIdentifier, SIGKILL)
        daemon.process.waitUntilExit()
        try FileManager.default.removeItem(atPath: daemon.runtimeDir + "/capture-agent/tokens/" + session)
        try endpoint.start()

        let again = try DaemonProcess(rig: rig, name: "uplink-notoken-2", reusing: daemon)
        let second = try again.client()
        _ = try second.ok("subscribeEvents")
        Thread.sleep(forTimeInterval: 1)
        let waiting = try second.ok(.getStatus, as: StatusResult.self).earlierUploads[session]
        XCTAssertEqual(waiting?.phase, .needsToken, "\(String(describing: waiting))")
        XCTAssertGreaterThan(waiting?.chunksPending ?? 0, 6)
        _ = try second.ok("updateToken", ["token": .string(try endpoint.mintToken())])
        Thread.sleep(forTimeInterval: 3)
        let retrying = try second.ok(.getStatus, as: StatusResult.self).earlierUploads[session]
        XCTAssertNotEqual(retrying?.phase, .needsToken, "4013 keeps the token: \(String(describing: retrying))")
        XCTAssertTrue(again.log.contains("4013"), "the new token met the session's streaming token")
        XCTAssertNil(try second.event(.recordingComplete, within: 1), "another token took the session over")
        try endpoint.revoke(lost)
        let complete = try XCTUnwrap(try second.event(.recordingComplete, within: 60), "log:\n\(again.log.suffix(3000))")
        XCTAssertEqual(complete.sessionId, session)
        let stored = try endpoint.verifyStored(session, interrupted: true)
        XCTAssertEqual(stored.count, 3)
        XCTAssertFalse(FileManager.default.fileExists(atPath: again.sessionDirectory(session)))
    }

    /// spool_budget counts what waits in the spool: a session whose chunks are acknowledged
    /// records past the budget; with the endpoint gone the same budget stops it (IO_ERROR,
    /// recording-failed) and nothing unacknowledged is deleted, and once the endpoint is back
    /// what the spool kept is delivered.
    func testSpoolBudgetCountsOnlyWhatWaitsForTheEndpoint() throws {
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "budget")
        try endpoint.start()
        defer { endpoint.terminate() }
        let daemon = try DaemonProcess(rig: rig, name: "uplink-budget", env: ["CAPTURE_AGENT_SPOOL_BUDGET": "3MiB"])
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")

        let first = try endpoint.createSession()
        try UplinkSessionTests.start(client, session: first, token: try endpoint.mintToken(), endpoint: endpoint)
        Thread.sleep(forTimeInterval: 14)
        let status = try assertAnswers(daemon)
        XCTAssertEqual(status.state, .active, "uploaded chunks do not count: \(status)")
        let spooled = status.channels.reduce(0) { $0 + $1.bytes }
        XCTAssertGreaterThan(spooled, 3 << 20, "the session recorded more than the budget")
        try finish(client, daemon: daemon, endpoint: endpoint, session: first)

        let second = try endpoint.createSession()
        try UplinkSessionTests.start(client, session: second, token: try endpoint.mintToken(), endpoint: endpoint)
        Thread.sleep(forTimeInterval: 2)
        endpoint.kill9()
        let failed = try XCTUnwrap(try client.event(.recordingFailed, within: 40), "log:\n\(daemon.log.suffix(3000))")
        XCTAssertEqual(failed.recordingFailed?.code, .ioError)
        XCTAssertTrue(failed.recordingFailed?.message.contains("spool_budget") ?? false, "\(failed)")
        XCTAssertGreaterThan(try spooledChunkFiles(daemon.sessionDirectory(second)), 3, "the spool kept what waits")
        try endpoint.start()
        let complete = try XCTUnwrap(try client.event(.recordingComplete, within: 60))
        XCTAssertEqual(complete.sessionId, second)
        XCTAssertEqual(complete.recordingComplete?.deliveredTo, .endpoint)
        let stored = try endpoint.verifyStored(second)
        XCTAssertEqual(stored.count, 3)
    }

    func spooledChunkFiles(_ directory: String) throws -> Int {
        var n = 0
        for channel in try FileManager.default.contentsOfDirectory(atPath: directory) {
            let path = directory + "/" + channel
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { continue }
            n += names.filter { $0.hasPrefix("chunk-") && $0.hasSuffix(".json") }.count
        }
        return n
    }
}

extension XCTestCase {
    /// Stops the session, waits for recording-complete (endpoint) and checks the endpoint
    /// holds exactly what the agent spooled.
    func finish(_ client: ControlClient, daemon: DaemonProcess, endpoint: LiveEndpoint, session: String,
                within seconds: Double = 90, file: StaticString = #filePath, line: UInt = #line) throws {
        let stopped = try client.ok(.stopRecording, as: StopRecordingResult.self, file: file, line: line)
        let spooled = UplinkSessionTests.spooledChunks(stopped)
        XCTAssertEqual(spooled.count, 3, "\(stopped)", file: file, line: line)
        let complete = try XCTUnwrap(try client.event(.recordingComplete, within: seconds),
                                     "no recording-complete; log:\n\(daemon.log.suffix(4000))", file: file, line: line)
        XCTAssertEqual(complete.recordingComplete?.deliveredTo, .endpoint, file: file, line: line)
        let stored = try endpoint.verifyStored(session, file: file, line: line)
        XCTAssertEqual(stored, spooled, "no chunk missing, none twice", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: daemon.sessionDirectory(session)), file: file, line: line)
    }

    /// The control socket answers while the upload is in trouble.
    func assertAnswers(_ daemon: DaemonProcess, file: StaticString = #filePath, line: UInt = #line) throws -> StatusResult {
        // A fresh connection each time: a hung daemon would not accept or answer it.
        guard daemon.process.isRunning else {
            XCTFail("the daemon died (status \(daemon.process.terminationStatus)); log:\n\(daemon.log.suffix(6000))", file: file, line: line)
            throw CaptureError(.agentNotRunning, "the daemon died")
        }
        let probe = try daemon.client()
        return try probe.ok(.getStatus, as: StatusResult.self, timeout: .seconds(10), file: file, line: line)
    }
}
