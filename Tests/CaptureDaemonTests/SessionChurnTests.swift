import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// An agent that records all day starts a session per meeting or task: dozens a day, in one
/// daemon. Every session must leave nothing behind: memory, descriptors, threads, shared memory.
final class SessionChurnTests: XCTestCase {
    /// What /proc says about a process.
    struct ProcessFootprint: CustomStringConvertible {
        var rssKB: Int
        var fds: Int
        var threads: Int
        /// Threads other than libdispatch's pool workers (whose names end in "qos" or
        /// "qos.overcommit"): the main thread and every thread the pipeline starts (capture
        /// threads, PulseAudio loops, helpers).
        var ownThreads: Int
        /// SysV shared-memory segments this process created that still exist.
        var shmSegments: Int

        init(pid: pid_t) throws {
            let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            func field(_ name: String) -> Int {
                let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
                return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? -1
            }
            rssKB = field("VmRSS")
            threads = field("Threads")
            fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
            let names = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").map {
                ((try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/comm", encoding: .utf8)) ?? "")
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            }
            ownThreads = names.filter { !$0.hasSuffix("qos") && !$0.hasSuffix("qos.overcommit") }.count
            // key shmid perms size cpid lpid nattch ...
            let shm = (try? String(contentsOfFile: "/proc/sysvipc/shm", encoding: .utf8)) ?? ""
            shmSegments = shm.split(separator: "\n").dropFirst().filter { line in
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                return f.count > 5 && f[4] == "\(pid)"
            }.count
        }

        var description: String {
            "RSS \(rssKB / 1024) MB, \(fds) fds, \(threads) threads (\(ownThreads) not libdispatch's), \(shmSegments) shm segments"
        }
    }

