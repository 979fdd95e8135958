import CaptureControl
import CaptureCore
import CaptureTestSupport
import CaptureUplink
import Foundation
import Synchronization
import XCTest

/// Sessions driven over the real control socket of a real daemon, capturing
/// the rig's Xvfb and PulseAudio; media checked with ffmpeg.
final class SessionTests: XCTestCase {
    /// Concatenates a channel's chunks (in sequence order) into one file.
    static func concatenate(_ sessionDir: String, _ channelDir: String) throws -> String {
        let channel = try RecordedChannel(sessionDir + "/" + channelDir)
        XCTAssertFalse(channel.chunks.isEmpty, "no chunks in \(channel.directory)")
        return try channel.concatenated(into: sessionDir + "/\(channelDir)-all.ts")
    }

    /// Pausing mic and screen: the mic turns to digital silence and the screen
    /// to black exactly over [pause, resume) on the session timeline (the
    /// instants the replies and events report), and the streams stay continuous.
    func testPauseAndResumeAreTimestampedOnTheSessionTimeline() throws {
        let rig = try TestRig.shared()
        let daemon = try DaemonProcess(rig: rig, name: "pause")
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        _ = try client.ok("startRecording", ["sessionId": "pause-1", "channels": .array([
            .object(["channel_id": "display:1"]), .object(["channel_id": "mic:default"])])])
        XCTAssertNotNil(try client.event(.recordingStarted))
        usleep(2_000_000)
        let paused = try client.ok(.pauseTracks, ["tracks": ["mic", "screen"]], as: TracksResult.self)
        let pauseAt = paused.atNs
        XCTAssertEqual(paused.pausedTracks, [.mic, .screen])
        let pausedEvent = try XCTUnwrap(try client.event(.recordingPaused))
        XCTAssertEqual(pausedEvent.recordingPaused, .init(tracks: [.mic, .screen], atNs: pauseAt, pausedTracks: [.mic, .screen]))
        XCTAssertEqual(pausedEvent.sessionId, "pause-1")
        XCTAssertEqual(try client.ok(.getStatus, as: StatusResult.self).pausedTracks, [.mic, .screen])
        let again = try client.ok(.pauseTracks, ["tracks": ["mic"]], as: TracksResult.self)
        XCTAssertEqual(again.changed, [], "pausing a paused track changed something")
        usleep(2_000_000)
        let resumed = try client.ok(.resumeTracks, ["tracks": ["mic", "screen"]], as: TracksResult.self)
        let resumeAt = resumed.atNs
        XCTAssertEqual(resumed.pausedTracks, [])
        let resumedEvent = try XCTUnwrap(try client.event(.recordingResumed))
        XCTAssertEqual(resumedEvent.recordingResumed?.atNs, resumeAt)
        XCTAssertNil(client.bufferedEvents.first { $0.name == .recordingPaused }, "a second recording-paused was sent")
        usleep(2_000_000)
        let stopped = try client.ok(.stopRecording, ["sessionId": "pause-1"], as: StopRecordingResult.self)
        let durationNs = stopped.summary.durationNs
        let p = Double(pauseAt) / 1e9, r = Double(resumeAt) / 1e9
        XCTAssertEqual(r - p, 2.0, accuracy: 0.3)

        let dir = daemon.sessionDirectory("pause-1")
        // Audio: tone, silence from the pause instant, tone again from the resume instant.
        let mic = try Self.concatenate(dir, "mic-default")
        let probe = try Media.probe(mic)
        XCTAssertEqual(probe.startTime, 0, accuracy: 0.03)
        let samples = try Media.decodeFloat(mic, channels: 1, sampleRate: 48_000, seconds: nil)
        let total = Double(samples.count) / 48_000
        // Continuous to AAC's framing (one 21.3 ms frame), and every sample accounted for.
        XCTAssertEqual(total, Double(durationNs) / 1e9, accuracy: 0.025, "the mic stream is not continuous over the pause")
        let micSummary = try XCTUnwrap(stopped.summary.channel(.microphone(nil)))
        Self.assertSamplesAddUp(micSummary, durationNs: durationNs)
        func level(_ from: Double, _ to: Double) -> Double {
            let a = max(0, Int(from * 48_000)), b = min(samples.count, Int(to * 48_000))
            return a < b ? Media.rmsDB(samples: samples[a..<b]) : .nan
        }
        XCTAssertGreaterThan(level(p - 0.5, p - 0.04), -20, "no tone before the pause")
        XCTAssertLessThan(level(p + 0.04, r - 0.04), -80, "the mic was not silent while paused")
        XCTAssertGreaterThan(level(r + 0.05, r + 0.5), -20, "no tone after the resume")
        // The edges, in 5 ms steps: where the level crosses -40 dB.
        func crossing(from: Double, toSilence: Bool) -> Double? {
            var t = from
            while t < from + 0.3 {
                let l = level(t, t + 0.005)
                if toSilence ? l < -40 : l > -40 { return t }
                t += 0.005
            }
            return nil
        }
        let silenceStart = try XCTUnwrap(crossing(from: p - 0.1, toSilence: true))
        let toneStart = try XCTUnwrap(crossing(from: r - 0.1, toSilence: false))
        XCTAssertEqual(silenceStart, p, accuracy: 0.025, "silence begins at \(silenceStart) s, the pause was at \(p) s")
        XCTAssertEqual(toneStart, r, accuracy: 0.025, "the tone returns at \(toneStart) s, the resume was at \(r) s")

        // Video: the moving pattern, black from the first frame slot at or after
        // the pause, the pattern again from the first slot after the resume.
        let video = try Self.concatenate(dir, "display-1")
        XCTAssertEqual(try Media.decodeErrors(video), "")
        let motion = try XCTUnwrap(rig.motionRect)
        let frames = try Media.frameLuma(video, crop: (Int(motion.x) + 40, Int(motion.y) + 40, 320, 320))
        let period = 1.0 / 30
        let before = frames.filter { $0.pts < p - period }
        let during = frames.filter { $0.pts >= p + period && $0.pts < r - period }
        let after = frames.filter { $0.pts >= r + 2 * period }
        XCTAssertFalse(before.isEmpty || during.isEmpty || after.isEmpty, "frames: \(frames.count)")
        XCTAssertTrue(before.allSatisfy { $0.luma > 60 }, "the pattern is missing before the pause")
        XCTAssertTrue(during.allSatisfy { $0.luma < 20 }, "the screen was not black while paused: \(during.filter { $0.luma >= 20 }.prefix(3))")
        XCTAssertTrue(after.allSatisfy { $0.luma > 60 }, "the pattern is missing after the resume")
        let firstBlack = try XCTUnwrap(frames.first { $0.pts >= p - 0.2 && $0.luma < 20 })
        XCTAssertEqual(firstBlack.pts, p, accuracy: period + 0.001)
        let firstBack = try XCTUnwrap(frames.first { $0.pts >= r - 0.1 && $0.luma > 60 })
        XCTAssertEqual(firstBack.pts, r, accuracy: 2 * period + 0.001)
        XCTAssertEqual(daemon.terminate(), 0)
    }

