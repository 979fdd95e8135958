import CaptureCore
import CaptureTestSupport
import CaptureUplink
import Foundation
import Synchronization
import XCTest
@testable import CaptureEndpoint

/// The endpoint sent more uplink data than it can handle. Its memory stays within its budget
/// (`--limit inflight-bytes`): no socket is read while the budget is spent. A new hello is
/// refused with a retry hint (`busy`, close 4015) from half spent on. Senders stalled
/// mid-message are closed, so the budget always frees up. The real endpoint runs under
/// RLIMIT_DATA, and its peak RSS is measured against its budget.
final class OverloadTests: XCTestCase {
    static let budget = 96 << 20
    static let arguments = ["--limit", "inflight-bytes=96M", "--limit", "chunks-per-second=1000000",
                            "--limit", "connections-per-address=1000", "--limit", "uplinks-per-account=1000",
                            "--limit", "sockets-per-address=1000",
                            // A sender's pong waits behind its chunks, which the endpoint reads only
                            // as it gets through them: the flood takes longer than two pings here.
                            "--ping-interval", "300s"]

    /// 64 senders that ignore the window send 6 chunks of 900 kB each, all at once (345 MB,
    /// far more than the endpoint stores per second here). Meanwhile a new hello every
    /// 200 ms. Every chunk is acknowledged and no sender is closed. The hellos made while the
    /// budget is half full are refused with `busy`, a retry hint of 1-5 s and close 4015.
    /// Once the flood is through, a hello gets the full window. The endpoint's peak RSS grows
    /// by less than its budget. (Without the budget every connection queued up
    /// to ten frames: a flood of 288 MB grew it by 292 MB, and every hello was welcomed.)
    func testAFloodIsHeldToTheBudgetAndNewHellosAreToldToComeBack() async throws {
        let (work, endpoint) = try Self.startEndpoint("overload-flood")
        defer { try? FileManager.default.removeItem(atPath: work) }
        defer { _ = endpoint.terminate() }
        let senders = 64, chunksEach = 6
        var sessions: [(session: String, token: String)] = []
        for index in 0..<senders {
            sessions.append(try await HTTPJSON.newSession(port: endpoint.port, endUser: "flood-\(index)"))
        }
        let probe = try await HTTPJSON.newSession(port: endpoint.port, endUser: "probe")
        let frames = (0..<chunksEach).map { TestChunk(channel: "display:1", seq: $0, bytes: 900_000, fill: 0x5A).frame }
        let port = endpoint.port

        // Every sender's hello first, on an idle endpoint: all welcomed with the whole window.
        var uplinks: [RawUplink] = []
        for (session, token) in sessions {
            let uplink = try RawUplink(port: port)
            XCTAssertTrue(uplink.send(UplinkHello(token: token, sessionId: session, agent: "flood", channels: [TestChannels.display])))
            guard case .message(.welcome(let welcome)) = uplink.next() else { return XCTFail("no welcome on an idle endpoint") }
            XCTAssertEqual(welcome.window, 16)
            uplinks.append(uplink)
        }
        let baseline = try XCTUnwrap(endpoint.peakResidentBytes)

        let outcome = try await onThread { [uplinks] () -> (acks: [Int], probes: [RawUplink.HelloOutcome], after: RawUplink.HelloOutcome) in
            let acks = Mutex<[Int]>([])
            let finished = Atomic<Int>(0)
            for uplink in uplinks {
                Thread {
                    var count = 0
                    var other: String?
                    if frames.allSatisfy({ uplink.sendFrame(opcode: 2, $0) }) {
                        for _ in 0..<chunksEach {
                            let next = uplink.next()
                            guard case .message(.ack) = next else { other = "\(next)"; break }
                            count += 1
                        }
                    } else {
                        other = "send failed"
                    }
                    acks.withLock { $0.append(count) }
                    if let other { print("flood sender: after \(count) acks: \(other.prefix(300))") }
                    finished.add(1, ordering: .sequentiallyConsistent)
                }.start()
            }
            var probes: [RawUplink.HelloOutcome] = []
            let deadline = ContinuousClock.now + .seconds(240)   // a hung flood fails, never hangs
            while finished.load(ordering: .sequentiallyConsistent) < senders, ContinuousClock.now < deadline {
                probes.append(RawUplink.hello(port: port, session: probe.session, token: probe.token))
                usleep(200_000)
            }
            return (acks.withLock { $0 }, probes, RawUplink.hello(port: port, session: probe.session, token: probe.token))
        }
        let peak = try XCTUnwrap(endpoint.peakResidentBytes)
        let log = (try? String(contentsOfFile: work + "/endpoint.log", encoding: .utf8)) ?? ""
        let closed = log.split(separator: "\n").filter { $0.contains("wedged") || $0.contains("stalled") }
        XCTAssertEqual(closed, [], "no sender of the flood was closed: each sent whole messages")
        let busy = outcome.probes.compactMap { if case .busy(let ms, let code) = $0 { return (ms, code) } else { return nil } }
        print("flood: \(senders) x \(chunksEach) chunks of 900 kB; acks \(outcome.acks.reduce(0, +)); probes: \(outcome.probes.count), "
              + "\(busy.count) refused busy (retry after \(busy.map(\.0)) ms); peak RSS \(baseline >> 20) -> \(peak >> 20) MB "
              + "(budget \(Self.budget >> 20) MB); after: \(outcome.after)")
        XCTAssertEqual(outcome.acks, Array(repeating: chunksEach, count: senders), "every chunk of every sender acknowledged")
        XCTAssertFalse(busy.isEmpty, "a hello during the flood was refused as busy: \(outcome.probes)")
        for (retryAfterMs, code) in busy {
            XCTAssertTrue((1000...5000).contains(retryAfterMs), "retry hint \(retryAfterMs) ms")
            XCTAssertEqual(code, UplinkCloseCode.tryLater.rawValue)
        }
        XCTAssertEqual(outcome.after, .welcomed(window: 16), "the flood through, a hello gets the whole window")
        XCTAssertLessThan(peak - baseline, Self.budget, "the endpoint grew by its budget at most")
        XCTAssertTrue(endpoint.process?.isRunning == true)
    }

