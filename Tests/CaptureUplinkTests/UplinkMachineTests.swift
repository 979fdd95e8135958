import CaptureCore
import CaptureUplink
import Foundation
import WebSocketUplink
import XCTest

/// The agent's uplink protocol, driven as a value type with scripted endpoints: what it
/// sends, deletes and reports for each thing that happens.
final class UplinkMachineTests: XCTestCase {
    static let channels = [
        UplinkChannel(channelId: "display:1", mediaType: .video, codec: "h264", chunkDurationNs: 1_000_000_000),
        UplinkChannel(channelId: "mic:default", mediaType: .audio, codec: "aac", chunkDurationNs: 1_000_000_000),
    ]

    static func chunk(_ channel: String, _ seq: Int, final: Bool = false) -> ChunkMetadata {
        ChunkMetadata(sessionId: "cap-1", channelId: channel, mediaType: channel.hasPrefix("display") ? .video : .audio,
                      codec: channel.hasPrefix("display") ? "h264" : "aac", seq: seq,
                      file: ChunkMetadata.mediaFileName(seq: seq), startPtsNs: Int64(seq) * 1_000_000_000,
                      durationNs: 1_000_000_000, frames: 30, bytes: 1000 + seq,
                      sha256: String(repeating: "a", count: 64),
                      captureTimeUnixNs: 1_700_000_000_000_000_000 + Int64(seq) * 1_000_000_000 + (channel.hasPrefix("mic") ? 1 : 0),
                      isFinal: final)
    }

    static func welcome(_ next: [String: Int], complete: Set<String> = [], window: Int = 16) -> String {
        UplinkTextMessage.encode(UplinkWelcome(
            sessionId: "cap-1", status: "starting",
            channels: channels.map { UplinkChannelProgress(channelId: $0.channelId, nextSeq: next[$0.channelId] ?? 0,
                                                           complete: complete.contains($0.channelId)) },
            maxChunkBytes: 1 << 20, window: window))
    }

    static func ack(_ channel: String, _ seq: Int, duplicate: Bool = false) -> String {
        UplinkTextMessage.encode(UplinkAck(channelId: channel, seq: seq, sha256: String(repeating: "a", count: 64),
                                           duplicate: duplicate))
    }

    func sent(_ actions: [UplinkMachine.Action]) -> [String] {
        actions.compactMap { if case .sendChunk(let c) = $0 { "\(c.channelId)#\(c.seq)" } else { nil } }
    }

    func deleted(_ actions: [UplinkMachine.Action]) -> [String] {
        actions.compactMap { if case .delete(let c) = $0 { "\(c.channelId)#\(c.seq)" } else { nil } }
    }

    func texts(_ actions: [UplinkMachine.Action]) -> [String] {
        actions.compactMap { if case .sendText(let t) = $0 { t } else { nil } }
    }

