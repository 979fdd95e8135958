import CaptureCore
import SHA256
import CaptureTestSupport
import CaptureUplink
import CaptureUplinkReplay
import Foundation
import Logging
import XCTest

/// Chunks from a client that lies about its media: refused at ingest when their timestamps
/// stray from their headers (and the export is still sized by the timeline the headers
/// declare, never by the media's own timestamps), and the export reads only H.264 and AAC.
/// The real endpoint runs with its data segment limited (RLIMIT_DATA 1 GiB), so a regression
/// fails here instead of taking the machine (unbounded, such an export took 23 GB).
final class HostileMediaTests: XCTestCase {
    static let dataLimit = 1 << 30
    static let logger: Logger = {
        var logger = Logger(label: "hostile-media")
        logger.logLevel = .critical
        return logger
    }()

    /// A mic chunk whose AAC timestamps say 13 hours in while its header says 5 s is refused
    /// at ingest (`media-mismatch`, the connection open, nothing stored), and so is one that
    /// is not MPEG-TS at all; the true chunk is then taken, and the session, uploaded whole,
    /// exports to its 20 s. The endpoint runs under RLIMIT_DATA and its peak RSS is measured.
    /// (Before the check, such a chunk was stored and its export took 23 GB.)
    func testMediaTimestampsThatLieAreRefusedAtIngest() async throws {
        let spool = try RecordedFixture.spool()
        let work = try Self.workDirectory("hostile-media")
        defer { try? FileManager.default.removeItem(atPath: work) }
        var lyingSpool = spool
        let lying = try Self.replaceChunk(of: &lyingSpool, channel: "mic:default", index: 5, work: work) { input, output in
            ["-i", input, "-c", "copy", "-output_ts_offset", "46800", "-mpegts_copyts", "1", "-f", "mpegts", output]
        }
        let start = try Media.probe(lying).startTime
        XCTAssertGreaterThanOrEqual(start, 46_800, "the chunk's media claims 13 hours in")
        let liar = try XCTUnwrap(lyingSpool.chunks["mic:default"]?[5])
        let truth = try XCTUnwrap(spool.chunks["mic:default"]?[5])

        let endpoint = EndpointProcess(dataDirectory: work + "/data", port: try Loopback.freePort(), dataLimitBytes: Self.dataLimit,
                                        logPath: work + "/endpoint.log")
        try endpoint.start()
        defer { _ = endpoint.terminate() }
        let (session, token) = try await HTTPJSON.newSession(port: endpoint.port, endUser: "hostile")
        var uplink = try await UplinkTestClient.connect(port: endpoint.port)
        try await uplink.send(UplinkHello(token: token, sessionId: session, agent: "hostile", channels: spool.channels))
        _ = try await uplink.expectWelcome()
        for chunk in try XCTUnwrap(spool.chunks["mic:default"]).prefix(5) {
            try await uplink.sendBinary(UplinkChunkFrame.encode(header: chunk.header, payload: chunk.bytes))
            _ = try await uplink.expectAck()
        }
        try await uplink.sendBinary(UplinkChunkFrame.encode(header: liar.header, payload: liar.bytes))
        let refused = try await uplink.expectError(.mediaMismatch)
        XCTAssertTrue(refused.message.contains("46800") || refused.message.contains("4680"), refused.message)
        XCTAssertEqual(refused.seq, 5)
        // Not MPEG-TS: refused the same way.
        var garbage = truth
        garbage.bytes = [UInt8](repeating: 0x47, count: 1000)
        garbage.metadata.bytes = 1000
        garbage.metadata.sha256 = garbage.bytes.withUnsafeBytes { SHA256.hexDigest($0) }
        try await uplink.sendBinary(UplinkChunkFrame.encode(header: garbage.header, payload: garbage.bytes))
        let notTS = try await uplink.expectError(.mediaMismatch)
        XCTAssertTrue(notTS.message.contains("not MPEG-TS"), notTS.message)
        // The connection is open and the seq still waits: the true chunk goes in.
        try await uplink.sendBinary(UplinkChunkFrame.encode(header: truth.header, payload: truth.bytes))
        let ack = try await uplink.expectAck()
        XCTAssertEqual(ack.seq, 5)
        try await uplink.close()

        // The rest, by the replayer (resuming where the endpoint stands), then the export.
        let export = try await Self.uploadAndExport(spool, to: endpoint, session: session, token: token)
        let peak = try XCTUnwrap(endpoint.peakResidentBytes)
        print("hostile media: endpoint peak RSS \(peak >> 20) MB, export \(export["export_status"] ?? "-")")
        XCTAssertTrue(endpoint.process?.isRunning == true, "the endpoint is up")
        XCTAssertLessThan(peak, 400 << 20, "peak RSS")
        XCTAssertEqual(export["export_status"] as? String, "exported", "\(export)")
        let mp4 = work + "/data/" + (try XCTUnwrap(Self.exportedFile(work + "/data")))
        let probed = try Media.probe(mp4)
        XCTAssertEqual(probed.duration, Double(RecordedFixture.seconds), accuracy: 1, "the session's length")
        // What the endpoint wrote is its own, whatever the umask it was started with.
        for path in [mp4, String(mp4[..<mp4.lastIndex(of: "/")!]), work + "/data/endpoint.sqlite", work + "/data/sessions"] {
            let mode = try XCTUnwrap((try FileManager.default.attributesOfItem(atPath: path))[.posixPermissions] as? NSNumber).intValue
            XCTAssertEqual(mode & 0o077, 0, "\(path) mode \(String(mode, radix: 8))")
        }
    }