    /// Three senders each send 15 MiB of a chunk message and then stop, before its end. The
    /// budget is 96 MiB, reads stop at three quarters of it and frames count twice, so the
    /// third is held back and nothing can complete. After 2 s the endpoint closes the one
    /// holding the most (4015). Another holds the budget past half with its socket read and
    /// nothing sent for 5 s: closed too. The last one's 5 s count only from when its socket is
    /// read again (time the budget held it back is not its stall), so whether it is closed
    /// depends on whether the budget is still half spent then: if not, it may keep its share.
    /// A hello made meanwhile is refused as busy, with a retry hint. Once the stalled ones are
    /// closed, a hello gets the whole window and its chunk is acknowledged. (Before, the
    /// stalled messages held their memory for as long as their connections lived.)
    func testSendersStalledMidMessageAreClosedAndTheEndpointRecovers() async throws {
        let (work, endpoint) = try Self.startEndpoint("overload-stall")
        defer { try? FileManager.default.removeItem(atPath: work) }
        defer { _ = endpoint.terminate() }
        var sessions: [(session: String, token: String)] = []
        for index in 0..<3 { sessions.append(try await HTTPJSON.newSession(port: endpoint.port, endUser: "stall-\(index)")) }
        let honest = try await HTTPJSON.newSession(port: endpoint.port, endUser: "honest")
        let port = endpoint.port
        let baseline = try XCTUnwrap(endpoint.peakResidentBytes)

        let outcome = try await onThread { [sessions] () -> (closes: [UInt16?], refused: RawUplink.HelloOutcome, after: RawUplink.HelloOutcome, acked: Bool) in
            let closes = Mutex<[UInt16?]>([])
            let done = Atomic<Int>(0), sent = Atomic<Int>(0)
            let fragment = [UInt8](repeating: 0, count: (1 << 20) - 64)
            for (session, token) in sessions {
                Thread {
                    var code: UInt16?
                    if let uplink = try? RawUplink(port: port),
                       uplink.send(UplinkHello(token: token, sessionId: session, agent: "stall", channels: [TestChannels.display])),
                       case .message(.welcome) = uplink.next() {
                        for index in 0..<15 {
                            guard uplink.sendFrame(opcode: index == 0 ? 2 : 0, fin: false, fragment) else { break }
                            if index == 14 { sent.add(1, ordering: .sequentiallyConsistent) }
                        }
                        if case .close(let closeCode) = uplink.next() { code = closeCode }
                    }
                    closes.withLock { $0.append(code) }
                    done.add(1, ordering: .sequentiallyConsistent)
                }.start()
            }
            sleep(1)
            // The first two have sent their 15 MiB; the third is held back by the budget.
            let deadline = ContinuousClock.now + .seconds(120)   // a failed sender fails the test, never hangs it
            while sent.load(ordering: .sequentiallyConsistent) < 2, done.load(ordering: .sequentiallyConsistent) < 3,
                  ContinuousClock.now < deadline { usleep(50_000) }
            usleep(500_000)
            let refused = RawUplink.hello(port: port, session: honest.session, token: honest.token)
            while done.load(ordering: .sequentiallyConsistent) < 2, ContinuousClock.now < deadline { usleep(100_000) }
            // The third: closed within its 5 s of being read while the budget is still half spent, or not at all.
            let third = ContinuousClock.now + .seconds(10)
            while done.load(ordering: .sequentiallyConsistent) < 3, ContinuousClock.now < third { usleep(100_000) }
            // The stalled connections are gone; a hello gets the whole window and its chunk through.
            var after = RawUplink.HelloOutcome.other("none")
            var acked = false
            for _ in 0..<20 {
                let uplink = try RawUplink(port: port)
                _ = uplink.send(UplinkHello(token: honest.token, sessionId: honest.session, agent: "honest", channels: [TestChannels.display]))
                switch uplink.next() {
                case .message(.welcome(let welcome)):
                    after = .welcomed(window: welcome.window)
                    _ = uplink.sendFrame(opcode: 2, TestChunk(channel: "display:1", seq: 0, bytes: 100_000).frame)
                    if case .message(.ack(let ack)) = uplink.next() { acked = ack.seq == 0 }
                case .message(.error(let error)) where error.code == .busy:
                    usleep(UInt32(min(error.retryAfterMs ?? 1000, 5000)) * 1000)
                    continue
                case let other:
                    after = .other("\(other)")
                }
                break
            }
            return (closes.withLock { $0 }, refused, after, acked)
        }
        let peak = try XCTUnwrap(endpoint.peakResidentBytes)
        let log = (try? String(contentsOfFile: work + "/endpoint.log", encoding: .utf8)) ?? ""
        print("stall: closes \(outcome.closes), meanwhile \(outcome.refused), after \(outcome.after), acked \(outcome.acked); "
              + "peak RSS \(baseline >> 20) -> \(peak >> 20) MB")
        // The first two closed with 4015; the third, if it was closed by now, with 4015 too.
        XCTAssertEqual(Array(outcome.closes.prefix(2)), [4015, 4015], "the stalled senders closed with 4015")
        XCTAssertTrue(outcome.closes.dropFirst(2).allSatisfy { $0 == 4015 }, "\(outcome.closes)")
        XCTAssertTrue(log.contains("uplink budget wedged"), "the wedge was broken (the one holding the most closed)")
        XCTAssertTrue(log.contains("uplink stalled mid-message"), "the stalled holders were closed")
        guard case .busy(let retryAfterMs, let code) = outcome.refused else {
            return XCTFail("a hello while the budget was held was not refused as busy: \(outcome.refused)")
        }
        XCTAssertTrue((1000...5000).contains(retryAfterMs), "retry hint \(retryAfterMs) ms")
        XCTAssertEqual(code, UplinkCloseCode.tryLater.rawValue)
        if outcome.closes.count == 3 {
            XCTAssertEqual(outcome.after, .welcomed(window: 16))
        } else {
            // The third still holds its share (less than half the budget): a hello is welcomed,
            // with the window what is left of the budget allows.
            guard case .welcomed = outcome.after else { return XCTFail("no welcome after the stalled senders: \(outcome.after)") }
        }
        XCTAssertTrue(outcome.acked, "the honest chunk was acknowledged")
        XCTAssertLessThan(peak - baseline, Self.budget, "the endpoint grew by its budget at most")
    }