    /// One session at a time; several clients at once; every subscriber gets every event.
    func testSecondStartIsRefusedAndEventsFanOutToEverySubscriber() throws {
        let rig = try TestRig.shared()
        let daemon = try DaemonProcess(rig: rig, name: "fanout")
        let clients = try (0..<3).map { _ in try daemon.client() }
        for c in clients { _ = try c.ok("subscribeEvents") }
        let bystander = try daemon.client()   // never subscribes: gets no events
        let started = try clients[0].ok(.startRecording, ["sessionId": "fan-1", "channels": .array([.object(["channel_id": "display:1"])])],
                                        as: StartRecordingResult.self)
        XCTAssertEqual(started.state, .active)
        XCTAssertEqual(started.channels.map(\.channelId), ["display:1"])

        let refused = clients[1].failure("startRecording", ["sessionId": "fan-2"])
        XCTAssertEqual(refused?.code, .invalidState)
        XCTAssertTrue(refused?.message.contains("fan-1") ?? false, refused?.message ?? "")
        for c in clients {
            let e = try XCTUnwrap(try c.event(.recordingStarted))
            XCTAssertEqual(e.sessionId, "fan-1")
            XCTAssertEqual(e.recordingStarted, started, "recording-started's data is the startRecording result")
        }
        // Many concurrent pings and status reads from fresh connections while recording.
        let failures = Atomic<Int>(0)
        let socketPath = daemon.socketPath
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            do {
                let c = try ControlClient(socketPath: socketPath)
                for _ in 0..<20 { _ = try c.call("ping", timeout: .seconds(10)) }
                let s = try c.call(.getStatus, as: StatusResult.self, timeout: .seconds(10))
                if s.state != .active { failures.add(1, ordering: .relaxed) }
            } catch {
                failures.add(1, ordering: .relaxed)
            }
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
        usleep(1_500_000)
        let stopped = try clients[2].ok(.stopRecording, as: StopRecordingResult.self)
        XCTAssertEqual(stopped.state, .stopped)
        let chunks = stopped.summary.channels.first?.chunks ?? 0
        XCTAssertGreaterThanOrEqual(chunks, 1)
        for c in clients {
            let stoppedEvent = try XCTUnwrap(try c.event(.recordingStopped), "a subscriber missed recording-stopped")
            XCTAssertEqual(stoppedEvent.recordingStopped?.summary, stopped.summary)
            let complete = try XCTUnwrap(try c.event(.recordingComplete)?.recordingComplete)
            XCTAssertEqual(complete, .spool(chunks: chunks, bytes: stopped.summary.channels.first?.bytes ?? 0,
                                            outputDirectory: stopped.summary.outputDirectory))
        }
        XCTAssertEqual(try bystander.nextEvent(timeoutNs: 300_000_000)?.name, nil, "a client that did not subscribe got an event")
        XCTAssertEqual(clients[0].failure("stopRecording")?.code, .invalidState)
        XCTAssertEqual(clients[0].failure("pauseTracks")?.code, .invalidState)
        // A new session may start after the last one stopped; the old id is taken.
        XCTAssertEqual(clients[0].failure("startRecording", ["sessionId": "fan-1"])?.code, .invalidRequest)
        _ = try clients[0].ok("startRecording", ["sessionId": "fan-3", "channels": .array([.object(["channel_id": "display:1"])])])
        _ = try clients[0].ok("stopRecording", ["sessionId": "fan-3"])
        XCTAssertEqual(daemon.terminate(), 0)
    }

