import CaptureCore
import SHA256
import CaptureEndpoint
import CaptureUplink
import Foundation
import Logging
import GRDB
import Hummingbird
import EndpointClient
import XCTest

/// The uplink over real sockets (the endpoint served on loopback, EndpointClient's
/// WebSocket client): chunks stored exactly once and durably, every refusal with
/// its code, and every close code a client must act on.
final class UplinkTests: XCTestCase {
    /// A new session and a client token on `client`'s endpoint.
    static func newSession(_ client: EndpointTestClient, key: String = EndpointHarness.keyA, body: String? = nil,
                           expiresIn: Int = 3600) async throws -> (session: String, token: String) {
        let created = try await client.call(.post, "/collection/default/capture/session", key: key,
                                            json: body ?? #"{"end_user_id": "uplink-test"}"#)
        XCTAssertEqual(created.status, .ok, created.raw)
        let token = try await client.call(.post, "/capture/session/token", key: key, json: "{\"expires_in\": \(expiresIn)}")
        XCTAssertEqual(token.status, .ok, token.raw)
        return (try XCTUnwrap(dataOf(created.body)["session_id"] as? String), try XCTUnwrap(dataOf(token.body)["token"] as? String))
    }

    static func hello(_ session: String, _ token: String, channels: [UplinkChannel] = TestChannels.all) -> UplinkHello {
        UplinkHello(token: token, sessionId: session, agent: "uplink-tests", channels: channels)
    }

    func testChunksAreStoredOnceDurablyAndTheSessionGoesActiveThenStopped() async throws {
        let harness = EndpointHarness()
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            let (session, token) = try await Self.newSession(client)
            var uplink = try await UplinkTestClient.connect(port: port)
            try await uplink.send(Self.hello(session, token))
            let welcome = try await uplink.expectWelcome()
            XCTAssertEqual(welcome.sessionId, session)
            XCTAssertEqual(welcome.status, "starting")
            XCTAssertEqual(welcome.channels.map(\.nextSeq), [0, 0, 0])
            XCTAssertEqual(welcome.window, 16)

            var sent: [TestChunk] = []
            for seq in 0..<3 {
                for channel in TestChannels.all {
                    let chunk = TestChunk(channel: channel.channelId, seq: seq, bytes: channel.mediaType == .video ? 200_000 : 16_000,
                                          isFinal: seq == 2)
                    sent.append(chunk)
                    try await uplink.sendChunk(chunk)  // several in flight: acks are read below
                }
            }
            for chunk in sent {
                let ack = try await uplink.expectAck()
                XCTAssertEqual([ack.channelId, "\(ack.seq)", ack.sha256], [chunk.header.channelId, "\(chunk.header.seq)", chunk.header.sha256])
                XCTAssertFalse(ack.duplicate)
            }
            // A resend is acknowledged again and not stored twice.
            try await uplink.sendChunk(sent[3])
            let again = try await uplink.expectAck()
            XCTAssertTrue(again.duplicate)
            XCTAssertEqual(again.seq, 1)

            let active = try await client.call(.get, "/collection/default/capture/session/\(session)")
            let data = dataOf(active.body)
            XCTAssertEqual(data["status"] as? String, "active")
            XCTAssertEqual(data["primary_video_channel_id"] as? String, "display:1")
            let rtstreams = data["rtstreams"] as? [[String: Any]] ?? []
            XCTAssertEqual(rtstreams.compactMap { $0["channel_id"] as? String }, ["screen", "mic", "system_audio"])
            XCTAssertEqual(rtstreams.compactMap { $0["source_channel_id"] as? String }, ["display:1", "mic:default", "system_audio:default"])
            XCTAssertEqual(rtstreams.compactMap { $0["status"] as? String }, ["ended", "ended", "ended"])
            let channels = data["channels"] as? [[String: Any]] ?? []
            XCTAssertEqual(channels.compactMap { $0["channel_id"] as? String }, ["display:1", "mic:default", "system_audio:default"])
            XCTAssertEqual(channels.compactMap { $0["type"] as? String }, ["video", "audio", "audio"])

            // The live playlist lists the stored chunks, and its segments are their bytes.
            let playlistURL = try XCTUnwrap(rtstreams.first?["stream_url"] as? String)
            let playlistPath = String(playlistURL[try XCTUnwrap(playlistURL.range(of: "/hls/")).lowerBound...])
            let playlist = try await client.call(.get, playlistPath, key: nil)
            XCTAssertEqual(playlist.status, .ok)
            XCTAssertTrue(playlist.raw.hasPrefix("#EXTM3U\n"), playlist.raw)
            XCTAssertEqual(playlist.raw.components(separatedBy: "#EXTINF:1.000000,").count - 1, 3, playlist.raw)
            XCTAssertTrue(playlist.raw.contains("#EXT-X-ENDLIST"), "the display channel's final chunk is in")
            let segmentPath = playlistPath.replacingOccurrences(of: "index.m3u8", with: "chunk-000001.ts")
            let segment = try await client.executeRequest(uri: segmentPath, method: .get, headers: [:], body: nil)
            XCTAssertEqual(Array(segment.body.readableBytesView), sent[3].payload)
            let wrongKey = playlistPath.replacingOccurrences(of: "/c0/", with: "/c9/")
            let wrong = try await client.call(.get, wrongKey, key: nil)
            XCTAssertEqual(wrong.status, .notFound)

            try await uplink.send(UplinkEnd())
            guard case .ended(let ended) = try await uplink.next() else { return XCTFail("no ended") }
            XCTAssertEqual(ended.status, "stopped")
            XCTAssertEqual(ended.channels.map(\.nextSeq), [3, 3, 3])
            XCTAssertTrue(ended.channels.allSatisfy(\.complete))
            try await uplink.expectClose(.normal)

            let stopped = try await client.call(.get, "/collection/default/capture/session/\(session)")
            XCTAssertEqual(dataOf(stopped.body)["status"] as? String, "stopped")
            XCTAssertNotNil(dataOf(stopped.body)["stopped_at"] as? String)

            // After the stop, a reconnect is refused for good.
            var late = try await UplinkTestClient.connect(port: port)
            try await late.send(Self.hello(session, token))
            try await late.expectClose(.sessionClosed)
        }

        // Every chunk is a file with its bytes and one index row, nothing twice.
        let database = try DatabaseQueue(path: harness.configuration.databasePath)
        let rows = try database.read { db in
            try Row.fetchAll(db, sql: "SELECT channel_id, seq, sha256, file, bytes FROM chunks ORDER BY channel_id, seq")
        }
        XCTAssertEqual(rows.count, 9)
        for row in rows {
            let file: String = row["file"]
            let data = try Data(contentsOf: URL(fileURLWithPath: harness.dataDirectory + "/" + file))
            XCTAssertEqual(data.count, row["bytes"] as Int)
            XCTAssertEqual(data.withUnsafeBytes { SHA256.hexDigest($0) }, row["sha256"] as String, file)
            XCTAssertTrue(file.hasPrefix("sessions/cap-") && !file.contains(".."), file)
        }
        let leftovers = FileManager.default.enumerator(atPath: harness.dataDirectory + "/sessions")?
            .compactMap { $0 as? String }.filter { $0.hasSuffix(".tmp") } ?? []
        XCTAssertEqual(leftovers, [])
    }