    /// 300 connections upgrade and, without a hello, send 600 kB of a 1 MiB frame each: past
    /// three quarters of the budget the rest are told `busy` before their hello and are not
    /// read while they close, so the endpoint grows by its budget and what the budget does not
    /// count (the allocator's slack, per-connection state: a quarter of it at most); once the
    /// idle ones are dropped, an honest hello is welcomed. (Read during their close, the
    /// refused ones grew an endpoint with a 92M budget by 143 MB; not read, 59 MB with the
    /// machine idle, 104 MB beside another test stream.)
    func testConnectionsRefusedForWantOfMemoryAreNotRead() async throws {
        // At notice level: each refusal is logged.
        let (work, endpoint) = try Self.startEndpoint("overload-refused", ["--log-level", "notice"])
        defer { try? FileManager.default.removeItem(atPath: work) }
        defer { _ = endpoint.terminate() }
        let honest = try await HTTPJSON.newSession(port: endpoint.port, endUser: "honest")
        let baseline = try XCTUnwrap(endpoint.peakResidentBytes)
        let port = endpoint.port
        let outcome = try await onThread { () -> (upgraded: Int, welcomed: RawUplink.HelloOutcome?) in
            var sockets: [RawSocket] = []
            let partial = Array(HostileMediaTests.rawFrame(opcode: 2, fin: true, [UInt8](repeating: 0x5A, count: 1 << 20)).prefix(600_000))
            for _ in 0..<300 {
                guard let socket = try? RawSocket(port: port) else { continue }
                socket.setTimeouts(seconds: 2)
                guard socket.upgrade(path: UplinkProtocol.path).contains(" 101 ") else { continue }
                _ = socket.send(partial)   // may stop short: a refused connection is not read
                sockets.append(socket)
            }
            // The idle ones are dropped (no hello in time, or stalled): then a hello gets in.
            var welcomed: RawUplink.HelloOutcome?
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                let answer = RawUplink.hello(port: port, session: honest.session, token: honest.token)
                if case .welcomed = answer { welcomed = answer; break }
                usleep(1_000_000)
            }
            return (sockets.count, welcomed)
        }
        let peak = try XCTUnwrap(endpoint.peakResidentBytes)
        let log = (try? String(contentsOfFile: work + "/endpoint.log", encoding: .utf8)) ?? ""
        let refused = log.split(separator: "\n").filter { $0.contains("uplink refused: the endpoint is busy") }.count
        print("refused: \(outcome.upgraded) upgraded, \(refused) refused busy; peak RSS \(baseline >> 20) -> \(peak >> 20) MB "
              + "(budget \(Self.budget >> 20) MB); then \(String(describing: outcome.welcomed))")
        XCTAssertEqual(outcome.upgraded, 300)
        XCTAssertGreaterThan(refused, 100, "connections past the read limit were refused before their hello")
        XCTAssertLessThan(peak - baseline, Self.budget + Self.budget / 4, "the endpoint grew by its budget and a quarter at most")
        XCTAssertNotNil(outcome.welcomed, "an honest hello is welcomed once the idle connections are gone")
        XCTAssertTrue(endpoint.process?.isRunning == true)
    }

    /// The budget's arithmetic, sans I/O: the window and the retry hint follow what is spent; a
    /// parked connection is woken when room comes back, not before; a connection never
    /// releases more than it was charged.
    func testTheBudgetShrinksWindowsAndWakesWaitersWhenRoomComesBack() {
        let budget = InflightBudget(limit: 100 << 20, maxChunkBytes: 18 << 20)   // a connection: 2 x 19 MiB and a little
        XCTAssertEqual(budget.share, InflightBudget.share(maxChunkBytes: 18 << 20))
        XCTAssertEqual(budget.readLimit, 75 << 20, "a quarter kept back")
        XCTAssertEqual(budget.window(configured: 16), 16)
        XCTAssertEqual(budget.retryAfterMs, 1000)
        XCTAssertFalse(budget.isBusy)
        budget.charge(50 << 20)
        XCTAssertTrue(budget.isBusy)
        XCTAssertEqual(budget.window(configured: 16), 8)
        XCTAssertEqual(budget.retryAfterMs, 3000)
        XCTAssertEqual(budget.reserve(64 << 10, held: 0), .taken)
        budget.releaseReservation(64 << 10)
        XCTAssertEqual(budget.reserve(64 << 10, held: 41 << 20), .noRoomInShare, "a connection's share")
        budget.charge(50 << 20)
        XCTAssertEqual(budget.window(configured: 16), 1)
        XCTAssertEqual(budget.retryAfterMs, 5000)
        XCTAssertEqual(budget.reserve(64 << 10, held: 0), .noRoomInBudget)

        let woken = Atomic<Int>(0)
        budget.park(id: 1, need: 256 << 10) { woken.add(1, ordering: .relaxed) }
        budget.park(id: 2, need: 256 << 10) { woken.add(10, ordering: .relaxed) }
        budget.park(id: 3, need: 256 << 10) { woken.add(100, ordering: .relaxed) }
        budget.unpark(id: 3)
        XCTAssertEqual(woken.load(ordering: .relaxed), 0, "no room: nobody woken")
        XCTAssertTrue(budget.hasWaiting)
        budget.release(25 << 20, handled: true)   // at the read limit: still nobody
        XCTAssertEqual(woken.load(ordering: .relaxed), 0, "no room below the read limit: nobody woken")
        budget.release(100 << 10, handled: true)   // room, but less than the first needs
        XCTAssertEqual(woken.load(ordering: .relaxed), 0, "nobody woken to be refused again")
        budget.release(300 << 10, handled: true)   // room for the first waiter's read only
        XCTAssertEqual(woken.load(ordering: .relaxed), 1)
        budget.release(10 << 20, handled: true)
        XCTAssertEqual(woken.load(ordering: .relaxed), 11, "then the next; the unparked one never")
        XCTAssertFalse(budget.hasWaiting)

        // Reads and new connections stop at the read limit, short of the budget itself.
        budget.release(budget.usedBytes, handled: true)
        budget.charge(74 << 20)
        XCTAssertEqual(budget.reserve(2 << 20, held: 0), .noRoomInBudget, "75 MiB is where reads stop")
        XCTAssertFalse(budget.admit(2 << 20), "and connections")
        XCTAssertTrue(budget.admit(InflightBudget.connectionCost))
        XCTAssertEqual(budget.usedBytes, (74 << 20) + InflightBudget.connectionCost)
        XCTAssertEqual(budget.heldBytes, 74 << 20, "a connection is not load")
        budget.dismiss(InflightBudget.connectionCost)
        budget.release(budget.usedBytes, handled: true)

        // A connection: frames count twice until handled; never more released than charged.
        let inflight = UplinkInflight(budget: budget, now: 0)
        let before = budget.usedBytes
        inflight.framePassed(1000)
        inflight.rawCharge.store(4096, ordering: .relaxed)
        budget.charge(4096)
        XCTAssertEqual(inflight.held, 6096)
        XCTAssertEqual(budget.usedBytes, before + 6096)
        inflight.handled(4000)
        XCTAssertEqual(budget.usedBytes, before + 4096, "released what was charged, not what was claimed")
        inflight.releaseAll()
        XCTAssertEqual(budget.usedBytes, before)
        XCTAssertEqual(inflight.held, 0)
        // The decoder's buffer: the next power of two of what it held.
        XCTAssertEqual(UplinkReadGate.bufferCapacity(holding: 65_536), 65_536)
        XCTAssertEqual(UplinkReadGate.bufferCapacity(holding: 65_537), 131_072)
        XCTAssertEqual(UplinkReadGate.bufferCapacity(holding: 900_000), 1 << 20)
    }

    /// The real endpoint with the budget, under RLIMIT_DATA, in a work directory of its own.
    static func startEndpoint(_ name: String, _ more: [String] = []) throws -> (work: String, endpoint: EndpointProcess) {
        let work = try HostileMediaTests.workDirectory(name)
        let endpoint = EndpointProcess(dataDirectory: work + "/data", port: try Loopback.freePort(),
                                        dataLimitBytes: HostileMediaTests.dataLimit, logPath: work + "/endpoint.log",
                                        extraArguments: arguments + more)
        try endpoint.start()
        return (work, endpoint)
    }

}