    /// The X server dies mid-session: the session fails with the reason, the
    /// chunks so far stay, and the daemon keeps answering.
    func testDisplayLossFailsTheSessionWhileTheDaemonKeepsServing() throws {
        let rig = try TestRig.start(RigOptions(audio: false, motion: false))
        defer { rig.stop() }
        let daemon = try DaemonProcess(rig: rig, name: "xdeath")
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        _ = try client.ok("startRecording", ["sessionId": "xdeath-1", "channels": .array([.object(["channel_id": "display:1"])])])
        usleep(1_500_000)
        rig.stop()   // kills Xvfb under the capture thread
        let failedEvent = try XCTUnwrap(try client.event(.recordingFailed, within: 15), "no recording-failed event")
        let failed = try XCTUnwrap(failedEvent.recordingFailed)
        XCTAssertEqual(failed.code, .displayUnavailable)
        XCTAssertEqual(failed.phase, .recording)
        XCTAssertFalse(failed.message.isEmpty)
        XCTAssertEqual(failed.summary?.errorCode, "DISPLAY_UNAVAILABLE")
        XCTAssertEqual(failedEvent.sessionId, "xdeath-1")
        XCTAssertNotNil(try client.event(.recordingStopped))
        XCTAssertEqual(try daemon.client().ok(.ping, as: DaemonInfo.self).pong, true)
        let status = try client.ok(.getStatus, as: StatusResult.self)
        XCTAssertEqual(status.state, .failed)
        XCTAssertEqual(status.failure?.code, CaptureErrorCode.displayUnavailable.rawValue)
        let chunks = status.channels.first?.chunksSpooled ?? 0
        XCTAssertGreaterThanOrEqual(chunks, 1, "the chunks recorded before the loss are gone")
        // A new start of the display fails cleanly, and the daemon still serves. (With the default
        // channels the rig's missing audio server fails it too, and under load that was
        // reported first: AUDIO_UNAVAILABLE, once in a CI run.)
        XCTAssertEqual(client.failure("startRecording", ["sessionId": "xdeath-2",
                                                         "channels": .array([.object(["channel_id": "display:1"])])])?.code,
                       .displayUnavailable)
        XCTAssertEqual(try client.ok(.ping, as: DaemonInfo.self).pong, true)
        XCTAssertEqual(daemon.terminate(), 0)
    }

