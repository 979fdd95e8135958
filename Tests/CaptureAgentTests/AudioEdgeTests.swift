import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// Where audio meets the edges of a session: its first and last moments.
final class AudioEdgeTests: XCTestCase {
    /// A 2 s `record` of mic + system audio; per channel: the time of the first sample that is
    /// not silent (ms), the stream's length, and the summary's sample counters.
    struct Edges {
        var firstSoundMs: [String: Double] = [:]
        var lengths: [String: Double] = [:]
        /// `repeated` here: repeated + lost, the other two parts of the stream's length.
        var counters: [ChannelID: (captured: Int, filled: Int, repeated: Int)] = [:]
        var durationNs: Int64 = 0
        /// The agent's notices (where silence was filled, and why).
        var log = ""
    }

    static func recordEdges(_ rig: TestRig, name: String, seconds: Int = 2) throws -> Edges {
        let out = Agent.temporaryDirectory(name)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try Agent.run(["record", "--out", out, "--duration", "\(seconds)s", "--json", "--log-level", "notice",
                               "--channel", "mic:default", "--channel", "system_audio:default"], env: Agent.environment(rig))
        XCTAssertEqual(r.status, 0, r.stderr)
        let summary = try RecordingSummary(json: r.stdout)
        var edges = Edges()
        edges.durationNs = summary.durationNs
        edges.log = r.stderr
        for c in summary.channels {
            edges.counters[try ChannelID(parsing: c.channel)] = (c.capturedSamples ?? -1, c.silenceFilledSamples ?? -1,
                                                            (c.repeatedSamples ?? -1) + (c.lostSamples ?? -1))
        }
        for dir in ["mic-default", "system_audio-default"] {
            let all = try RecordedChannel(out + "/" + dir).concatenated(into: out + "/\(dir).ts")
            XCTAssertEqual(try Media.probe(all).startTime, 0, accuracy: 0.001, "\(dir) starts at the session's zero")
            let samples = try Media.decodeFloat(all, channels: 1, sampleRate: 48_000, seconds: nil)
            let first = samples.firstIndex { abs($0) > 0.001 } ?? samples.count
            edges.firstSoundMs[dir] = Double(first) / 48.0
            edges.lengths[dir] = Double(samples.count) / 48_000
        }
        return edges
    }

    static func check(_ e: Edges, seconds: Int, label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(e.durationNs, Int64(seconds) * 1_000_000_000, "\(label): duration", file: file, line: line)
        for (dir, ms) in e.firstSoundMs {
            // AAC's first frame ramps in over ~9 ms (encoder priming): that is the floor.
            XCTAssertLessThanOrEqual(ms, 30, "\(label): \(dir) starts with \(ms) ms of silence", file: file, line: line)
            XCTAssertEqual(e.lengths[dir] ?? 0, Double(seconds), accuracy: 0.025, "\(label): \(dir) length", file: file, line: line)
        }
        XCTAssertEqual(Set(e.counters.keys), [.microphone(nil), .systemAudio(nil)], "\(label): both channels in the summary",
                       file: file, line: line)
        for (id, c) in e.counters {
            let channel = id.description   // as the agent's log names it
            XCTAssertEqual(c.captured + c.filled + c.repeated, seconds * 48_000,
                           "\(label): \(channel): captured \(c.captured) + filled \(c.filled) + repeated \(c.repeated) is the session",
                           file: file, line: line)
            // The sources carry sound all along: next to nothing is missing (a start that did not
            // wait filled 30-40 ms on pipewire-pulse, 340-930 ms on a cold PulseAudio). On
            // pipewire-pulse up to two of its 20 ms quanta have been seen filled (once in the
            // PipeWire passes of six CI runs: 1920 and 995 samples, the start still in time);
            // where it happens is in the log the message carries.
            // A gap the server reports later in the recording (its timestamps jumped: it lost a
            // quantum under load, seen once in a CI run: 40 ms, announced) is not the start's, and is
            // allowed beside it up to 100 ms in all, each announced gap to the millisecond it names.
            // The start and the stop apart: the start fills nothing beyond its first stamp's
            // precision, one 20 ms quantum (the agent notices anything more; 1-6 samples are
            // usual, 235 was seen once; the regression this guards, a start that did not wait
            // for its sources, filled 16,000-45,000 samples), the stop may miss what the server
            // had not delivered by then, up to the bound.
            let allowed = ProcessInfo.processInfo.environment["CAPTURE_TEST_AUDIO_SERVER"] == "pipewire" ? 1920 : 960
            let announced = Self.announcedJumpSamples(in: e.log, channel: channel)
            let atStart = Self.loggedSamples(in: e.log, message: "audio starts after the session's zero", channel: channel)
            let atStop = Self.loggedSamples(in: e.log, message: "audio up to the stop did not arrive in time", channel: channel)
            let context = "\(label): \(channel): \(c.filled) samples filled: \(atStart) at the start, \(atStop) at the stop, "
                + "\(announced) in reported gaps; agent log:\n\(e.log.suffix(1500))"
            XCTAssertEqual(atStart, 0, "nothing filled at the start beyond 20 ms: " + context, file: file, line: line)
            XCTAssertLessThanOrEqual(atStop, allowed, "at the stop: " + context, file: file, line: line)
            XCTAssertLessThanOrEqual(announced, 4_800, "reported gaps: " + context, file: file, line: line)
            XCTAssertLessThanOrEqual(c.filled, 960 + atStop + announced, "no unexplained hole: " + context, file: file, line: line)
        }
    }