    func testRefusedChunksKeepTheConnectionAndDoNotMoveTheChannel() async throws {
        let harness = EndpointHarness { $0.maxChunkBytes = 100_000 }
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let (session, token) = try await Self.newSession(client)
            var uplink = try await UplinkTestClient.connect(port: try XCTUnwrap(client.port))
            try await uplink.send(Self.hello(session, token, channels: [TestChannels.display, TestChannels.mic]))
            let welcome = try await uplink.expectWelcome()
            XCTAssertEqual(welcome.maxChunkBytes, 100_000)

            // A gap: seq 1 before seq 0.
            try await uplink.sendChunk(TestChunk(channel: "display:1", seq: 1))
            let gap = try await uplink.expectError(.seqGap)
            XCTAssertEqual([gap.channelId, gap.seq.map(String.init), gap.expectedSeq.map(String.init)], ["display:1", "1", "0"])

            // A payload whose hash is not the header's.
            var corrupt = TestChunk(channel: "display:1", seq: 0)
            corrupt.payload[100] ^= 0xff
            try await uplink.sendChunk(corrupt)
            let mismatch = try await uplink.expectError(.hashMismatch)
            XCTAssertEqual(mismatch.seq, 0)

            // A header that lies about its size, both ways.
            var liar = TestChunk(channel: "display:1", seq: 0)
            liar.header.bytes += 10
            try await uplink.sendChunk(liar)
            _ = try await uplink.expectError(.sizeMismatch)
            liar.header.bytes -= 20
            try await uplink.sendChunk(liar)
            _ = try await uplink.expectError(.sizeMismatch)

            // Too big, a channel the hello did not name, a bad digest.
            try await uplink.sendChunk(TestChunk(channel: "display:1", seq: 0, bytes: 100_001))
            _ = try await uplink.expectError(.badChunk)
            try await uplink.sendChunk(TestChunk(channel: "system_audio:default", seq: 0))
            _ = try await uplink.expectError(.unknownChannel)
            var badDigest = TestChunk(channel: "mic:default", seq: 0)
            badDigest.header.sha256 = "xyz"
            try await uplink.sendChunk(badDigest)
            _ = try await uplink.expectError(.badChunk)

            // Nothing was stored: seq 0 is still the one expected, and is taken now.
            let good = TestChunk(channel: "display:1", seq: 0)
            try await uplink.sendChunk(good)
            let goodAck = try await uplink.expectAck()
            XCTAssertEqual(goodAck.seq, 0)
            // A replay of seq 0 with other bytes is a conflict, not a silent overwrite.
            try await uplink.sendChunk(TestChunk(channel: "display:1", seq: 0))
            _ = try await uplink.expectError(.seqConflict)

            // `end` before the final chunks: incomplete, connection still open.
            try await uplink.send(UplinkEnd())
            let incomplete = try await uplink.expectError(.incomplete)
            XCTAssertTrue(incomplete.message.contains("display:1") && incomplete.message.contains("mic:default"), incomplete.message)

            try await uplink.sendChunk(TestChunk(channel: "display:1", seq: 1, isFinal: true))
            _ = try await uplink.expectAck()
            try await uplink.sendChunk(TestChunk(channel: "display:1", seq: 2))
            _ = try await uplink.expectError(.channelComplete)
            try await uplink.sendChunk(TestChunk(channel: "mic:default", seq: 0, isFinal: true))
            _ = try await uplink.expectAck()
            try await uplink.send(UplinkEnd())
            guard case .ended = try await uplink.next() else { return XCTFail("no ended") }
            try await uplink.expectClose(.normal)
        }
        let database = try DatabaseQueue(path: harness.configuration.databasePath)
        let count = try await database.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM chunks") }
        XCTAssertEqual(count, 3)
    }

    /// Timeline numbers a client sends are bounded before anything adds them up: a chunk
    /// starting past 31 days is refused, and so is the chunk that would make a channel's
    /// stored duration pass 31 days (744 chunks of an hour; 2.5 M of them overflowed an Int64
    /// and trapped the endpoint). The connection stays open and the channel where it was.
    func testTimelineNumbersAreBoundedBeforeTheyAreAdded() async throws {
        let harness = EndpointHarness()
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let (session, token) = try await Self.newSession(client)
            var uplink = try await UplinkTestClient.connect(port: try XCTUnwrap(client.port))
            try await uplink.send(Self.hello(session, token, channels: [TestChannels.mic]))
            _ = try await uplink.expectWelcome()

            var far = TestChunk(channel: "mic:default", seq: 0, bytes: 1)
            far.header.startPtsNs = .max
            try await uplink.sendChunk(far)
            let farError = try await uplink.expectError(.badChunk)
            XCTAssertTrue(farError.message.contains("31 days"), farError.message)

            let hours = Int(UplinkProtocol.maxTimelineNs / UplinkProtocol.maxChunkDurationNs)
            XCTAssertEqual(hours, 744)
            for seq in 0...hours {
                let chunk = TestChunk(channel: "mic:default", seq: seq, bytes: 1,
                                      startNs: Int64(seq) * UplinkProtocol.maxChunkDurationNs,
                                      durationNs: UplinkProtocol.maxChunkDurationNs)
                try await uplink.sendChunk(chunk)
                if seq < hours {
                    let ack = try await uplink.expectAck()
                    XCTAssertEqual(ack.seq, seq)
                } else {
                    let full = try await uplink.expectError(.badChunk)
                    XCTAssertTrue(full.message.contains("more than 31 days"), full.message)
                    XCTAssertEqual(full.seq, hours)
                }
            }
            // Still open, and the channel still expects the refused seq.
            let short = TestChunk(channel: "mic:default", seq: hours, bytes: 1, isFinal: true,
                                  startNs: Int64(hours) * UplinkProtocol.maxChunkDurationNs, durationNs: 0)
            try await uplink.sendChunk(short)
            let ack = try await uplink.expectAck()
            XCTAssertEqual(ack.seq, hours)
        }
    }

    func testProtocolErrorsCloseWith4000AfterSayingWhy() async throws {
        let harness = EndpointHarness()
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            let (session, token) = try await Self.newSession(client)

            var beforeHello = try await UplinkTestClient.connect(port: port)
            try await beforeHello.sendChunk(TestChunk(channel: "display:1", seq: 0))
            _ = try await beforeHello.expectError(.helloExpected)
            try await beforeHello.expectClose(.protocolError)

            var notJSON = try await UplinkTestClient.connect(port: port)
            try await notJSON.sendText("hello there")
            _ = try await notJSON.expectError(.badMessage)
            try await notJSON.expectClose(.protocolError)

            var badHello = try await UplinkTestClient.connect(port: port)
            var hello = Self.hello(session, token)
            hello.channels.append(TestChannels.mic)
            try await badHello.send(hello)
            _ = try await badHello.expectError(.badHello)
            try await badHello.expectClose(.protocolError)

            var version = try await UplinkTestClient.connect(port: port)
            hello = Self.hello(session, token)
            hello.protocolVersion = 2
            try await version.send(hello)
            _ = try await version.expectError(.badHello)
            try await version.expectClose(.unsupportedProtocol)

            var garbage = try await UplinkTestClient.connect(port: port)
            try await garbage.send(Self.hello(session, token))
            _ = try await garbage.expectWelcome()
            try await garbage.sendBinary(Array("GET / HTTP/1.1\r\n\r\n".utf8) + [UInt8](repeating: 0xee, count: 64))
            _ = try await garbage.expectError(.badFrame)
            try await garbage.expectClose(.protocolError)

            var twice = try await UplinkTestClient.connect(port: port)
            try await twice.send(Self.hello(session, token))
            _ = try await twice.expectWelcome()
            try await twice.send(Self.hello(session, token))
            _ = try await twice.expectError(.helloExpected)
            try await twice.expectClose(.protocolError)

            var endpointMessage = try await UplinkTestClient.connect(port: port)
            try await endpointMessage.send(Self.hello(session, token))
            _ = try await endpointMessage.expectWelcome()
            try await endpointMessage.send(UplinkAck(channelId: "display:1", seq: 0, sha256: String(repeating: "0", count: 64), duplicate: false))
            _ = try await endpointMessage.expectError(.badMessage)
            try await endpointMessage.expectClose(.protocolError)

            // The endpoint carries on: a well-behaved client is served.
            var fine = try await UplinkTestClient.connect(port: port)
            try await fine.send(Self.hello(session, token))
            _ = try await fine.expectWelcome()
            try await fine.sendChunk(TestChunk(channel: "display:1", seq: 0))
            _ = try await fine.expectAck()
            try await fine.close()
        }
    }

    func testTokensAndSessionsAreCheckedWithDistinctCloseCodes() async throws {
        let harness = EndpointHarness()
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            let (session, token) = try await Self.newSession(client)

            var unknown = try await UplinkTestClient.connect(port: port)
            try await unknown.send(Self.hello(session, "cct_" + String(repeating: "A", count: 43)))
            try await unknown.expectClose(.tokenInvalid)

            // Account B's token, account A's session: as if the session did not exist.
            let (_, tokenB) = try await Self.newSession(client, key: EndpointHarness.keyB)
            var otherAccount = try await UplinkTestClient.connect(port: port)
            try await otherAccount.send(Self.hello(session, tokenB))
            try await otherAccount.expectClose(.sessionNotFound)

            var noSession = try await UplinkTestClient.connect(port: port)
            try await noSession.send(Self.hello("cap-" + String(repeating: "0", count: 32), token))
            try await noSession.expectClose(.sessionNotFound)
            var traversal = try await UplinkTestClient.connect(port: port)
            try await traversal.send(Self.hello("../../endpoint.sqlite", token))
            try await traversal.expectClose(.sessionNotFound)

            let (shortSession, shortToken) = try await Self.newSession(client, expiresIn: 1)
            try await Task.sleep(for: .milliseconds(1300))
            var expired = try await UplinkTestClient.connect(port: port)
            try await expired.send(Self.hello(shortSession, shortToken))
            try await expired.expectClose(.tokenExpired)

            // Expired while connected: the next chunk closes the connection.
            let (laterSession, laterToken) = try await Self.newSession(client, expiresIn: 2)
            var expiring = try await UplinkTestClient.connect(port: port)
            try await expiring.send(Self.hello(laterSession, laterToken, channels: [TestChannels.mic]))
            _ = try await expiring.expectWelcome()
            try await expiring.sendChunk(TestChunk(channel: "mic:default", seq: 0))
            _ = try await expiring.expectAck()
            try await Task.sleep(for: .milliseconds(2100))
            try await expiring.sendChunk(TestChunk(channel: "mic:default", seq: 1))
            try await expiring.expectClose(.tokenExpired)

            // Revoked while connected: the open connection is closed at once.
            var revoked = try await UplinkTestClient.connect(port: port)
            try await revoked.send(Self.hello(session, token))
            _ = try await revoked.expectWelcome()
            let revoke = try await client.call(.post, "/capture/session/token/revoke", json: "{\"token\": \"\(token)\"}")
            XCTAssertEqual(revoke.status, .ok)
            try await revoked.expectClose(.tokenRevoked)
            var afterRevoke = try await UplinkTestClient.connect(port: port)
            try await afterRevoke.send(Self.hello(session, token))
            try await afterRevoke.expectClose(.tokenRevoked)
        }
    }

    func testAReconnectResumesWhereTheWelcomeSaysAndSupersedesTheOldConnection() async throws {
        let harness = EndpointHarness()
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            let (session, token) = try await Self.newSession(client)
            var first = try await UplinkTestClient.connect(port: port)
            try await first.send(Self.hello(session, token))
            _ = try await first.expectWelcome()
            for seq in 0..<3 {
                try await first.sendChunk(TestChunk(channel: "display:1", seq: seq))
                _ = try await first.expectAck()
            }
            try await first.sendChunk(TestChunk(channel: "mic:default", seq: 0))
            _ = try await first.expectAck()

            var second = try await UplinkTestClient.connect(port: port)
            try await second.send(Self.hello(session, token, channels: TestChannels.all.reversed()))
            let welcome = try await second.expectWelcome()
            XCTAssertEqual(Dictionary(uniqueKeysWithValues: welcome.channels.map { ($0.channelId, $0.nextSeq) }),
                           ["display:1": 3, "mic:default": 1, "system_audio:default": 0])
            try await first.expectClose(.superseded)

            var mismatch = try await UplinkTestClient.connect(port: port)
            try await mismatch.send(Self.hello(session, token, channels: [TestChannels.display, TestChannels.mic]))
            _ = try await mismatch.expectError(.channelMismatch)
            try await mismatch.expectClose(.protocolError)

            try await second.sendChunk(TestChunk(channel: "display:1", seq: 3))
            let resumed = try await second.expectAck()
            XCTAssertEqual(resumed.seq, 3)
            try await second.close()
        }
    }

    func testAClientThatStopsReadingIsDroppedAndStallsNobodyElse() async throws {
        let harness = EndpointHarness {
            $0.uplinkWriteTimeoutSeconds = 2
            // Not the rate limit's test: at the default 200 chunks a second the refusals took
            // 30 s to fill the sockets (the flood's own deadline), now about 3.
            $0.limits.chunksPerSecond = 100_000
        }
        defer { harness.remove() }
        let (app, components) = try harness.build()
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            let (stuckSession, stuckToken) = try await Self.newSession(client)
            let (goodSession, goodToken) = try await Self.newSession(client)

            // A peer with a 4 KiB receive window that says hello and then only sends: refused
            // chunks, each answered with an error it never reads, until its socket is full.
            let hello = UplinkTextMessage.encode(Self.hello(stuckSession, stuckToken, channels: [TestChannels.mic]))
            let flood: Task<(head: String, sent: Int, dropped: Bool), Never> = Task.detached {
                guard let socket = try? RawSocket(port: port, receiveBuffer: 4096) else { return ("", 0, false) }
                let head = socket.upgrade(path: UplinkProtocol.path)
                guard head.hasPrefix("HTTP/1.1 101"), socket.send(RawSocket.frame(opcode: 1, Array(hello.utf8))) else {
                    return (head, 0, false)
                }
                let refused = RawSocket.frame(opcode: 2, TestChunk(channel: "display:1", seq: 0, bytes: 16).frame)
                var sent = 0
                let started = ContinuousClock.now
                while ContinuousClock.now - started < .seconds(30) {
                    guard socket.send(refused) else { return (head, sent, true) }
                    sent += 1
                }
                return (head, sent, false)
            }

            // Meanwhile another client is served as usual.
            try await Task.sleep(for: .milliseconds(500))
            var good = try await UplinkTestClient.connect(port: port)
            try await good.send(Self.hello(goodSession, goodToken, channels: [TestChannels.mic]))
            _ = try await good.expectWelcome()
            for seq in 0..<5 {
                try await good.sendChunk(TestChunk(channel: "mic:default", seq: seq))
                let ack = try await good.expectAck()
                XCTAssertEqual(ack.seq, seq)
            }

            let result = await flood.value
            XCTAssertTrue(result.head.hasPrefix("HTTP/1.1 101"), result.head)
            XCTAssertTrue(result.dropped, "the endpoint dropped the peer that stopped reading (\(result.sent) frames sent)")
            XCTAssertGreaterThan(result.sent, 100, "the peer filled its socket before it was dropped")
            try await good.sendChunk(TestChunk(channel: "mic:default", seq: 5))
            let late = try await good.expectAck()
            XCTAssertEqual(late.seq, 5)
            let open = await components.uplinkConnectionCount()
            XCTAssertEqual(open, 1, "only the good client is left")
            try await good.close()
        }
    }

    func testPingsGoBothWays() async throws {
        let harness = EndpointHarness { $0.pingIntervalSeconds = 1 }
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            let (session, token) = try await Self.newSession(client)
            let hello = UplinkTextMessage.encode(Self.hello(session, token, channels: [TestChannels.mic]))
            let seen: [UInt8] = await Task.detached {
                guard let socket = try? RawSocket(port: port), socket.upgrade(path: UplinkProtocol.path).hasPrefix("HTTP/1.1 101"),
                      socket.send(RawSocket.frame(opcode: 1, Array(hello.utf8))),
                      socket.send(RawSocket.frame(opcode: 9, Array("are you there".utf8))) else { return [] }
                var opcodes: [UInt8] = []
                // The welcome, our pong, then the endpoint's own ping within its interval.
                while let frame = socket.readFrame() {
                    opcodes.append(frame.opcode)
                    if frame.opcode == 10 { XCTAssertEqual(frame.payload, Array("are you there".utf8)) }
                    if frame.opcode == 9 {
                        _ = socket.send(RawSocket.frame(opcode: 10, frame.payload))
                        break
                    }
                }
                return opcodes
            }.value
            XCTAssertEqual(seen.first, 1, "the welcome")
            XCTAssertTrue(seen.contains(10), "the endpoint answered our ping: \(seen)")
            XCTAssertEqual(seen.last, 9, "the endpoint pinged us: \(seen)")
        }
    }

    /// A request the HTTP parser rejects gets 400 and a close; nothing is logged at `error`
    /// (a client's mistake is not the endpoint's error).
    func testMalformedHTTPGets400AndAClose() async throws {
        let harness = EndpointHarness()
        defer { harness.remove() }
        let errors = KeptLog(from: .error)
        let (app, _) = try harness.build(keepingErrorsIn: errors)
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            let requests = ["GET / HTTP/1.1\r\nHost: x\r\nX-Probe: a\u{0}b\r\n\r\n", "GARBAGE\r\n\r\n",
                            "GET /health HTTP/9.9\r\n\r\n", String(repeating: "A", count: 100_000) + "\r\n\r\n"]
            for request in requests {
                let answer = try await RawSocket.exchange(port: port, send: Array(request.utf8))
                XCTAssertTrue(answer.hasPrefix("HTTP/1.1 400"), "\(request.prefix(30).debugDescription) -> \(answer.prefix(80).debugDescription)")
            }
            let health = try await RawSocket.exchange(port: port, send: Array("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
            XCTAssertTrue(health.hasPrefix("HTTP/1.1 200"), health)
        }
        XCTAssertEqual(errors.all, [], "logged at error level for the malformed requests")
    }

    func testASilentClientIsDroppedAfterTheHelloTimeout() async throws {
        let harness = EndpointHarness { $0.helloTimeoutSeconds = 1 }
        defer { harness.remove() }
        let (app, components) = try harness.build()
        try await app.serve { client in
            var silent = try await UplinkTestClient.connect(port: try XCTUnwrap(client.port))
            try await silent.expectClose(.helloTimeout)
            try await Task.sleep(for: .milliseconds(200))
            let open = await components.uplinkConnectionCount()
            XCTAssertEqual(open, 0)
        }
    }
}