    /// A display channel that stops producing (its X server frozen with
    /// SIGSTOP) is reported by the watchdog, and reported again when it recovers.
    func testWatchdogReportsAStalledChannelAndItsRecovery() throws {
        let rig = try TestRig.start(RigOptions(audio: false, motion: true))
        defer { rig.stop() }
        let xvfb = try XCTUnwrap(Self.rigPID(rig, named: "x"), "no X server in the rig's pid list")
        let daemon = try DaemonProcess(rig: rig, name: "stall")
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        _ = try client.ok("startRecording", ["sessionId": "stall-1", "channels": .array([.object(["channel_id": "display:1"])])])
        usleep(1_500_000)
        kill(xvfb, SIGSTOP)
        var resumed = false
        defer { if !resumed { kill(xvfb, SIGCONT) } }
        let stalled = try XCTUnwrap(try client.event(.channelError, within: 12), "the stall was not reported")
        XCTAssertEqual(stalled.channelID, .display(1))
        XCTAssertEqual(stalled.channelError?.code, .channelStalled)
        XCTAssertEqual(stalled.channelError?.recovered, false)
        XCTAssertEqual(try client.ok(.getStatus, as: StatusResult.self).channels.first?.stalled, true)
        XCTAssertEqual(try daemon.client().ok(.ping, as: DaemonInfo.self).pong, true, "the daemon stopped answering during the stall")
        kill(xvfb, SIGCONT)
        resumed = true
        let recovered = try XCTUnwrap(try client.event(.channelError, within: 10), "the recovery was not reported")
        XCTAssertEqual(recovered.channelError?.recovered, true)
        _ = try client.ok("stopRecording")
        XCTAssertEqual(daemon.terminate(), 0)
    }

    /// The audio server frozen (SIGSTOP: connected, delivering nothing) for longer than the
    /// watchdog's 4 s: the microphone channel is reported stalled, the daemon answers, and once
    /// the server runs again the channel reports its recovery, its stream whole (PulseAudio
    /// catches up with the frozen seconds' audio, pipewire-pulse's gap is filled with silence).
    func testWatchdogReportsAStalledAudioChannelAndItsRecovery() throws {
        let rig = try TestRig.start(RigOptions(audio: true, motion: false))
        defer { rig.stop() }
        let serverName = rig.audioServer == "pipewire" ? "pipewire-pulse" : "pulseaudio"
        let server = try XCTUnwrap(Self.rigPID(rig, named: serverName) ?? Self.rigPID(rig, named: "pulse"),
                                   "no \(serverName) in the rig's pid list")
        let daemon = try DaemonProcess(rig: rig, name: "audio-stall")
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents", ["events": ["channel-error"]])
        _ = try client.ok("startRecording", ["sessionId": "audio-stall", "channels": .array([.object(["channel_id": "mic:default"])])])
        usleep(1_500_000)
        kill(server, SIGSTOP)
        var resumed = false
        defer { if !resumed { kill(server, SIGCONT) } }
        let stalled = try XCTUnwrap(try client.event(.channelError, within: 12), "the stall was not reported:\n\(daemon.log)")
        XCTAssertEqual(stalled.channelID, .microphone(nil))
        XCTAssertEqual(stalled.channelError?.code, .channelStalled, "\(stalled)")
        XCTAssertEqual(stalled.channelError?.recovered, false)
        XCTAssertEqual(try client.ok(.getStatus, as: StatusResult.self).channels.first?.stalled, true)
        XCTAssertEqual(try daemon.client().ok(.ping, as: DaemonInfo.self).pong, true, "the daemon stopped answering during the stall")
        kill(server, SIGCONT)
        resumed = true
        var recovered: ControlEvent?
        let deadline = Date().addingTimeInterval(15)
        while recovered == nil, Date() < deadline, let event = try client.event(.channelError, within: 15) {
            if let e = event.channelError, e.code == .channelStalled, e.recovered { recovered = event }
        }
        XCTAssertNotNil(recovered, "the recovery was not reported:\n\(daemon.log)")
        usleep(1_000_000)
        let stopped = try client.ok(.stopRecording, as: StopRecordingResult.self)
        let channel = try XCTUnwrap(stopped.summary.channels.first)
        Self.assertSamplesAddUp(channel, durationNs: stopped.summary.durationNs)
        XCTAssertEqual(daemon.terminate(), 0)
    }