    /// The `samples` of the agent's notice `message` for `channel` (0 when it did not log it).
    static func loggedSamples(in log: String, message: String, channel: String) -> Int {
        for line in log.split(separator: "\n") where line.contains(message) && line.contains("channel=\(channel) ") {
            guard let range = line.range(of: "samples=") else { continue }
            return Int(line[range.upperBound...].prefix { $0.isNumber }) ?? 0
        }
        return 0
    }

    /// The samples of the gaps the agent announced for `channel` ("timestamp jumped by N ms"),
    /// each rounded up to the next millisecond (the notice truncates).
    static func announcedJumpSamples(in log: String, channel: String) -> Int {
        let marker = "channel=\(channel) reason=timestamp jumped by "
        var total = 0
        for line in log.split(separator: "\n") {
            guard let range = line.range(of: marker) else { continue }
            let ms = Int(line[range.upperBound...].prefix { $0.isNumber }) ?? 0
            total += (ms + 1) * 48
        }
        return total
    }

    /// The plain setup (one real-time client per tone, nothing warmed up), each recording on a
    /// freshly started server, 3 times (`CAPTURE_TEST_COLD_RIGS=10` for a longer run): every
    /// channel's sound starts within 30 ms of the session's start. (A start that did not wait
    /// for its sources began these with 340-930 ms of silence, every time: the idle null sink's
    /// monitor delivers nothing for up to a second.)
    func testAudioStartsAtTheStartOnAColdServer() throws {
        let rigs = ProcessInfo.processInfo.environment["CAPTURE_TEST_COLD_RIGS"].flatMap { Int($0) } ?? 3
        for i in 0..<rigs {
            let rig = try TestRig.start(RigOptions(audio: true, motion: false, tones: .separate))
            defer { rig.stop() }
            let e = try Self.recordEdges(rig, name: "cold-\(i)")
            print("cold server \(i): first sound \(e.firstSoundMs.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value) ms" })")
            Self.check(e, seconds: 2, label: "cold \(i)")
        }
    }

    /// The same on the repo's rig (warm sinks), 5 recordings in a row.
    func testAudioStartsAtTheStartOnTheRig() throws {
        let rig = try TestRig.shared()
        for i in 0..<5 {
            let e = try Self.recordEdges(rig, name: "rig-\(i)")
            Self.check(e, seconds: 2, label: "rig \(i)")
        }
    }
}

/// A source that hands out audio in large blocks: PulseAudio 16's module-sine-source sends 2 s
/// at a time (Bluetooth, RTP and tunnel sources behave alike). pipewire-pulse has no such
/// module, so these run on PulseAudio.
final class BurstySourceTests: XCTestCase {
    private func burstyRig() throws -> (TestRig, PulseControl) {
        let rig = try TestRig.start(RigOptions(audio: true, motion: false, audioServer: "pulseaudio"))
        let pulse = PulseControl(rig: rig)
        try pulse.pactl("load-module", "module-sine-source", "source_name=bursty", "frequency=440", "rate=48000")
        try pulse.pactl("set-default-source", "bursty")
        return (rig, pulse)
    }