/// An uplink client on a plain socket, for senders that ignore the window or stop
/// mid-message. Frames go with a zero mask (the payload as it is) and the shortest length.
final class RawUplink: @unchecked Sendable {   // used by one thread at a time
    let socket: RawSocket

    init(port: Int) throws {
        socket = try RawSocket(port: port)
        socket.setTimeouts(seconds: 60)
        guard socket.upgrade(path: UplinkProtocol.path).contains(" 101 ") else {
            throw CaptureError(.internalError, "no WebSocket upgrade")
        }
    }

    func send(_ message: some Encodable) -> Bool {
        sendFrame(opcode: 1, Array(UplinkTextMessage.encode(message).utf8))
    }

    func sendFrame(opcode: UInt8, fin: Bool = true, _ payload: [UInt8]) -> Bool {
        socket.send(RawSocket.frameHeader(opcode: opcode, fin: fin, length: payload.count, mask: [0, 0, 0, 0]))
            && socket.send(payload)
    }

    enum Incoming {
        case message(UplinkTextMessage)
        case close(UInt16)
        case ended
    }

    /// The next text message or close (pings answered on the way).
    func next() -> Incoming {
        while let frame = socket.readFrame() {
            switch frame.opcode {
            case 1:
                guard let message = try? UplinkTextMessage(decoding: String(decoding: frame.payload, as: UTF8.self)) else { continue }
                return .message(message)
            case 8:
                return .close(frame.payload.count >= 2 ? UInt16(frame.payload[0]) << 8 | UInt16(frame.payload[1]) : 1005)
            case 9:
                _ = sendFrame(opcode: 10, frame.payload)
            default:
                continue
            }
        }
        return .ended
    }

    enum HelloOutcome: Equatable, Sendable {
        case welcomed(window: Int)
        case busy(retryAfterMs: Int, closeCode: UInt16)
        case other(String)
    }

    /// A hello on a new connection, and what came of it.
    static func hello(port: Int, session: String, token: String) -> HelloOutcome {
        guard let uplink = try? RawUplink(port: port),
              uplink.send(UplinkHello(token: token, sessionId: session, agent: "probe", channels: [TestChannels.display])) else {
            return .other("no connection")
        }
        switch uplink.next() {
        case .message(.welcome(let welcome)):
            return .welcomed(window: welcome.window)
        case .message(.error(let error)) where error.code == .busy:
            guard case .close(let code) = uplink.next() else { return .other("busy without a close") }
            return .busy(retryAfterMs: error.retryAfterMs ?? -1, closeCode: code)
        case let other:
            return .other("\(other)")
        }
    }
}
