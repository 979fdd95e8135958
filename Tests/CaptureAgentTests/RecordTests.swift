import CaptureCore
import CaptureUplink
import CaptureTestSupport
import Foundation
import XCTest

/// `capture-agent record` on a real Xvfb + PulseAudio rig, media checked with ffprobe/ffmpeg.
final class RecordTests: XCTestCase {
    /// The acceptance run: 10 s of display:1 + mic + system audio.
    func testTenSecondRecordingOfScreenMicAndSystemAudio() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("ten-seconds")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let fps = 30
        let result = try Agent.run(
            ["record", "--out", out, "--duration", "10s", "--fps", "\(fps)", "--chunk", "1s",
             "--channel", "display:1", "--channel", "mic:default", "--channel", "system_audio:default", "--json"],
            env: Agent.environment(rig))
        XCTAssertEqual(result.status, 0, "stderr: \(result.stderr)")

        // --- video ---
        let video = try RecordedChannel(out + "/display-1")
        XCTAssertGreaterThanOrEqual(video.chunks.count, 10)
        XCTAssertLessThanOrEqual(video.chunks.count, 11)
        XCTAssertEqual(video.chunks.map(\.seq), Array(0..<video.chunks.count), "sequence numbers from 0 without gaps")
        let videoAll = try video.concatenated(into: out + "/video-all.ts")
        XCTAssertEqual(try Media.decodeErrors(videoAll), "", "concatenated video decodes without error")
        let v = try Media.probe(videoAll)
        XCTAssertEqual(v.codecName, "h264")
        XCTAssertEqual(v.width, 1920)
        XCTAssertEqual(v.height, 1080)
        let expectedFrames = Double(fps * 10)
        XCTAssertEqual(Double(v.frameCount), expectedFrames, accuracy: expectedFrames * 0.01,
                       "frame count within 1% of fps x duration")
        let frameNs = Int64(1_000_000_000 / fps)
        var previousEnd: Int64?
        for chunk in video.chunks {
            let packets = try Media.packetTimestamps(chunk.media)
            XCTAssertEqual(packets.first?.key, true, "chunk \(chunk.seq) starts with a keyframe")
            let probe = try Media.probe(chunk.media)
            XCTAssertEqual(probe.startTime, Double(chunk.startPtsNs) / 1e9, accuracy: 0.002,
                           "chunk \(chunk.seq): metadata start matches the stream")
            XCTAssertEqual(Double(probe.frameCount), Double(chunk.frames), accuracy: 0, "chunk \(chunk.seq) frame count")
            if !chunk.isFinal {
                XCTAssertLessThanOrEqual(abs(chunk.durationNs - 1_000_000_000), frameNs,
                                         "chunk \(chunk.seq) lasts 1 s within one frame: \(chunk.durationNs)")
                // Measured on the media too: first to last frame plus one frame.
                let span = (packets.last!.pts + 1.0 / Double(fps)) - packets.first!.pts
                XCTAssertEqual(span, 1.0, accuracy: 1.0 / Double(fps) + 0.001, "chunk \(chunk.seq) media span")
            }
            if let previousEnd {
                XCTAssertEqual(chunk.startPtsNs, previousEnd, "chunks tile the timeline")
            }
            previousEnd = chunk.startPtsNs + chunk.durationNs
        }
        XCTAssertTrue(video.chunks.last!.isFinal)
        let pts = try Media.packetTimestamps(videoAll).map(\.pts)
        XCTAssertEqual(pts, pts.sorted(), "timestamps are continuous and increasing across chunks")
        // Every frame sits on its slot of the frame grid (n/fps), so no two frames are ever closer than
        // one period (strict muxers and players reject that).
        let offGrid = pts.filter { abs(($0 * Double(fps)).rounded() - $0 * Double(fps)) > 0.001 }
        XCTAssertEqual(offGrid.count, 0, "frames off the 1/\(fps) s grid: \(offGrid.prefix(5))")

