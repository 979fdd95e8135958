import ArgumentParser
import CaptureCore
import CaptureSystem
import CaptureSpool
import CaptureUplink
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import WebSocketUplink

/// Uploads a recording made earlier (`record --out DIR`, or a spooled session) to a
/// capture endpoint, as the daemon would have: each chunk deleted from DIR once acknowledged.
struct UploadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upload",
        abstract: "Upload a recorded session directory to a capture endpoint.",
        discussion: """
            Sends every complete chunk in DIR (DIR/<channel>/chunk-NNNNNN.json + .ts) over the uplink
            protocol, resuming from what the endpoint already has, deletes each from DIR once it is
            acknowledged, and ends the endpoint's stream (as interrupted when a channel has no final
            chunk). Exits 0 once the endpoint ended the stream.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The session directory.")
    var directory: String

    @Flag(name: .customLong("allow-insecure-uplink"), help: "Allow an endpoint over plain http/ws that is not on this machine (the token in clear).")
    var allowInsecureUplink = false

    @Option(name: .long, help: "The capture endpoint (http://, https://, ws:// or wss://).")
    var endpoint: String

    @Option(name: .long, help: "Read the upload token from this file (`-`: stdin); it must not be readable by others.")
    var tokenFile: String

    @Option(name: .long, help: "The endpoint's session id (default: the one in the chunks' metadata).")
    var sessionId: String?

    @Option(name: .long, help: "Give up this long after the last progress.")
    var timeout: String = "60s"

    func validate() throws {
        do throws(CaptureError) {
            _ = try parseDuration(timeout)
        } catch {
            throw ValidationError("--timeout: \(error.message)")
        }
    }

    func run() throws {
        let logger: Logger
        let uplink: SessionUplink
        let relay = UploadRelay()
        let total: Int
        do throws(CaptureError) {
            logger = try wrap { try global.makeLogger() }
            let (channels, chunks) = try Self.scan(directory)
            guard let session = sessionId ?? chunks.first?.sessionId else {
                throw CaptureError(.invalidRequest, "\(directory) holds no complete chunk")
            }
            let token = try TokenFile.read(tokenFile).trimmingWhitespace()
            var config = SessionUplink.Configuration(target: try UplinkTarget(endpoint: endpoint, allowInsecure: allowInsecureUplink), sessionId: session,
                                                     channels: channels, sessionDirectory: directory)
            config.agent = "capture-agent/\(CaptureAgentVersion.string) upload"
            uplink = try SessionUplink(config, token: token) { report in relay.reported(report, logger: logger) }
            relay.attach(uplink)
            for chunk in chunks { uplink.offer(chunk) }
            uplink.finishCapture()
            total = chunks.count
        } catch {
            fail(with: error, json: global.json)
        }
        let started = MonotonicClock.now()
        uplink.start()
        let timeoutNs = (try? parseDuration(timeout)) ?? 60_000_000_000   // checked in `validate`
        // Waits while the upload makes progress; gives up after `timeout` without any.
        var lastCount = -1
        var lastProgress = MonotonicClock.now()
        while !relay.waitUntilComplete(timeoutNs: 500_000_000) {
            if relay.problem != nil, relay.incompatible || uplink.progress.phase == .needsToken
                || uplink.progress.phase == .stopped { break }
            let n = uplink.progress.chunksUploaded
            if n != lastCount { lastCount = n; lastProgress = MonotonicClock.now() }
            if MonotonicClock.now() - lastProgress > timeoutNs { break }
        }
        let elapsed = Double(MonotonicClock.now() - started) / 1e9
        let complete = relay.waitUntilComplete(timeoutNs: 0)
        uplink.stop()
        let p = uplink.progress
        if global.json {
            writeJSON(p)
        } else {
            writeLine(relay.report(uplink) + "; \(elapsed.fixed(2)) s, \((Double(p.bytesUploaded) / 1e6 / max(elapsed, 1e-9)).fixed(1)) MB/s")
        }
        guard complete else {
            fail(with: CaptureError(relay.incompatible ? .endpointIncompatible : .timeout, "the upload did not finish: \(p.chunksUploaded) of \(total) chunks acknowledged (\(relay.problem ?? "no progress"))"), json: false)
        }
    }

    /// The channels (named by the first chunk metadata in each channel directory) and every
    /// complete chunk, read as the uplink reads a spool.
    static func scan(_ directory: String) throws(CaptureError) -> ([UplinkChannel], [ChunkMetadata]) {
        let reader = SpoolReader(sessionDirectory: directory)
        let channels = try reader.uplinkChannels()
        return (channels, channels.flatMap { reader.chunks(of: $0.channelId) })
    }
}
