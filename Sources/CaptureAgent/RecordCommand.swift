import ArgumentParser
import CaptureCore
import CaptureConcurrency
import CaptureSystem
import CapturePipeline
import CaptureSpool
import CaptureUplink
import Dispatch
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import WebSocketUplink
import MediaEncoding

struct RecordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record",
        abstract: "Record channels into chunks in a directory, without any server.",
        discussion: """
            Default channels: display:1, mic:default and system_audio:default, where present.
            Default output: the spool, $XDG_STATE_HOME/capture-agent/spool/<session> (~/.local/state/...).
            Stops after --duration, or on SIGINT/SIGTERM, after closing the current chunk of every channel.
            Layout: DIR/session.json and DIR/<channel>/chunk-NNNNNN.ts + chunk-NNNNNN.json.
            With --endpoint and --token-file, each chunk is also uploaded to a capture endpoint as it is
            made (the session id must be the endpoint's), deleted from DIR once the endpoint acknowledged
            it, and the command waits up to --upload-timeout after the stop for the last acknowledgement.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Output directory (created if needed). Default: the spool, $XDG_STATE_HOME/capture-agent/spool/<session>.")
    var out: String?

    @Option(name: .long, help: "Stop after this long (e.g. 10s, 2m). Default: until SIGINT/SIGTERM.")
    var duration: String?

    @Option(name: .customLong("channel"), help: "Channel id to record (repeatable): display:N, mic:default, mic:NAME, system_audio:default, system_audio:SINK.")
    var channels: [String] = []

    @Option(name: .long, help: "Video frames per second, 1-60.")
    var fps: Int = 30

    @Option(name: .long, help: "Chunk duration, 0.5s-10s.")
    var chunk: String = "1s"

    @Option(name: .long, help: "x264 preset.")
    var preset: String = "ultrafast"

    @Option(name: .long, help: "Quality as x264's constant quantizer (0-51, lower is better; the default, 23). Unchanged parts of the screen cost almost nothing with it.")
    var qp: Int?

    @Option(name: .long, help: "Quality as x264's constant rate factor (0-51) instead of --qp. Costs more CPU on a mostly still desktop.")
    var crf: Int?

    @Option(name: .long, help: "Video bitrate instead of CRF, e.g. 4M or 2500k.")
    var videoBitrate: String?

    @Option(name: .long, help: "Downscale video so it is at most this many pixels high.")
    var maxHeight: Int?

    @Option(name: .long, help: "AAC bitrate, e.g. 128k.")
    var audioBitrate: String = "128k"

    @Flag(name: .long, help: "Do not draw the mouse pointer.")
    var noCursor = false

    @Option(name: .long, help: "Session id written into the metadata (default: rec-<time>); with --endpoint, the endpoint's session id.")
    var sessionId: String?

    @Option(name: .long, help: "Upload the chunks to this capture endpoint (http://, https://, ws:// or wss://) as they are made.")
    var endpoint: String?

    @Flag(name: .customLong("allow-insecure-uplink"), help: "Allow --endpoint over plain http/ws to a host that is not this machine (the token in clear).")
    var allowInsecureUplink = false

    @Option(name: .long, help: "Read the upload token from this file (`-`: stdin); it must not be readable by others.")
    var tokenFile: String?

    @Option(name: .long, help: "With --endpoint: how long to wait after the stop for the last acknowledgement.")
    var uploadTimeout: String = "60s"

    @Option(name: .long, help: "Wayland: how long the start waits for an answer in the desktop's screen-sharing dialog.")
    var screenConsentTimeout: String = "60s"

    func run() throws {
        // First, while this is the only thread: SIGINT/SIGTERM wait for their sources
        // (see SignalBlocking) instead of being lost or killing us before those exist.
        SignalBlocking.block([SIGINT, SIGTERM])
        SignalBlocking.testOnlySetupDelay()
        ProcessMemory.configure()
        let logger: Logger
        let options: RecordingOptions
        let stopAfter: Int64?
        do throws(CaptureError) {
            logger = try wrap { try global.makeLogger() }
            options = try makeOptions()
            stopAfter = try duration.map { (text) throws(CaptureError) in try parseDuration(text) }
        } catch {
            fail(with: error, json: global.json)
        }

        let stopRequested = Atomic<Int32>(0)
        let signalSources = [SIGINT, SIGTERM].map { sig -> any DispatchSourceSignal in
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                // A second signal while closing chunks means "abort now".
                if stopRequested.exchange(sig, ordering: .relaxed) != 0 { _exit(128 + sig) }
            }
            source.activate()
            return source
        }
        defer { signalSources.forEach { $0.cancel() } }

        let relay = UploadRelay()
        var onChunk: (@Sendable (ChunkMetadata) -> Void)?
        if endpoint != nil { onChunk = { chunk in relay.offer(chunk) } }
        let session = RecordingSession(options: options, logger: logger, onChunk: onChunk)
        var uplink: SessionUplink?
        do throws(CaptureError) {
            try session.start()
            if let endpoint { uplink = try startUpload(endpoint: endpoint, session: session, options: options, relay: relay, logger: logger) }
        } catch {
            fail(with: error, json: global.json)
        }
        // Capture ends exactly at t0 + duration; the stop then waits for the audio captured up
        // to that instant (it comes with the source's latency).
        let started = session.startTime ?? MonotonicClock.now()
        var failure: CaptureError?
        while true {
            if stopRequested.load(ordering: .relaxed) != 0 {
                logger.info("signal received; closing the current chunks")
                break
            }
            var wakeAt = MonotonicClock.now() + 100_000_000
            if let stopAfter {
                let end = started + stopAfter
                if MonotonicClock.now() >= end { break }
                wakeAt = min(wakeAt, end)
            }
            let nanos = max(0, wakeAt - MonotonicClock.now())
            if let f = session.waitForFailure(timeout: .now() + .nanoseconds(Int(nanos))) {
                failure = f
                break
            }
        }
        let summary = session.stop()
        if let uplink {
            uplink.finishCapture()
            // Checked in `validate`.
            let timeout = (try? parseDuration(uploadTimeout)) ?? 60_000_000_000
            if !relay.waitUntilComplete(timeoutNs: timeout) {
                let p = uplink.progress
                failure = failure ?? CaptureError(relay.incompatible ? .endpointIncompatible : .timeout,
                    "the endpoint had not acknowledged every chunk \(timeout / 1_000_000_000) s after the stop (\(p.chunksPending) of \(p.chunksPending + p.chunksUploaded) chunks still in \(options.outputDirectory)): \(relay.problem ?? "no answer")")
            }
            uplink.stop()
            if !global.json { writeLine(relay.report(uplink)) }
        }
        if global.json {
            writeJSON(summary)
        } else {
            writeLine("recorded \((Double(summary.durationNs) / 1e9).fixed(1)) s into \(summary.outputDirectory)")
            for c in summary.channels {
                var line = "  \(c.channel): \(c.chunks) chunks, \(c.bytes) bytes, \(c.encoded) frames encoded"
                if c.type == .video {
                    line += " (grabbed \(c.captured), repeated \(c.repeated), left out \(c.leftOut), dropped \(c.dropped)"
                    if let off = c.offlineFrames, off > 0 { line += ", black while the monitor was off \(off)" }
                    if let changes = c.layoutChanges, changes > 0 { line += ", monitor changes \(changes)" }
                    if let sent = c.sourceFrames {
                        line += "; the compositor sent \(sent), superseded \(c.sourceFramesSuperseded ?? 0)"
                    }
                    line += ")"
                } else if c.silenceFilledMs > 0 || c.discontinuities > 0 {
                    line += " (silence filled \(c.silenceFilledMs) ms, interruptions \(c.discontinuities))"
                }
                writeLine(line)
            }
        }
        if let failure = failure ?? session.failure {
            fail(with: failure, json: false)
        }
    }

    private func startUpload(endpoint: String, session: RecordingSession, options: RecordingOptions, relay: UploadRelay,
                             logger: Logger) throws(CaptureError) -> SessionUplink {
        let target = try UplinkTarget(endpoint: endpoint, allowInsecure: allowInsecureUplink)
        let channels = UplinkChannel.channels(of: session.channels, chunkDurationNs: options.chunkDurationNs,
                                              frameRate: options.video.fps)
        var config = SessionUplink.Configuration(target: target, sessionId: options.sessionId, channels: channels,
                                                 sessionDirectory: options.outputDirectory)
        config.agent = "capture-agent/\(CaptureAgentVersion.string) record"
        let uplink = try SessionUplink(config, token: token) { report in relay.reported(report, logger: logger) }
        relay.attach(uplink)
        uplink.start()
        return uplink
    }

    /// The token of --token-file, trimmed.
    private var token: String? {
        get throws(CaptureError) {
            guard let tokenFile else { return nil }
            let token = try TokenFile.read(tokenFile).trimmingWhitespace()
            guard !token.isEmpty else { throw CaptureError(.invalidToken, "the token file \(tokenFile) is empty") }
            return token
        }
    }

    func validate() throws {
        if endpoint != nil {
            guard tokenFile != nil else { throw ValidationError("--endpoint needs --token-file (a token never goes on the command line)") }
            guard sessionId != nil else { throw ValidationError("--endpoint needs --session-id: the endpoint's session") }
        } else if tokenFile != nil {
            throw ValidationError("--token-file goes with --endpoint")
        }
        do throws(CaptureError) {
            _ = try parseDuration(uploadTimeout)
        } catch {
            throw ValidationError("--upload-timeout: \(error.message)")
        }
    }

    private func makeOptions() throws(CaptureError) -> RecordingOptions {
        let ids = try channels.map { (text) throws(CaptureError) in try ChannelID(parsing: text) }
        let id = sessionId ?? "rec-\(WallClock.iso8601(nanoseconds: WallClock.now()).replacing(":", with: "-"))"
        var options = RecordingOptions(sessionId: id, outputDirectory: out ?? SpoolLocation.sessionDirectory(id), channels: ids)
        options.displayName = global.display
        options.displayBackend = global.displayBackend
        options.screenConsentTimeout = .nanoseconds(try parseDuration(screenConsentTimeout))
        options.chunkDurationNs = try parseDuration(chunk)
        options.maxDurationNs = try duration.map { (text) throws(CaptureError) in try parseDuration(text) }
        options.video.fps = fps
        options.video.preset = preset
        if qp != nil && crf != nil {
            throw CaptureError(.invalidRequest, "give --qp or --crf, not both")
        }
        options.video.crf = crf ?? qp ?? 23
        options.video.rateControl = crf != nil ? .constantRateFactor : .constantQuantizer
        if let videoBitrate {
            if qp != nil || crf != nil { throw CaptureError(.invalidRequest, "--video-bitrate replaces --qp/--crf; give one") }
            options.video.bitrate = try parseBitrate(videoBitrate)
            options.video.crf = nil
        }
        options.video.maxHeight = maxHeight
        options.audioBitrate = try parseBitrate(audioBitrate)
        options.drawCursor = !noCursor
        try options.validate()
        return options
    }
}

/// Runs a throwing closure and turns any error into a CaptureError.
func wrap<T>(_ body: () throws -> T) throws(CaptureError) -> T {
    do {
        return try body()
    } catch let error as CaptureError {
        throw error
    } catch {
        throw CaptureError(.invalidRequest, "\(error)")
    }
}