    /// Two microphones, the first a source that delivers in 2 s bursts (PulseAudio's sine
    /// source): the stop waits up to 2 s for its last burst, and meanwhile the second (the rig's
    /// microphone) ends at the session's end too: its counters add up to the session's length
    /// to the sample, and its stream decodes to that length (plus at most the last AAC frame's
    /// padding). The end used to be set one channel at a time, each after the previous
    /// channel's wait: the rig's microphone ran on that long past the end (in CI a mic came
    /// out 33 ms longer than its session behind a system_audio channel's short wait).
    func testEveryAudioChannelEndsAtTheStopWhileABurstyOneIsWaitedFor() throws {
        let rig = try TestRig.start(RigOptions(audio: true, motion: false, audioServer: "pulseaudio"))
        defer { rig.stop() }
        let pulse = PulseControl(rig: rig)
        try pulse.pactl("load-module", "module-sine-source", "source_name=bursty", "frequency=440", "rate=48000")
        let daemon = try DaemonProcess(rig: rig, name: "bursty-end")
        let client = try daemon.client()
        _ = try client.ok("startRecording", ["sessionId": "bursty-end", "channels": .array([
            .object(["channel_id": "mic:bursty"]), .object(["channel_id": "mic:mic"])])])
        usleep(3_000_000)
        let stopped = try client.ok(.stopRecording, as: StopRecordingResult.self)
        XCTAssertEqual(daemon.terminate(), 0)
        let durationNs = stopped.summary.durationNs
        let expected = (durationNs * 48_000 + 500_000_000) / 1_000_000_000
        let rigMic = try XCTUnwrap(stopped.summary.channels.first { $0.channel == "mic:mic" }, "\(stopped.summary)")
        Self.assertSamplesAddUp(rigMic, durationNs: durationNs)
        let samples = try Media.decodeFloat(try Self.concatenate(daemon.sessionDirectory("bursty-end"), "mic-mic"),
                                            channels: 1, sampleRate: 48_000, seconds: nil)
        XCTAssertGreaterThanOrEqual(samples.count, Int(expected), "the rig's microphone's stream is shorter than the session")
        XCTAssertLessThan(samples.count, Int(expected) + 1_024, "the rig's microphone's stream runs past the session's end")
    }

    /// Pausing system_audio silences it (the 1 kHz the rig plays into its speakers) from the
    /// pause to the resume, to 25 ms, and only it: the microphone's 440 Hz goes on.
    func testPausingSystemAudioSilencesIt() throws {
        let rig = try TestRig.shared()
        let daemon = try DaemonProcess(rig: rig, name: "pause-system-audio")
        let client = try daemon.client()
        _ = try client.ok("startRecording", ["sessionId": "pause-sa", "channels": .array([
            .object(["channel_id": "system_audio:default"]), .object(["channel_id": "mic:default"])])])
        usleep(1_500_000)
        let paused = try client.ok(.pauseTracks, ["tracks": ["system_audio"]], as: TracksResult.self)
        XCTAssertEqual(paused.pausedTracks, [.systemAudio])
        usleep(1_500_000)
        let resumed = try client.ok(.resumeTracks, ["tracks": ["system_audio"]], as: TracksResult.self)
        usleep(1_500_000)
        let stopped = try client.ok(.stopRecording, as: StopRecordingResult.self)
        XCTAssertEqual(daemon.terminate(), 0)
        let p = Double(paused.atNs) / 1e9
        let r = Double(resumed.atNs) / 1e9
        let durationNs = stopped.summary.durationNs
        let dir = daemon.sessionDirectory("pause-sa")
        for (channelDir, tone, paused) in [("system_audio-default", 1000.0, true), ("mic-default", 440.0, false)] {
            let samples = try Media.decodeFloat(try Self.concatenate(dir, channelDir), channels: 1, sampleRate: 48_000, seconds: nil)
            XCTAssertEqual(Double(samples.count) / 48_000, Double(durationNs) / 1e9, accuracy: 0.025, channelDir)
            func slice(_ from: Double, _ to: Double) -> ArraySlice<Float> {
                samples[max(0, Int(from * 48_000))..<min(samples.count, Int(to * 48_000))]
            }
            XCTAssertEqual(Media.dominantFrequency(samples: slice(p - 1.0, p - 0.05)), tone, accuracy: 5, "\(channelDir) before")
            XCTAssertEqual(Media.dominantFrequency(samples: slice(r + 0.05, r + 1.0)), tone, accuracy: 5, "\(channelDir) after")
            let during = Media.rmsDB(samples: slice(p + 0.025, r - 0.025))
            if paused {
                XCTAssertLessThan(during, -80, "\(channelDir) is silent while paused")
            } else {
                XCTAssertGreaterThan(during, -20, "\(channelDir) goes on while system_audio is paused")
            }
        }
    }