    /// A mic chunk that is MP2, not AAC: the export fails with a clear error (no MP2 decoder is
    /// opened) and is not the endpoint's end; the SDK's polling (POST .../export until it is
    /// no longer exporting) starts it again while it has attempts left, then gets `failed`.
    func testOnlyH264AndAACAreRead() async throws {
        var spool = try RecordedFixture.spool()
        let work = try Self.workDirectory("hostile-codec")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let mp2 = try Self.replaceChunk(of: &spool, channel: "mic:default", index: 0, work: work) { input, output in
            ["-i", input, "-c:a", "mp2", "-b:a", "128k", "-mpegts_copyts", "1", "-f", "mpegts", output]
        }
        XCTAssertEqual(try Media.probe(mp2).streams.first?.codecName, "mp2")

        let endpoint = EndpointProcess(dataDirectory: work + "/data", port: try Loopback.freePort(), dataLimitBytes: Self.dataLimit,
                                        logPath: work + "/endpoint.log")
        try endpoint.start()
        defer { _ = endpoint.terminate() }
        let export = try await Self.uploadAndExport(spool, to: endpoint)
        let log = (try? String(contentsOfFile: work + "/endpoint.log", encoding: .utf8)) ?? ""
        XCTAssertEqual(export["export_status"] as? String, "failed", "\(export)\n\(log.suffix(2000))")
        let error = export["error"] as? String ?? ""
        XCTAssertTrue(error.contains("mic:default is mp2, not AAC"), "\(export)")
        XCTAssertFalse(error.contains("/"), "no paths in an API error: \(error)")
        XCTAssertTrue(endpoint.process?.isRunning == true, "the endpoint is up")
        let attempts = log.components(separatedBy: "\"export failed\"").count - 1
        XCTAssertEqual(attempts, 3, "three attempts, then the failure is final")
        let again = try await HTTPJSON.post("http://127.0.0.1:\(endpoint.port)/collection/default/capture/session/\(export["session_id"] as? String ?? "")/export",
                                            key: EndpointHarness.keyA, body: "{}")
        XCTAssertEqual((again["data"] as? [String: Any])?["export_status"] as? String, "failed", "\(again)")
    }

    /// 50 connections that never say hello, each sending 29 MiB of a frame that declares
    /// 30 MiB, and 12 more sending a 12 MiB message in 256 KiB fragments, all kept open to the
    /// end: a frame over 1 MiB is refused from its header (the connection dropped), a message
    /// over 64 KiB before the hello as its fragments arrive (close 1009, the rest dropped
    /// unread into memory: held, the 12 would be 144 MiB, which with the endpoint's 60-75 MB
    /// is over the 150 MB bound), and the endpoint, under RLIMIT_DATA, stays small and up.
    /// (With frames accepted up to a chunk's size, the first 50 alone held 1.4 GB.)
    func testPartialHugeFramesBeforeTheHelloHoldLittleMemory() async throws {
        let work = try Self.workDirectory("hostile-frames")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let endpoint = EndpointProcess(dataDirectory: work + "/data", port: try Loopback.freePort(), dataLimitBytes: Self.dataLimit,
                                        logPath: work + "/endpoint.log")
        try endpoint.start()
        defer { _ = endpoint.terminate() }
        let filler = [UInt8](repeating: 0x5A, count: 256 << 10)
        var closedEarly = 0
        var open: [RawSocket] = []
        for fragmented in [false, true] {
            for _ in 0..<(fragmented ? 12 : 50) {
                let socket = try RawSocket(port: endpoint.port)
                open.append(socket)
                XCTAssertTrue(socket.upgrade(path: UplinkProtocol.path).contains(" 101 "))
                var sent = 0
                if fragmented {
                    var first = true
                    while sent < 12 << 20, socket.send(Self.rawFrame(opcode: first ? 2 : 0, fin: false, filler)) {
                        first = false
                        sent += filler.count
                    }
                } else {
                    _ = socket.send(Self.rawFrameHeader(opcode: 2, fin: true, length: 30 << 20))
                    while sent < 29 << 20, socket.send(filler) { sent += filler.count }
                }
                if fragmented {
                    // The message is refused at 64 KiB (close 1009); the rest is read and dropped
                    // during the close handshake, never held.
                    let close = socket.readFrame()
                    XCTAssertEqual(close?.opcode, 8)
                    XCTAssertEqual(close?.payload.prefix(2).map { $0 }, [0x03, 0xF1], "close 1009")
                } else if sent < 29 << 20 {
                    closedEarly += 1
                }
            }
        }
        let peak = try XCTUnwrap(endpoint.peakResidentBytes)
        print("hostile frames: endpoint peak RSS \(peak >> 20) MB, \(closedEarly) of 50 single-frame connections closed before 29 MiB")
        XCTAssertTrue(endpoint.process?.isRunning == true, "the endpoint is up")
        XCTAssertEqual(closedEarly, 50, "every 30 MiB frame was refused from its header")
        XCTAssertLessThan(peak, 150 << 20, "peak RSS")
        withExtendedLifetime(open) {}
        let health = try await HTTPJSON.get("http://127.0.0.1:\(endpoint.port)/health")
        XCTAssertEqual((health["data"] as? [String: Any])?["status"] as? String, "ok", "\(health)")
    }