    /// 30 sessions of 0.5-0.75 s with 0.5 s chunks (so half of them cross a chunk boundary;
    /// what churns is sessions, not seconds) of display + mic + system audio over the real socket, each
    /// uploaded to a live capture-endpoint (its uplink thread and lws context come and go): RSS
    /// after each session from the fifth on grows by less than 128 KiB a session (the slope of a
    /// fitted line: a leak of a chunk's worth a session fails, the allocator's steps do not)
    /// and ends within 8 MB of the fifth's, and descriptors, threads and shared-memory segments
    /// are back to what they were after the first. (scripts/soak sessions runs 500.) (libdispatch keeps a
    /// few idle pool workers for as long as timers keep waking them, 2 or 3 here depending on
    /// which happened to run last; they belong to no session. The threads anyone else starts,
    /// the pipeline's among them, must come back exactly; the pool's idle workers stay few.)
    func testThirtySessionsLeaveNothingBehind() throws {
        let rig = try TestRig.shared()
        // With the uplink on: every session goes to a live endpoint, as in production.
        let endpoint = try LiveEndpoint(name: "churn")
        try endpoint.start()
        defer { endpoint.terminate() }
        let token = try endpoint.mintToken()
        let daemon = try DaemonProcess(rig: rig, name: "churn", env: ["CAPTURE_AGENT_LOG_LEVEL": "notice",
                                                                               "CAPTURE_AGENT_CHUNK": "0.5s"])
        let pid = daemon.process.processIdentifier
        let client = try daemon.client()
        let channels: JSONValue = .array(["display:1", "mic:default", "system_audio:default"].map { .object(["channel_id": .string($0)]) })

        var afterFirst: ProcessFootprint?
        var afterFifth: ProcessFootprint?
        var samples: [String] = []
        var rssAfter: [(session: Int, kB: Int)] = []
        _ = try client.ok("subscribeEvents", ["events": ["recording-complete"]])
        let sessions = 30
        for i in 1...sessions {
            let id = try endpoint.createSession()
            _ = try client.ok("startRecording", ["sessionId": .string(id), "channels": channels,
                                                 "uploadToken": .string(token), "endpoint": .string(endpoint.baseURL)])
            usleep(i % 2 == 0 ? 750_000 : 500_000)
            let stopped = try client.ok(.stopRecording, ["sessionId": .string(id)], as: StopRecordingResult.self)
            let spooled = stopped.summary.channels.map(\.chunks)
            XCTAssertEqual(spooled.count, 3, "session \(i): \(stopped)")
            XCTAssertTrue(spooled.allSatisfy { $0 >= 1 }, "session \(i) spooled \(spooled)")
            // Uploaded whole, and the spool keeps nothing of it.
            let complete = try XCTUnwrap(try client.event(.recordingComplete, within: 30), "session \(i): \(daemon.log.suffix(2000))")
            XCTAssertEqual(complete.sessionId, id)
            XCTAssertEqual(complete.recordingComplete?.deliveredTo, .endpoint)
            XCTAssertEqual(complete.recordingComplete?.chunks, spooled.reduce(0, +), "session \(i)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: daemon.sessionDirectory(id)), "session \(i)")
            if i == 1 { afterFirst = try settled(pid) }
            if i == 5 { afterFifth = try ProcessFootprint(pid: pid) }
            if i >= 5 { rssAfter.append((i, try ProcessFootprint(pid: pid).rssKB)) }
            if i % 10 == 0 { samples.append("\(i): \(try ProcessFootprint(pid: pid))") }
        }
        let first = try XCTUnwrap(afterFirst), fifth = try XCTUnwrap(afterFifth)
        let last = try settled(pid, like: first)
        let trace = "after 1: \(first); after 5: \(fifth); then \(samples.joined(separator: "; ")); settled: \(last)"
        // Least squares through (session, RSS) from the fifth on.
        let n = Double(rssAfter.count)
        let mx = rssAfter.reduce(0.0) { $0 + Double($1.session) } / n
        let my = rssAfter.reduce(0.0) { $0 + Double($1.kB) } / n
        let sxx = rssAfter.reduce(0.0) { $0 + (Double($1.session) - mx) * (Double($1.session) - mx) }
        let sxy = rssAfter.reduce(0.0) { $0 + (Double($1.session) - mx) * (Double($1.kB) - my) }
        let slopeKB = sxy / sxx
        print("session churn: RSS slope \(String(format: "%.1f", slopeKB)) KiB a session; \(trace)")
        XCTAssertLessThan(slopeKB, 128, "RSS grows with every session: \(rssAfter.map(\.kB)) KiB; \(trace)")
        XCTAssertLessThanOrEqual(abs(last.rssKB - fifth.rssKB), 8 * 1024, "RSS moved by more than 8 MB: \(trace)")
        XCTAssertEqual(last.fds, first.fds, "descriptors: \(trace)")
        XCTAssertEqual(last.ownThreads, first.ownThreads, "threads: \(trace)")
        XCTAssertLessThanOrEqual(last.threads - last.ownThreads, 4, "idle libdispatch workers: \(trace)")
        XCTAssertEqual(last.shmSegments, 0, "shared memory: \(trace)")
        XCTAssertEqual(first.shmSegments, 0, "shared memory: \(trace)")
        XCTAssertEqual(daemon.terminate(), 0)
    }

    /// The footprint once the daemon is idle: libdispatch lets idle worker threads go after a few
    /// seconds, so wait (up to 15 s) until the thread count stops falling, or reaches `like`'s.
    private func settled(_ pid: pid_t, like reference: ProcessFootprint? = nil) throws -> ProcessFootprint {
        var current = try ProcessFootprint(pid: pid)
        var steady = 0
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            usleep(250_000)
            let next = try ProcessFootprint(pid: pid)
            if let reference, next.ownThreads <= reference.ownThreads && next.threads <= reference.threads
                && next.fds <= reference.fds { return next }
            steady = next.threads == current.threads && next.fds == current.fds ? steady + 1 : 0
            current = next
            if reference == nil && steady >= 24 { break }   // 6 s without a change
        }
        return current
    }
}