    /// `record --duration 5s` of mic:default (the bursty source) and display:1, three times: 5
    /// chunks each, the mic stream exactly 5 s (within 25 ms) with the tone up to its last
    /// 50 ms, nothing filled, no interruption; the counters add up to the session.
    func testNothingIsLostAtTheStop() throws {
        let (rig, _) = try burstyRig()
        defer { rig.stop() }
        for run in 0..<3 {
            let out = Agent.temporaryDirectory("bursty-\(run)")
            defer { try? FileManager.default.removeItem(atPath: out) }
            let r = try Agent.run(["record", "--out", out, "--duration", "5s", "--json", "--log-level", "notice",
                                   "--channel", "mic:default", "--channel", "display:1"], env: Agent.environment(rig))
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertFalse(r.stderr.contains("interrupted"), "run \(run): \(r.stderr)")
            let summary = try RecordingSummary(json: r.stdout)
            let mic = try XCTUnwrap(summary.channel(.microphone(nil)))
            let display = try XCTUnwrap(summary.channel(.display(1)))
            XCTAssertEqual(mic.chunks, 5, "run \(run): \(mic)")
            XCTAssertEqual(display.chunks, 5)
            XCTAssertEqual(mic.discontinuities, 0, "run \(run)")
            XCTAssertEqual(mic.silenceFilledSamples, 0, "run \(run): the source delivered everything")
            XCTAssertEqual((mic.capturedSamples ?? 0) + (mic.silenceFilledSamples ?? 0)
                           + (mic.repeatedSamples ?? 0) + (mic.lostSamples ?? 0), 240_000)
            XCTAssertEqual(mic.lostSamples, 0, "run \(run): audio lost")

            let all = try RecordedChannel(out + "/mic-default").concatenated(into: out + "/mic.ts")
            XCTAssertEqual(try Media.decodeErrors(all), "")
            let samples = try Media.decodeFloat(all, channels: 1, sampleRate: 48_000, seconds: nil)
            XCTAssertEqual(Double(samples.count) / 48_000, 5.0, accuracy: 0.025, "run \(run): the mic stream's length")
            let lastButOne = samples[(240_000 - 4_800)..<(240_000 - 2_400)]   // [4.90, 4.95) s
            XCTAssertGreaterThan(Media.rmsDB(samples: lastButOne), -20, "run \(run): no tone in the last 100-50 ms")
            XCTAssertEqual(Media.dominantFrequency(samples: samples[(240_000 - 24_000)..<240_000]), 440, accuracy: 5)
            // And nothing silent anywhere (20 ms pieces).
            var piece = 0
            while (piece + 1) * 960 <= 240_000 {
                if Media.rmsDB(samples: samples[(piece * 960)..<((piece + 1) * 960)]) < -30 {
                    XCTFail("run \(run): silence at \(piece * 20) ms")
                    break
                }
                piece += 1
            }
        }
    }

    /// The daemon: 6 s on the bursty source raise no channel-error and no "audio interrupted"
    /// log line; removing the source (a real interruption) still does.
    func testBurstyTimingIsNoInterruptionButRemovingTheSourceIs() throws {
        let (rig, pulse) = try burstyRig()
        defer { rig.stop() }
        let daemon = try DaemonClientHarness(rig: rig)
        defer { daemon.stop() }
        let client = daemon.client
        _ = try client.call("subscribeEvents")
        _ = try client.call("startRecording", params: ["sessionId": "bursty-1", "channels": .array([.object(["channel_id": "mic:default"])])],
                            timeout: .seconds(30))
        usleep(6_000_000)
        XCTAssertNil(try client.waitForEvent(.channelError, timeoutNs: 100_000_000), "a bursty source raised a channel-error")
        let status = try client.call(.getStatus, as: StatusResult.self)
        XCTAssertEqual(status.channels.first?.interruptions, 0, "\(status)")
        XCTAssertEqual(status.channels.first?.silenceFilledMs, 0, "\(status)")
        // Now a real interruption: the default source goes away (the stream moves to another).
        let modules = try pulse.pactl("list", "short", "modules")
        let sine = try XCTUnwrap(modules.split(separator: "\n").first { $0.contains("module-sine-source") }?.split(separator: "\t").first)
        try pulse.pactl("unload-module", String(sine))
        let error = try XCTUnwrap(try client.waitForEvent(.channelError, timeoutNs: 5_000_000_000), "removing the source went unnoticed")
        XCTAssertEqual(error.channelError?.code, .audioUnavailable)
        XCTAssertEqual(error.channelID, .microphone(nil))
        let stopped = try client.call(.stopRecording, as: StopRecordingResult.self, timeout: .seconds(30))
        XCTAssertEqual(stopped.state, .stopped)
        XCTAssertGreaterThanOrEqual(stopped.summary.channels.first?.discontinuities ?? 0, 1)
        XCTAssertTrue(daemon.log.contains("audio interrupted"), "the real interruption was not logged")
    }
}