    /// PulseAudio killed and restarted mid-session: the channel reports the
    /// interruption, reconnects, fills the gap with silence, and the stream
    /// stays continuous with the tone back after the restart.
    func testAudioServerRestartIsBridgedWithSilence() throws {
        let rig = try TestRig.start(RigOptions(audio: true, motion: false))
        defer { rig.stop() }
        let pulse = PulseControl(rig: rig)
        let daemon = try DaemonProcess(rig: rig, name: "pulse")
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        _ = try client.ok("startRecording", ["sessionId": "pulse-1", "channels": .array([.object(["channel_id": "system_audio:default"])])])
        usleep(2_000_000)
        try pulse.killDaemon()
        let interrupted = try XCTUnwrap(try client.event(.channelError, within: 5), "no channel-error for the lost audio server")
        XCTAssertEqual(interrupted.channelID, .systemAudio(nil))
        XCTAssertEqual(interrupted.channelError?.code, .audioUnavailable)
        XCTAssertEqual(interrupted.channelError?.recovered, false)
        XCTAssertGreaterThanOrEqual(interrupted.channelError?.interruptions ?? 0, 1)
        usleep(1_000_000)
        let restarted = try pulse.restartDaemon()
        defer { PulseControl.kill(restarted) }
        let tone = try pulse.startTone(frequency: 1000, sink: "spk", name: "restart-tone")
        defer { PulseControl.kill(tone) }
        let back = try XCTUnwrap(try client.event(.channelError, within: 5), "no event said the audio is back")
        XCTAssertEqual(back.channelError?.recovered, true)
        XCTAssertNotNil(back.channelError?.silenceFilledMs)
        XCTAssertEqual(back.channelID, .systemAudio(nil))
        usleep(3_000_000)
        let status = try client.ok(.getStatus, as: StatusResult.self)
        XCTAssertEqual(status.state, .active, "the session did not survive the audio server restart")
        XCTAssertFalse(client.bufferedEvents.contains { $0.channelError?.code == .channelStalled },
                       "a reconnecting audio channel was reported as stalled")
        let stopped = try client.ok(.stopRecording, as: StopRecordingResult.self)
        let channel = try XCTUnwrap(stopped.summary.channels.first)
        XCTAssertGreaterThanOrEqual(channel.discontinuities, 1)
        XCTAssertGreaterThan(channel.silenceFilledMs, 700, "the gap was not filled")
        let durationNs = stopped.summary.durationNs

        let audio = try Self.concatenate(daemon.sessionDirectory("pulse-1"), "system_audio-default")
        XCTAssertEqual(try Media.decodeErrors(audio), "")
        let samples = try Media.decodeFloat(audio, channels: 1, sampleRate: 48_000, seconds: nil)
        // System audio stopped by stopRecording may run past the duration by up to the sink's
        // latency (docs: summary object): the rig's sink has 20 ms, which libpulse reports give
        // or take a few ms on a busy machine (20.7 ms once in a CI stream); allowed: 25 ms. The
        // decoded stream is also padded to whole AAC frames (1024 samples, 21.3 ms).
        let decoded = Double(samples.count) / 48_000, duration = Double(durationNs) / 1e9
        XCTAssertGreaterThanOrEqual(decoded, duration - 0.025, "the stream has a hole")
        XCTAssertLessThanOrEqual(decoded, duration + 0.025 + 1024.0 / 48_000, "the stream runs past the stop")
        Self.assertSamplesAddUp(channel, durationNs: durationNs, slack: 1_200)
        let tail = samples.suffix(48_000)
        XCTAssertEqual(Media.dominantFrequency(samples: tail), 1000, accuracy: 5, "no tone after the restart")
        XCTAssertGreaterThan(Media.rmsDB(samples: tail), -30)
        XCTAssertEqual(Media.dominantFrequency(samples: samples[24_000..<72_000]), 1000, accuracy: 5)
        XCTAssertEqual(daemon.terminate(), 0)
    }

    /// The summary's sample counters of an audio channel add up to the session's length
    /// (`slack`: samples it may run over).
    static func assertSamplesAddUp(_ channel: ChannelStatsSnapshot, durationNs: Int64, slack: Int = 0,
                                   file: StaticString = #filePath, line: UInt = #line) {
        let values = [channel.capturedSamples, channel.silenceFilledSamples, channel.repeatedSamples, channel.lostSamples]
            .map { $0.map(Int64.init) }
        XCTAssertFalse(values.contains(nil), "counters missing: \(channel)", file: file, line: line)
        let sum = values.compactMap { $0 }.reduce(0, +)
        let expected = (durationNs * 48_000 + 500_000_000) / 1_000_000_000
        XCTAssertGreaterThanOrEqual(sum, expected, "the counters add up to the session: \(channel)", file: file, line: line)
        XCTAssertLessThanOrEqual(sum, expected + Int64(slack), "the counters add up to the session: \(channel)", file: file, line: line)
    }