        // --- audio ---
        var firstStarts = [v.startTime]
        for (dir, tone) in [("mic-default", 440.0), ("system_audio-default", 1000.0)] {
            let audio = try RecordedChannel(out + "/" + dir)
            XCTAssertGreaterThanOrEqual(audio.chunks.count, 10, dir)
            let all = try audio.concatenated(into: out + "/\(dir)-all.ts")
            XCTAssertEqual(try Media.decodeErrors(all), "", "\(dir) decodes without error")
            let a = try Media.probe(all)
            XCTAssertEqual(a.codecName, "aac", dir)
            XCTAssertEqual(a.sampleRate, 48_000, dir)
            XCTAssertEqual(a.channels, 2, dir)
            XCTAssertEqual(a.duration, 10, accuracy: 0.025, "\(dir) lasts as long as the recording")
            XCTAssertEqual(try Media.dominantFrequency(all, seconds: 5), tone, accuracy: 5, "\(dir) carries its tone")
            // The rig's tones are sines at -9 dBFS RMS; AAC at 128k keeps that within 2 dB.
            let level = try Media.rmsLevelDB(all)
            XCTAssertEqual(level, -9, accuracy: 2, "\(dir) level: \(level) dBFS")
            // No dropout anywhere: every 20 ms piece of the 10 s carries the tone near full level.
            let samples = try Media.decodeFloat(all, channels: 1, sampleRate: 48_000, seconds: nil)
            XCTAssertGreaterThanOrEqual(samples.count, 480_000, dir)
            var piece = 0
            while (piece + 1) * 960 <= min(samples.count, 480_000) {
                let db = Media.rmsDB(samples: samples[(piece * 960)..<((piece + 1) * 960)])
                if db < -15 {
                    XCTFail("\(dir): dropout at \(piece * 20) ms (\(db) dB)")
                    break
                }
                piece += 1
            }
            for chunk in audio.chunks where !chunk.isFinal {
                XCTAssertLessThanOrEqual(abs(chunk.durationNs - 1_000_000_000), 25_000_000,
                                         "\(dir) chunk \(chunk.seq) lasts 1 s within 25 ms: \(chunk.durationNs)")
                let probe = try Media.probe(chunk.media)
                XCTAssertEqual(probe.startTime, Double(chunk.startPtsNs) / 1e9, accuracy: 0.002)
            }
            firstStarts.append(try Media.probe(audio.chunks[0].media).startTime)
        }
        XCTAssertLessThanOrEqual(firstStarts.max()! - firstStarts.min()!, 0.050,
                                 "channels start within 50 ms of each other: \(firstStarts)")