    static func rawFrameHeader(opcode: UInt8, fin: Bool, length: Int) -> [UInt8] {
        var out: [UInt8] = [(fin ? 0x80 : 0) | opcode, 0x80 | 127]
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((length >> shift) & 0xff)) }
        return out + [0, 0, 0, 0]   // a zero mask: the payload goes as it is
    }

    static func rawFrame(opcode: UInt8, fin: Bool, _ payload: [UInt8]) -> [UInt8] {
        rawFrameHeader(opcode: opcode, fin: fin, length: payload.count) + payload
    }

    // MARK: Helpers

    /// A new, empty directory of the test's own.
    static func workDirectory(_ name: String) throws -> String {
        let work = FileManager.default.temporaryDirectory.path + "/\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        return work
    }

    /// Replaces chunk `index` of `channel` by what ffmpeg makes of it (its metadata follows
    /// the new bytes, its place on the timeline does not); returns the new file.
    static func replaceChunk(of spool: inout RecordedSpool, channel: String, index: Int, work: String,
                             ffmpeg: (String, String) -> [String]) throws -> String {
        var chunk = try XCTUnwrap(spool.chunks[channel]?[index])
        let input = work + "/original.ts", output = work + "/replaced-\(channel.replacingOccurrences(of: ":", with: "-")).ts"
        try Data(chunk.bytes).write(to: URL(fileURLWithPath: input))
        let r = try runProcess("ffmpeg", ["-nostdin", "-hide_banner", "-v", "error", "-y"] + ffmpeg(input, output), timeout: .seconds(60))
        guard r.status == 0 else { throw CaptureError(.internalError, "ffmpeg: \(r.stderr)") }
        chunk.bytes = Array(try Data(contentsOf: URL(fileURLWithPath: output)))
        chunk.metadata.bytes = chunk.bytes.count
        chunk.metadata.sha256 = chunk.bytes.withUnsafeBytes { SHA256.hexDigest($0) }
        spool.chunks[channel]?[index] = chunk
        return output
    }

    /// Streams the spool into a new session, then asks for its export and waits for the
    /// outcome; returns the export's answer.
    static func uploadAndExport(_ spool: RecordedSpool, to endpoint: EndpointProcess, session given: String? = nil,
                                token givenToken: String? = nil) async throws -> [String: Any] {
        let base = "http://127.0.0.1:\(endpoint.port)"
        var session = given ?? "", token = givenToken ?? ""
        if given == nil { (session, token) = try await HTTPJSON.newSession(port: endpoint.port, endUser: "hostile") }
        var options = ReplayOptions(url: "ws://127.0.0.1:\(endpoint.port)\(UplinkProtocol.path)", token: token, sessionId: session)
        options.speed = 0
        let replay = Task { [options] in await UplinkReplayer.run(spool, options: options, logger: logger) }
        let report = try await value(of: replay, within: .seconds(180), "the replay")
        XCTAssertTrue(report.ended, "\(report)")

        let path = base + "/collection/default/capture/session/\(session)/export"
        var answer = try await HTTPJSON.post(path, key: EndpointHarness.keyA, body: "{}")
        let deadline = ContinuousClock.now + .seconds(120)
        while (answer["data"] as? [String: Any])?["export_status"] as? String == "exporting", ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            answer = try await HTTPJSON.post(path, key: EndpointHarness.keyA, body: "{}")
        }
        return answer["data"] as? [String: Any] ?? answer
    }

    /// The one exported MP4 under the data directory (relative path).
    static func exportedFile(_ data: String) -> String? {
        (FileManager.default.enumerator(atPath: data)?.allObjects as? [String] ?? []).first { $0.hasSuffix(".mp4") }
    }
}