    /// An audio server gone for longer than audio_reconnect_timeout fails the session.
    func testAudioServerGoneForGoodFailsAfterTheConfiguredTimeout() throws {
        let rig = try TestRig.start(RigOptions(audio: true, motion: false))
        defer { rig.stop() }
        let daemon = try DaemonProcess(rig: rig, name: "pulsegone", arguments: ["--set", "audio_reconnect_timeout=1s"])
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        _ = try client.ok("startRecording", ["sessionId": "gone-1", "channels": .array([.object(["channel_id": "system_audio:default"])])])
        usleep(1_000_000)
        try PulseControl(rig: rig).killDaemon()
        let killed = Date()
        let failed = try XCTUnwrap(try client.event(.recordingFailed, within: 10))
        XCTAssertEqual(failed.recordingFailed?.code, .audioUnavailable)
        let after = Date().timeIntervalSince(killed)
        XCTAssertGreaterThan(after, 0.9, "failed before the reconnect timeout")
        XCTAssertLessThan(after, 5)
        XCTAssertEqual(try client.ok(.ping, as: DaemonInfo.self).pong, true)
        XCTAssertEqual(daemon.terminate(), 0)
    }

    /// Tokens reach neither the log (at trace level) nor any file the daemon writes.
    func testTokensNeverReachLogsOrFiles() throws {
        // A live endpoint, so that the uplink (its hello, its reconnects, the token file kept
        // for a restart, the token handed over on revocation) is exercised, at trace level.
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "tokens")
        try endpoint.start()
        defer { endpoint.terminate() }
        let session = try endpoint.createSession()
        let first = try endpoint.mintToken()
        let second = try endpoint.mintToken()
        let daemon = try DaemonProcess(rig: rig, name: "token", env: ["CAPTURE_AGENT_LOG_LEVEL": "trace"])
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        _ = try client.ok("startRecording", ["sessionId": .string(session), "uploadToken": .string(first),
                                             "endpoint": .string(endpoint.baseURL),
                                             "channels": .array([.object(["channel_id": "display:1"])])])
        let connected = try XCTUnwrap(try client.event(.uploadProgress, within: 10), "the uplink never connected:\n\(daemon.log)")
        XCTAssertEqual(connected.uploadProgress?.connected, true)
        usleep(1_200_000)   // chunks go with the first token
        let updated = try client.ok(.updateToken, ["token": .string(second), "expiresAt": 4_102_444_800], as: UpdateTokenResult.self)
        XCTAssertEqual(updated.expiresAt, 4_102_444_800)
        XCTAssertEqual(try client.ok(.getStatus, as: StatusResult.self).tokenPresent, true)
        // The endpoint revokes the first token: the uplink goes on with the second.
        try endpoint.revoke(first)
        let handedOver = Date().addingTimeInterval(15)
        var connections = 0
        while connections < 2 && Date() < handedOver {
            usleep(100_000)
            connections = try client.ok(.getStatus, as: StatusResult.self).upload?.connections ?? 0
        }
        XCTAssertGreaterThanOrEqual(connections, 2, "no second connection with the new token:\n\(daemon.log)")
        _ = try client.ok("stopRecording")
        XCTAssertNotNil(try client.event(.recordingComplete, within: 30), "the upload did not complete:\n\(daemon.log)")
        try endpoint.verifyStored(session)
        // A bad token is refused without echoing it.
        let bad = client.failure("updateToken", ["token": .string("has space \(first)")])
        XCTAssertEqual(bad?.code, .invalidToken)
        XCTAssertFalse(bad?.message.contains(first) ?? true)
        XCTAssertEqual(daemon.terminate(), 0)
        let log = daemon.log
        XCTAssertTrue(log.contains("updateToken") && log.contains("uplink connected"),
                      "the trace log is not what this test thinks it is")
        for token in [first, second] {
            XCTAssertFalse(log.contains(token), "a token is in the log")
            let grep = try runProcess("grep", ["-r", "-l", "-F", token, daemon.root], timeout: .seconds(30))
            XCTAssertEqual(grep.stdout, "", "a token is in these files: \(grep.stdout)")
            let endpointLog = (try? String(contentsOfFile: endpoint.logPath, encoding: .utf8)) ?? ""
            XCTAssertFalse(endpointLog.contains(token), "a token is in the endpoint's log")
        }
    }

    /// An expired upload token is reported once as token-expired.
    func testExpiredTokenIsReported() throws {
        let daemon = try DaemonProcess(rig: nil, name: "expiry")
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents", ["events": ["token-expired"]])
        let soon = Int64(Date().timeIntervalSince1970) + 1
        _ = try client.ok("updateToken", ["token": "abc.def", "expiresAt": .integer(soon)])
        let expired = try XCTUnwrap(try client.event(.tokenExpired, within: 5))
        XCTAssertEqual(expired.tokenExpired, .init(message: "the upload token expired; send updateToken with a new one", expiredAt: soon))
        XCTAssertNil(try client.nextEvent(timeoutNs: 1_000_000_000), "token-expired was sent twice")
        XCTAssertEqual(daemon.terminate(), 0)
    }

    static func rigPID(_ rig: TestRig, named name: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: rig.stateDirectory + "/pids", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count >= 3, fields[2] == name, let pid = pid_t(fields[0]) { return pid }
        }
        return nil
    }
}