        // The session file names every channel.
        let session = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/session.json"))) as? [String: Any]
        XCTAssertEqual((session?["channels"] as? [Any])?.count, 3)
    }

    /// SIGINT closes the current chunk of every channel and exits cleanly.
    func testSigintClosesTheCurrentChunks() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("sigint")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let process = try Agent.start(["record", "--out", out, "--channel", "display:1", "--channel", "system_audio:default",
                                       "--chunk", "1s"], env: Agent.environment(rig))
        // The signal goes 1.5 s after the first video chunk (the timeline's first second) is in
        // the spool. Where it falls on the session's timeline comes from the wall clock: the
        // chunk's captureTimeUnixNs less its startPtsNs is the session's start.
        let firstChunk = out + "/display-1/chunk-000000.json"
        let appeared = Date().addingTimeInterval(15)
        while !FileManager.default.fileExists(atPath: firstChunk) && Date() < appeared && process.isRunning { usleep(5_000) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: firstChunk), "no first chunk")
        Thread.sleep(forTimeInterval: 1.5)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        kill(process.processIdentifier, SIGINT)
        let signalledUnixNs = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertFalse(process.isRunning, "stops promptly on SIGINT")
        if process.isRunning { process.terminate(); return }
        XCTAssertEqual(process.terminationStatus, 0)
        let first = try XCTUnwrap(RecordedChannel(out + "/display-1").chunks.first)
        let startUnixNs = first.metadata.captureTimeUnixNs - first.startPtsNs
        let signalledAt = Double(signalledUnixNs - startUnixNs) / 1e9
        for dir in ["display-1", "system_audio-default"] {
            let channel = try RecordedChannel(out + "/" + dir)
            XCTAssertGreaterThanOrEqual(channel.chunks.count, 3, dir)
            XCTAssertTrue(channel.chunks.last?.isFinal ?? false, "\(dir): the last chunk is closed and marked final")
            let total = channel.chunks.reduce(Int64(0)) { $0 + $1.durationNs }
            // Up to the signal: at least its time on the timeline, at most that plus the signal's
            // handling (the capture notices it within a frame or an audio block; 0.15 s leaves
            // room for a loaded machine's scheduling).
            XCTAssertGreaterThanOrEqual(Double(total) / 1e9, signalledAt - 0.03, "\(dir): everything up to the signal was kept")
            XCTAssertLessThanOrEqual(Double(total) / 1e9, signalledAt + 0.15, "\(dir): nothing after the signal")
            let all = try channel.concatenated(into: out + "/\(dir).ts")
            XCTAssertEqual(try Media.decodeErrors(all), "", dir)
        }
    }

    /// A SIGTERM that arrives while `record` is still starting (before its signal
    /// sources exist; the gap is widened here by a test-only delay) is not lost:
    /// the recording stops as soon as it can, closing its chunks, instead of
    /// running its whole duration (the signals used to be set to SIG_IGN first,
    /// which discards a signal in that gap) or dying without closing anything.
    func testASignalDuringStartUpIsNotLost() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("early-signal")
        defer { try? FileManager.default.removeItem(atPath: out) }
        var env = Agent.environment(rig)
        let marker = out + ".marker"
        defer { try? FileManager.default.removeItem(atPath: marker) }
        env["CAPTURE_AGENT_TEST_SIGNAL_SETUP_DELAY_MS"] = "1500"
        env["CAPTURE_AGENT_TEST_SIGNAL_SETUP_MARKER"] = marker
        let started = Date()
        let process = try Agent.start(["record", "--out", out, "--duration", "20s", "--channel", "display:1"], env: env)
        // Inside the delay (after the block, before the sources): the hook says when.
        let opened = Date().addingTimeInterval(15)
        while !FileManager.default.fileExists(atPath: marker) && Date() < opened && process.isRunning { usleep(5_000) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: marker), "the delay hook never ran")
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertFalse(process.isRunning, "stops on the early SIGTERM")
        if process.isRunning { process.terminate(); return }
        XCTAssertEqual(process.terminationReason, .exit, "exits, not killed by the signal")
        XCTAssertEqual(process.terminationStatus, 0)
        XCTAssertLessThan(Date().timeIntervalSince(started), 10, "did not record its whole 20 s")
        XCTAssertEqual(try String(contentsOfFile: marker, encoding: .utf8), "delaying\npending: \(SIGTERM)\n",
                       "the signal came inside the gap and waited there")
    }

    /// Every chunk's checksum and size in its metadata match the file.
    func testMetadataDescribesEachChunk() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("metadata")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try Agent.run(["record", "--out", out, "--duration", "2s", "--channel", "mic:default", "--chunk", "0.5s"],
                                   env: Agent.environment(rig))
        XCTAssertEqual(result.status, 0, result.stderr)
        let channel = try RecordedChannel(out + "/mic-default")
        XCTAssertGreaterThanOrEqual(channel.chunks.count, 4)
        let session = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/session.json"))) as? [String: Any]
        let startedAt = try XCTUnwrap((session?["startedAtUnixNs"] as? NSNumber)?.int64Value, "session.json: \(session ?? [:])")
        for chunk in channel.chunks {
            let data = try Data(contentsOf: URL(fileURLWithPath: chunk.media))
            XCTAssertEqual(chunk.bytes, data.count)
            let sum = try runProcess("/usr/bin/sha256sum", [chunk.media], timeout: .seconds(10)).stdout.prefix(64)
            XCTAssertEqual(chunk.sha256, String(sum))
            XCTAssertEqual(chunk.channelId, ChannelID.microphone(nil).description)
            // When the chunk's first sample was captured: the session's start plus its place on
            // the timeline, in both forms.
            let unixNs = chunk.captureTimeUnixNs
            let startPts = chunk.startPtsNs
            XCTAssertEqual(unixNs, startedAt + startPts, "chunk \(chunk.seq)")
            let iso = chunk.captureTime
            let parsed = try XCTUnwrap(ISO8601DateFormatter.withFractions.date(from: iso), iso)
            XCTAssertEqual(parsed.timeIntervalSince1970, Double(unixNs) / 1e9, accuracy: 0.001, "chunk \(chunk.seq): \(iso)")
        }
        // No temporary files are left behind.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: out + "/mic-default").filter { $0.hasSuffix(".tmp") }
        XCTAssertEqual(leftovers, [])
    }
}

extension ISO8601DateFormatter {
    /// `2026-12-06T19:40:00.123Z`.
    static var withFractions: ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }
}