    /// Connected and welcomed from seq 0 on both channels.
    func streaming(window: Int = 16) -> UplinkMachine {
        var m = UplinkMachine(sessionId: "cap-1", channels: Self.channels, token: "cct_x", agent: "test")
        XCTAssertEqual(m.begin(nowNs: 0), [.connect])
        let hello = texts(m.opened(nowNs: 1))
        XCTAssertEqual(hello.count, 1)
        XCTAssertTrue(hello[0].contains(#""type":"hello""#) && hello[0].contains("cct_x"))
        _ = m.received(Self.welcome([:], window: window), nowNs: 2)
        XCTAssertEqual(m.phase, .streaming)
        return m
    }

    func testSendsOldestFirstWithinTheWindowAndDeletesOnlyOnAck() {
        var m = streaming(window: 3)
        var out: [String] = []
        for seq in 0..<3 {
            out += sent(m.offer(Self.chunk("display:1", seq), nowNs: 10))
            out += sent(m.offer(Self.chunk("mic:default", seq), nowNs: 10))
        }
        XCTAssertEqual(out, ["display:1#0", "mic:default#0", "display:1#1"], "three in flight, no more")
        XCTAssertEqual(m.chunksInFlight, 3)
        XCTAssertEqual(m.pendingChunks, 6)

        let a = m.received(Self.ack("display:1", 0), nowNs: 20)
        XCTAssertEqual(deleted(a), ["display:1#0"], "the ack, and only it, deletes")
        XCTAssertEqual(sent(a), ["mic:default#1"], "the freed place goes to the oldest capture")
        XCTAssertEqual(m.pendingChunks, 5)
    }

    func testAckOutOfOrderDropsTheConnection() {
        var m = streaming()
        _ = m.offer(Self.chunk("display:1", 0), nowNs: 0)
        _ = m.offer(Self.chunk("display:1", 1), nowNs: 0)
        let a = m.received(Self.ack("display:1", 1), nowNs: 1)
        XCTAssertEqual(a, [.close(code: 1002, reason: "ack out of order")])
        XCTAssertEqual(m.pendingChunks, 2, "nothing is deleted on a confused ack")
    }

    func testReconnectResumesFromTheWelcomeAndDeletesWhatIsStored() {
        var m = streaming()
        for seq in 0..<4 { _ = m.offer(Self.chunk("display:1", seq), nowNs: 0) }
        _ = m.received(Self.ack("display:1", 0), nowNs: 1)
        // The connection drops with 1..3 in flight; the endpoint had stored 1 and 2 (acks lost).
        let dropped = m.closed(code: nil, reason: "gone", nowNs: 2)
        guard case .report(.disconnected(nil, _, let retry))? = dropped.last else { return XCTFail("\(dropped)") }
        XCTAssertGreaterThanOrEqual(retry, 250_000_000)
        XCTAssertEqual(m.phase, .waiting)
        XCTAssertEqual(m.tick(nowNs: 2 + retry - 1), [], "not before the backoff")
        XCTAssertEqual(m.tick(nowNs: 2 + retry), [.connect])
        _ = m.opened(nowNs: 3 + retry)
        let w = m.received(Self.welcome(["display:1": 3]), nowNs: 4 + retry)
        XCTAssertEqual(deleted(w), ["display:1#1", "display:1#2"], "stored per the welcome: deleted, not resent")
        XCTAssertEqual(sent(w), ["display:1#3"])
    }

    /// A welcome that claims more than was ever sent deletes nothing and is reported; what
    /// was never sent from here (a recovered spool) goes again and leaves only on its ack.
    func testAWelcomeDeletesOnlyWhatWasSentFromHere() {
        var m = streaming()
        for seq in 0..<4 { _ = m.offer(Self.chunk("display:1", seq), nowNs: 0) }
        _ = m.closed(code: nil, reason: "gone", nowNs: 1)
        _ = m.tick(nowNs: 10_000_000_000)
        _ = m.opened(nowNs: 10_000_000_001)
        let lie = m.received(Self.welcome(["display:1": 10], complete: ["mic:default"]), nowNs: 10_000_000_002)
        XCTAssertEqual(deleted(lie), [], "nextSeq 10 when 0...3 were sent: nothing deleted")
        XCTAssertTrue(lie.contains(.report(.welcomeAhead(channelId: "display:1", nextSeq: 10, spooledUpTo: 3))), "\(lie)")
        XCTAssertEqual(sent(lie), ["display:1#0", "display:1#1", "display:1#2", "display:1#3"], "sent again")
        XCTAssertEqual(m.pendingChunks, 4)
        XCTAssertEqual(deleted(m.received(Self.ack("display:1", 0, duplicate: true), nowNs: 10_000_000_003)), ["display:1#0"])

        // A restarted agent's recovered spool: the welcome says 0 and 1 are stored; they were
        // never sent from this process, so they go and leave on the duplicate acks.
        var r = UplinkMachine(sessionId: "cap-1", channels: Self.channels, token: "cct_x", agent: "test")
        for seq in 0..<3 { _ = r.offer(Self.chunk("mic:default", seq), nowNs: 0) }
        _ = r.begin(nowNs: 0)
        _ = r.opened(nowNs: 1)
        let w = r.received(Self.welcome(["mic:default": 2]), nowNs: 2)
        XCTAssertEqual(deleted(w), [])
        XCTAssertEqual(sent(w), ["mic:default#0", "mic:default#1", "mic:default#2"])
        XCTAssertFalse(w.contains { if case .report(.welcomeAhead) = $0 { true } else { false } }, "2 is within the spool")
        XCTAssertEqual(deleted(r.received(Self.ack("mic:default", 0, duplicate: true), nowNs: 3)), ["mic:default#0"])
        XCTAssertEqual(deleted(r.received(Self.ack("mic:default", 1, duplicate: true), nowNs: 4)), ["mic:default#1"])
        XCTAssertEqual(r.pendingChunks, 1)
    }

    func testBackoffGrowsToItsCapAndResetsAfterAnAck() {
        var m = streaming()
        var delays: [Int64] = []
        var now: Int64 = 0
        for _ in 0..<8 {
            let a = m.closed(code: 1006, reason: "x", nowNs: now)
            guard case .report(.disconnected(_, _, let d))? = a.last else { return XCTFail("\(a)") }
            delays.append(d)
            now += d
            XCTAssertEqual(m.tick(nowNs: now), [.connect])
        }
        XCTAssertTrue(zip(delays, delays.dropFirst()).allSatisfy { $1 >= $0 / 2 }, "\(delays)")
        XCTAssertLessThanOrEqual(delays.max()!, 13_000_000_000, "capped at 10 s + 30 % jitter")
        XCTAssertGreaterThanOrEqual(delays.last!, 10_000_000_000)
        // Progress resets it.
        _ = m.opened(nowNs: now)
        _ = m.received(Self.welcome([:]), nowNs: now)
        _ = m.offer(Self.chunk("display:1", 0), nowNs: now)
        _ = m.received(Self.ack("display:1", 0), nowNs: now)
        guard case .report(.disconnected(_, _, let d))? = m.closed(code: nil, reason: "x", nowNs: now).last else { return XCTFail() }
        XCTAssertLessThan(d, 400_000_000)
    }

    /// The delays are the policy's, to the nanosecond, for a seed: 0.25 s doubling to 10 s,
    /// each plus 0-30 % from SplitMix64 (written out here; its first output for seed 0 is the
    /// published 0xE220A8397B1DCDAF), and back to 0.25 s after a reset.
    func testBackoffIsTheSeededSequence() {
        var splitmix: UInt64 = 0
        func nextUnit() -> Double {
            splitmix &+= 0x9E37_79B9_7F4A_7C15
            var z = splitmix
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
        }
        XCTAssertEqual(nextUnit(), Double(UInt64(0xE220_A839_7B1D_CDAF) >> 11) / Double(1 << 53), "SplitMix64, seed 0")
        splitmix = 0
        var backoff = UplinkBackoff(policy: UplinkBackoff.Policy(), seed: 0)
        let bases: [Int64] = [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000].map { $0 * 1_000_000 }
        for (k, base) in bases.enumerated() {
            XCTAssertEqual(backoff.next(), base + Int64(Double(base) * 0.3 * nextUnit()), "attempt \(k)")
        }
        backoff.reset()
        XCTAssertEqual(backoff.next(), 250_000_000 + Int64(250_000_000.0 * 0.3 * nextUnit()), "after a reset")
    }

    func testRejectedTokenWaitsForUpdateTokenThenResumes() {
        var m = streaming()
        _ = m.offer(Self.chunk("display:1", 0), nowNs: 0)
        let a = m.closed(code: UplinkCloseCode.tokenExpired.rawValue, reason: "token expired", nowNs: 1)
        XCTAssertEqual(a, [.report(.tokenRejected(code: 4011))])
        XCTAssertEqual(m.phase, .needsToken)
        XCTAssertEqual(m.tick(nowNs: 100_000_000_000), [], "no retries with a dead token")
        _ = m.offer(Self.chunk("display:1", 1), nowNs: 2)
        XCTAssertEqual(m.pendingChunks, 2, "capture goes on into the spool")
        XCTAssertEqual(m.updateToken("cct_new", nowNs: 3), [.connect])
        let hello = texts(m.opened(nowNs: 4))
        XCTAssertTrue(hello[0].contains("cct_new"))
        XCTAssertEqual(sent(m.received(Self.welcome([:]), nowNs: 5)), ["display:1#0", "display:1#1"])
    }

    /// The endpoint gives a session to the token that streams it while that token is valid
    /// (4013 for another), so a token given while streaming waits for the old one's end, and
    /// then the machine goes on at once without asking for another.
    func testANewTokenIsUsedWhenTheStreamingTokenIsRefused() {
        var m = UplinkMachine(sessionId: "cap-1", channels: Self.channels, token: "cct_old", agent: "t")
        XCTAssertEqual(m.begin(nowNs: 0), [.connect])
        XCTAssertTrue(texts(m.opened(nowNs: 1))[0].contains("cct_old"))
        _ = m.received(Self.welcome([:]), nowNs: 2)
        XCTAssertEqual(m.updateToken("cct_new", nowNs: 3), [], "streaming goes on with the old token")
        // A network drop: the reconnect still says hello with the token the session belongs to.
        guard case .report(.disconnected)? = m.closed(code: nil, reason: "drop", nowNs: 4).last else { return XCTFail() }
        XCTAssertEqual(m.tick(nowNs: 10_000_000_000), [.connect])
        XCTAssertTrue(texts(m.opened(nowNs: 10_000_000_001))[0].contains("cct_old"))
        _ = m.received(Self.welcome([:]), nowNs: 10_000_000_002)
        // The old token expires: the new one is used at once (reported, not asked for).
        XCTAssertEqual(m.closed(code: UplinkCloseCode.tokenExpired.rawValue, reason: "token expired", nowNs: 10_000_000_003),
                       [.report(.tokenReplaced(code: 4011)), .connect])
        let hello = texts(m.opened(nowNs: 10_000_000_004))[0]
        XCTAssertTrue(hello.contains("cct_new") && !hello.contains("cct_old"), hello)
        _ = m.received(Self.welcome([:]), nowNs: 10_000_000_005)
        // The new one is refused too: now the owner is asked for another.
        XCTAssertEqual(m.closed(code: UplinkCloseCode.tokenRevoked.rawValue, reason: "token revoked", nowNs: 10_000_000_006),
                       [.report(.tokenRejected(code: 4012))])
        XCTAssertEqual(m.phase, .needsToken)
        XCTAssertFalse(m.hasToken)

        // Another valid token streams the session (4013: a restarted agent holding only the
        // newer token): keep the token and retry with backoff until that one expires or is revoked.
        var other = UplinkMachine(sessionId: "cap-2", channels: Self.channels, token: "cct_other", agent: "t")
        _ = other.begin(nowNs: 0)
        _ = other.opened(nowNs: 1)
        guard case .report(.disconnected(code: 4013, _, let retry))? = other.closed(
            code: UplinkCloseCode.anotherTokenStreams.rawValue, reason: "another token streams this session", nowNs: 2).last
        else { return XCTFail("4013 is not retried") }
        XCTAssertEqual(other.phase, .waiting)
        XCTAssertTrue(other.hasToken)
        XCTAssertEqual(other.tick(nowNs: 2 + retry), [.connect])
        XCTAssertTrue(texts(other.opened(nowNs: 3 + retry))[0].contains("cct_other"))
    }

    /// A hello refused as `busy` (the endpoint overloaded) waits at least as long as the
    /// endpoint asks before the next one, the spool untouched; a hint over a minute (a lying
    /// endpoint) waits a minute; the next drop without a hint backs off as usual.
    func testABusyEndpointIsAskedAgainNoSoonerThanItsHint() {
        for (hintMs, expectedNs) in [(3000, Int64(3_000_000_000)), (86_400_000, UplinkMachine.maxRetryHintNs)] {
            var m = UplinkMachine(sessionId: "cap-1", channels: Self.channels, token: "cct_x", agent: "test")
            _ = m.begin(nowNs: 0)
            _ = m.offer(Self.chunk("display:1", 0), nowNs: 0)
            _ = m.opened(nowNs: 1)
            let busy = UplinkErrorMessage(code: .busy, message: "the endpoint is overloaded", retryAfterMs: hintMs)
            XCTAssertEqual(m.received(UplinkTextMessage.encode(busy), nowNs: 2), [], "the endpoint's close follows")
            guard case .report(.disconnected(code: 4015, _, let retry))? = m.closed(
                code: UplinkCloseCode.tryLater.rawValue, reason: "the endpoint is busy; retry later", nowNs: 3).last
            else { return XCTFail("a busy endpoint is not retried") }
            XCTAssertEqual(retry, expectedNs)
            XCTAssertEqual(m.tick(nowNs: 3 + retry - 1), [])
            XCTAssertEqual(m.tick(nowNs: 3 + retry), [.connect])
            XCTAssertEqual(m.pendingChunks, 1)
            _ = m.opened(nowNs: 4 + retry)
            guard case .report(.disconnected(_, _, let next))? = m.closed(code: 1006, reason: "x", nowNs: 5 + retry).last
            else { return XCTFail() }
            XCTAssertLessThan(next, 2_000_000_000, "the hint is used once")
        }
    }

    /// A chunk refused for a quota stops the upload (resending would meet the same
    /// refusal); the spool keeps everything.
    func testAQuotaRefusalStopsAndKeepsTheSpool() {
        var m = streaming()
        _ = m.offer(Self.chunk("display:1", 0), nowNs: 0)
        let error = UplinkErrorMessage(code: .quotaExceeded, message: "the session stores 5 bytes; its quota is 5",
                                       channelId: "display:1", seq: 0)
        let actions = m.received(UplinkTextMessage.encode(error), nowNs: 1)
        XCTAssertEqual(actions.last, .close(code: 1000, reason: "quota exceeded"))
        XCTAssertTrue(actions.contains(.report(.refused(code: 4014, reason: error.message))), "\(actions)")
        XCTAssertEqual(m.phase, .stopped)
        XCTAssertEqual(m.closed(code: 4014, reason: "quota exceeded", nowNs: 2), [])
        XCTAssertEqual(m.tick(nowNs: 1_000_000_000_000), [])
        XCTAssertEqual(m.pendingChunks, 1)
    }

    func testSessionRefusedForGoodStopsAndKeepsTheSpool() {
        for code in [UplinkCloseCode.sessionClosed, .sessionNotFound, .protocolError, .unsupportedProtocol, .quotaExceeded] {
            var m = streaming()
            _ = m.offer(Self.chunk("display:1", 0), nowNs: 0)
            let a = m.closed(code: code.rawValue, reason: "no", nowNs: 1)
            XCTAssertEqual(a, [.report(.refused(code: code.rawValue, reason: "no"))])
            XCTAssertEqual(m.phase, .stopped)
            XCTAssertEqual(m.tick(nowNs: 1_000_000_000_000), [])
            XCTAssertEqual(m.pendingChunks, 1)
        }
    }

    func testChunkErrorClosesToResumeAndChannelCompleteCountsAsStored() {
        var m = streaming()
        _ = m.offer(Self.chunk("display:1", 0), nowNs: 0)
        _ = m.offer(Self.chunk("mic:default", 0), nowNs: 0)
        let gap = UplinkTextMessage.encode(UplinkErrorMessage(code: .hashMismatch, message: "bad", channelId: "display:1", seq: 0))
        let a = m.received(gap, nowNs: 1)
        XCTAssertEqual(a.last, .close(code: 1000, reason: "resuming after hash-mismatch"))
        XCTAssertEqual(m.pendingChunks, 2)

        var n = streaming()
        _ = n.offer(Self.chunk("mic:default", 0, final: true), nowNs: 0)
        let complete = UplinkTextMessage.encode(UplinkErrorMessage(code: .channelComplete, message: "done", channelId: "mic:default", seq: 0))
        XCTAssertEqual(deleted(n.received(complete, nowNs: 1)), ["mic:default#0"])
    }

    func testEndOnlyAfterEveryAckThenCompleteOnEnded() {
        var m = streaming()
        _ = m.offer(Self.chunk("display:1", 0, final: true), nowNs: 0)
        _ = m.offer(Self.chunk("mic:default", 0, final: true), nowNs: 0)
        XCTAssertEqual(texts(m.finishCapture(nowNs: 1)), [], "chunks in flight: no end yet")
        XCTAssertEqual(texts(m.received(Self.ack("display:1", 0), nowNs: 2)), [])
        let last = m.received(Self.ack("mic:default", 0), nowNs: 3)
        XCTAssertEqual(texts(last), [UplinkTextMessage.encode(UplinkEnd())])
        XCTAssertEqual(m.phase, .ending)
        let ended = UplinkEnded(sessionId: "cap-1", status: "stopped", channels: [])
        XCTAssertEqual(m.received(UplinkTextMessage.encode(ended), nowNs: 4), [.report(.complete(ended))])
        XCTAssertEqual(m.closed(code: 1000, reason: "done", nowNs: 5), [], "no reconnect after ended")
    }

    func testInterruptedCaptureEndsWithWhatTheSpoolHad() {
        var m = streaming()
        _ = m.offer(Self.chunk("display:1", 0), nowNs: 0)
        _ = m.finishCapture(nowNs: 0)
        let a = m.received(Self.ack("display:1", 0), nowNs: 1)
        XCTAssertEqual(texts(a), [UplinkTextMessage.encode(UplinkEnd(interrupted: true))])
    }

    func testWatchdogsDropADeadPeer() {
        var m = UplinkMachine(sessionId: "cap-1", channels: Self.channels, token: "t", agent: "test")
        _ = m.begin(nowNs: 0)
        XCTAssertEqual(m.tick(nowNs: 15_000_000_000), [.abort(reason: "connection attempt timed out")])
        _ = m.closed(code: nil, reason: "timeout", nowNs: 15_000_000_000)

        // A peer that answers pings but never acknowledges: the ack watchdog.
        var s = streaming()
        _ = s.offer(Self.chunk("display:1", 0), nowNs: 10)
        s.heard(nowNs: 20_000_000_000)
        XCTAssertEqual(s.tick(nowNs: 10 + 29_000_000_000), [])
        XCTAssertEqual(s.tick(nowNs: 10 + 30_000_000_000).last, .abort(reason: "no acknowledgement in 30 s"))
    }

    func testPingsASilentPeerAndDropsItWhenNothingComesBack() {
        var m = streaming()   // the welcome came at 2
        XCTAssertEqual(m.tick(nowNs: 9_000_000_000), [])
        XCTAssertEqual(m.tick(nowNs: 10_000_000_002), [.ping], "10 s of silence: ping")
        XCTAssertEqual(m.tick(nowNs: 15_000_000_000), [], "one ping per interval")
        m.heard(nowNs: 16_000_000_000)   // the pong
        XCTAssertEqual(m.tick(nowNs: 25_000_000_000), [])
        XCTAssertEqual(m.tick(nowNs: 26_000_000_000), [.ping])
        XCTAssertEqual(m.tick(nowNs: 41_000_000_000), [.abort(reason: "nothing from the endpoint in 25 s, not even a pong")])
    }

    func testRepeatedOffersAndStoredSeqsAreNotSentAgain() {
        var m = streaming()
        XCTAssertEqual(sent(m.offer(Self.chunk("display:1", 0), nowNs: 0)), ["display:1#0"])
        XCTAssertEqual(m.offer(Self.chunk("display:1", 0), nowNs: 0), [], "a repeated offer")
        XCTAssertEqual(m.offer(Self.chunk("screen:9", 0), nowNs: 0), [], "a channel the hello did not name")
    }

    func testGarbageFromTheEndpointClosesTheConnection() {
        var m = streaming()
        XCTAssertEqual(m.received("{not json", nowNs: 0), [.close(code: 1002, reason: "bad message from the endpoint")])
        XCTAssertEqual(m.received(#"{"type":"welcome"}"#, nowNs: 0), [.close(code: 1002, reason: "bad message from the endpoint")])
        XCTAssertEqual(m.received(UplinkTextMessage.encode(UplinkEnded(sessionId: "x", status: "s", channels: [])), nowNs: 0),
                       [.close(code: 1002, reason: "unexpected message from the endpoint")])
    }

    func testTargetFromTheEndpointURL() throws {
        XCTAssertEqual(try UplinkTarget(endpoint: "http://127.0.0.1:8470").description, "ws://127.0.0.1:8470/capture/uplink")
        XCTAssertEqual(try UplinkTarget(endpoint: "https://api.example.com/v1/").description, "wss://api.example.com:443/v1/capture/uplink")
        XCTAssertEqual(try UplinkTarget(endpoint: "ws://[::1]:9/capture/uplink").description, "ws://[::1]:9/capture/uplink")
        XCTAssertEqual(try UplinkTarget(endpoint: "HTTP://h?x=1", allowInsecure: true).description, "ws://h:80/capture/uplink")
        for bad in ["ftp://h", "http://", "http://u:p@h", "http://h:0", "http://h:99999", "http://[::1"] {
            XCTAssertThrowsError(try UplinkTarget(endpoint: bad, allowInsecure: true), bad)
        }
        // The hello carries the token: in clear only to this machine, unless allowed.
        for local in ["http://localhost:8470", "ws://127.0.0.1:9", "http://127.1.2.3", "ws://[::1]:9"] {
            XCTAssertNoThrow(try UplinkTarget(endpoint: local), local)
        }
        for remote in ["http://10.0.0.1:8470", "ws://api.example.com", "http://128.0.0.1", "http://127.0.0.1.example.com", "ws://[::2]:9"] {
            XCTAssertThrowsError(try UplinkTarget(endpoint: remote), remote) { error in
                XCTAssertTrue("\(error)".contains("not encrypted"), "\(error)")
            }
            XCTAssertNoThrow(try UplinkTarget(endpoint: remote, allowInsecure: true), remote)
        }
        XCTAssertNoThrow(try UplinkTarget(endpoint: "wss://10.0.0.1:8470"))
    }

    func incompatibilityReports(_ actions: [UplinkMachine.Action]) -> [Int?] {
        actions.compactMap { if case .report(.incompatibleEndpoint(let status, _)) = $0 { status } else { nil } }
    }

    /// Something that is not a capture endpoint answers the uplink URL: said once, at the
    /// first failure (not after retries), while the machine keeps retrying with backoff.
    func testAnUpgradeRefusedWithAnHTTPStatusIsAnIncompatibleEndpointSaidOnce() {
        var m = UplinkMachine(sessionId: "cap-1", channels: Self.channels, token: "cct_x", agent: "test")
        XCTAssertEqual(m.begin(nowNs: 0), [.connect])
        let first = m.upgradeRefused(httpStatus: 404, nowNs: 1)
        XCTAssertEqual(incompatibilityReports(first), [404], "\(first)")
        XCTAssertTrue(first.contains { if case .report(.disconnected) = $0 { true } else { false } }, "then a drop: \(first)")
        XCTAssertEqual(m.phase, .waiting, "it retries")
        // The retries that fail the same way say nothing more.
        var now: Int64 = 1
        for _ in 0..<3 {
            now += 120_000_000_000
            XCTAssertEqual(m.tick(nowNs: now), [.connect])
            XCTAssertEqual(incompatibilityReports(m.upgradeRefused(httpStatus: 200, nowNs: now + 1)), [])
        }
        // Once a welcome came, a later failure is news again.
        now += 120_000_000_000
        XCTAssertEqual(m.tick(nowNs: now), [.connect])
        _ = m.opened(nowNs: now + 1)
        _ = m.received(Self.welcome([:]), nowNs: now + 2)
        XCTAssertEqual(m.phase, .streaming)
        _ = m.closed(code: nil, reason: "connection lost", nowNs: now + 3)
        now += 120_000_000_000
        XCTAssertEqual(m.tick(nowNs: now), [.connect])
        XCTAssertEqual(incompatibilityReports(m.upgradeRefused(httpStatus: 400, nowNs: now + 1)), [400])
    }

    /// An endpoint that is down behind a proxy (502, 503), overloaded (429) or slow (408) is a
    /// drop like any other, not an incompatible server.
    func testOutageStatusesAreOrdinaryDrops() {
        for status in [408, 425, 429, 500, 502, 503, 504] {
            var m = UplinkMachine(sessionId: "cap-1", channels: Self.channels, token: "cct_x", agent: "test")
            _ = m.begin(nowNs: 0)
            let actions = m.upgradeRefused(httpStatus: status, nowNs: 1)
            XCTAssertEqual(incompatibilityReports(actions), [], "HTTP \(status): \(actions)")
            XCTAssertEqual(m.phase, .waiting, "HTTP \(status)")
        }
    }

    /// A WebSocket server that is not an uplink: hello answered with something else, or with
    /// nothing until the welcome's deadline.
    func testAHelloAnsweredWithNothingOrWithSomethingElseIsAnIncompatibleEndpoint() {
        var timing = UplinkMachine.Timing()
        timing.welcomeTimeoutNs = 2_000_000_000
        var m = UplinkMachine(sessionId: "cap-1", channels: Self.channels, token: "cct_x", agent: "test", timing: timing)
        _ = m.begin(nowNs: 0)
        _ = m.opened(nowNs: 1)
        XCTAssertEqual(m.tick(nowNs: 1_000_000_000), [], "before the deadline: nothing")
        let silent = m.tick(nowNs: 2_000_000_001)
        XCTAssertEqual(incompatibilityReports(silent), [nil], "\(silent)")
        XCTAssertTrue(silent.contains { if case .abort = $0 { true } else { false } }, "\(silent)")

        var n = UplinkMachine(sessionId: "cap-1", channels: Self.channels, token: "cct_x", agent: "test")
        _ = n.begin(nowNs: 0)
        _ = n.opened(nowNs: 1)
        let other = n.received(#"{"event":"hello from somebody else's API"}"#, nowNs: 2)
        XCTAssertEqual(incompatibilityReports(other), [nil], "\(other)")
        XCTAssertEqual(other.last, .close(code: 1002, reason: "bad message from the endpoint"))

        // A garbled message in the middle of a stream is a broken connection, not a wrong server.
        var o = streaming()
        XCTAssertEqual(incompatibilityReports(o.received("not json", nowNs: 10)), [])
    }

    func testTestTimingOverridesAreReadAndMalformedOnesIgnored() {
        let t = UplinkMachine.Timing.withTestOverrides([UplinkMachine.Timing.testOverrideVariable: "welcome=2s,hangup=3500ms,bogus=1s,ping=x"])
        XCTAssertEqual(t.welcomeTimeoutNs, 2_000_000_000)
        XCTAssertEqual(t.hangupNs, 3_500_000_000)
        XCTAssertEqual(t.pingIntervalNs, UplinkMachine.Timing().pingIntervalNs, "malformed: production value")
        XCTAssertEqual(UplinkMachine.Timing.withTestOverrides([:]).welcomeTimeoutNs, 15_000_000_000)
    }
}