extension SessionTests {
    /// The spool never grows past spool_budget: the session stops with
    /// IO_ERROR when it is reached, and a new one is refused while it is full.
    func testSpoolBudgetStopsTheSessionAndRefusesANewOne() throws {
        let rig = try TestRig.shared()
        let daemon = try DaemonProcess(rig: rig, name: "budget", arguments: ["--set", "spool_budget=1MiB"])
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        _ = try client.ok("startRecording", ["sessionId": "budget-1", "channels": .array([.object(["channel_id": "display:1"])])])
        let failed = try XCTUnwrap(try client.event(.recordingFailed, within: 20), "the session was not stopped at the budget")
        XCTAssertEqual(failed.recordingFailed?.code, .ioError)
        XCTAssertTrue(failed.recordingFailed?.message.contains("spool_budget") ?? false, "\(failed)")
        let refused = client.failure("startRecording", ["sessionId": "budget-2"])
        XCTAssertEqual(refused?.code, .ioError)
        XCTAssertTrue(refused?.message.contains("spool_budget") ?? false, refused?.message ?? "")
        // Nothing was deleted: every chunk written is still there, with its metadata.
        let dir = daemon.sessionDirectory("budget-1") + "/display-1"
        let files = try FileManager.default.contentsOfDirectory(atPath: dir)
        XCTAssertGreaterThanOrEqual(files.filter { $0.hasSuffix(".ts") }.count, 2)
        XCTAssertEqual(files.filter { $0.hasSuffix(".ts") }.count, files.filter { $0.hasSuffix(".json") }.count)
        // And the spool stays within the budget plus one chunk (the session stops while the next
        // chunk still fits; the stop closes one more).
        let spool = daemon.stateDir + "/capture-agent/spool"
        var total = 0
        var largest = 0
        for name in try XCTUnwrap(FileManager.default.subpaths(atPath: spool)) {
            let attributes = try FileManager.default.attributesOfItem(atPath: spool + "/" + name)
            guard attributes[.type] as? FileAttributeType == .typeRegular, let size = attributes[.size] as? Int else { continue }
            total += size
            if name.hasSuffix(".ts") { largest = max(largest, size) }
        }
        let budget = 1 << 20
        XCTAssertLessThanOrEqual(total, budget + largest, "the spool holds \(total) bytes; budget \(budget), largest chunk \(largest)")
        XCTAssertEqual(daemon.terminate(), 0)
    }
}

extension SessionTests {
    /// A start naming a channel this machine does not have leaves the state
    /// as it was, so the next start works.
    func testStartWithAMissingChannelLeavesTheStateAsItWas() throws {
        let rig = try TestRig.shared()
        let daemon = try DaemonProcess(rig: rig, name: "nochannel")
        let client = try daemon.client()
        let refused = client.failure("startRecording", ["sessionId": "nochan-1", "channels": .array([.object(["channel_id": "display:9"])])])
        XCTAssertEqual(refused?.code, .invalidChannels)
        XCTAssertEqual(try client.ok(.getStatus, as: StatusResult.self).state, .idle)
        _ = try client.ok("startRecording", ["sessionId": "nochan-2", "channels": .array([.object(["channel_id": "display:1"])])])
        _ = try client.ok("stopRecording")
        XCTAssertEqual(daemon.terminate(), 0)
    }
}
