import CaptureCore
import CaptureSystem
import Foundation
import Logging
import MediaExport
import NIOPosix

/// Runs exports in the background: the session's chunks become
/// `DATA/exports/<session>/<video_id>.mp4` (MediaExport, on NIO's blocking
/// pool), then the session is `exported` and announced. An export that a
/// crash interrupted is started again when the endpoint comes back.
struct ExportService: Sendable {
    let store: any EndpointStore
    let dataDirectory: String
    let announcer: SessionAnnouncer
    let threadPool: NIOThreadPool
    let mixSegmentSeconds: Double
    /// EndpointConfiguration.injectedExportHoldMarker (tests only).
    var injectedHoldMarker: String? = nil
    let logger: Logger

    static func relativePath(sessionId: String, videoId: String) -> String { "exports/\(sessionId)/\(videoId).mp4" }

    /// How far past the declared end a packet may lie (an AAC frame past a chunk's duration).
    static let timelineToleranceSeconds = 2.0

    /// Starts the export of a session that `beginExport` just marked exporting.
    func start(_ session: SessionRecord, videoChannelId: String, notify connectionId: String?) {
        Task { await run(session, videoChannelId: videoChannelId, notify: connectionId) }
    }

    /// Restarts exports a crash interrupted.
    func resumeInterrupted() async {
        do {
            for interrupted in try await store.sessionsExporting() {
                guard let video = interrupted.primaryVideoChannelId else { continue }
                guard let session = try await store.restartInterruptedExport(sessionId: interrupted.id,
                                                                             now: EndpointClock.nowMilliseconds()) else {
                    logger.error("an export interrupted on every attempt is given up", metadata: [
                        "session": "\(interrupted.id)", "attempts": "\(interrupted.exportAttempts)",
                    ])
                    continue
                }
                logger.notice("resuming an interrupted export", metadata: [
                    "session": "\(session.id)", "attempt": "\(session.exportAttempts)",
                ])
                start(session, videoChannelId: video, notify: nil)
            }
        } catch {
            logger.error("cannot look for interrupted exports", metadata: ["error": "\(error)"])
        }
    }

    func run(_ session: SessionRecord, videoChannelId: String, notify connectionId: String?) async {
        let started = MonotonicClock.now()
        let videoId = Secrets.newIdentifier(prefix: "vid-")
        let relative = Self.relativePath(sessionId: session.id, videoId: videoId)
        let path = dataDirectory + "/" + relative
        do {
            let channels = try await store.channels(sessionId: session.id)
            // The timeline the chunk headers declare: the media's own timestamps are the
            // client's word too, and the export is not sized by them.
            var declaredEndNs: Int64 = 0
            func files(_ channel: String) async throws -> [String] {
                let chunks = try await store.chunks(sessionId: session.id, channelId: channel)
                for chunk in chunks {
                    let (end, overflow) = chunk.startPtsNs.addingReportingOverflow(chunk.durationNs)
                    declaredEndNs = max(declaredEndNs, overflow ? .max : end)
                }
                return chunks.map { dataDirectory + "/" + $0.file }
            }
            let video = ExportInput.Track(name: videoChannelId, files: try await files(videoChannelId))
            let audio = try await channels.filter { $0.mediaType == .audio }.asyncMap { channel in
                ExportInput.Track(name: channel.channelId, files: try await files(channel.channelId))
            }
            let input = ExportInput(video: video, audio: audio, mixSegmentSeconds: mixSegmentSeconds,
                                    timelineLimitSeconds: Double(declaredEndNs) / 1e9 + Self.timelineToleranceSeconds)
            let summary = try await threadPool.runIfActive { () throws -> ExportSummary in
                let directory = String(path[..<path.lastIndex(of: "/")!])
                try makeDirectories(directory)
                // What an attempt a crash interrupted left half-written: only one export of
                // a session runs at a time (beginExport), so every temporary here is dead.
                Self.removeTemporaries(in: directory)
                let temporary = directory + "/.\(videoId).mp4.tmp"
                let summary = try MP4Exporter.export(input, to: temporary)
                if let marker = injectedHoldMarker {
                    FileManager.default.createFile(atPath: marker, contents: Data(temporary.utf8))
                    sleep(60)
                }
                try Self.publish(temporary, as: path, in: directory)
                return summary
            }
            let transitions = try await store.finishExport(sessionId: session.id, videoId: videoId, error: nil,
                                                           now: EndpointClock.nowMilliseconds())
            if summary.packetsOutsideTimeline > 0 {
                logger.warning("export left out packets outside the declared timeline", metadata: [
                    "session": "\(session.id)", "packets": "\(summary.packetsOutsideTimeline)",
                    "declared_seconds": "\(Double(declaredEndNs) / 1e9)",
                ])
            }
            logger.info("export done", metadata: [
                "session": "\(session.id)", "video_id": "\(videoId)", "seconds": "\(summary.durationSeconds)",
                "bytes": "\(summary.bytes)", "ms": "\((MonotonicClock.now() - started) / 1_000_000)",
            ])
            await announcer.announce(transitions, alsoTo: connectionId)
        } catch {
            logger.error("export failed", metadata: ["session": "\(session.id)", "error": "\(error)"])
            _ = try? await store.finishExport(sessionId: session.id, videoId: nil, error: "\(error)".prefix(500).description,
                                              now: EndpointClock.nowMilliseconds())
        }
    }

    /// Removes the `.<video id>.mp4.tmp` files of unfinished attempts from a session's export directory.
    private static func removeTemporaries(in directory: String) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasPrefix(".") && name.hasSuffix(".mp4.tmp") {
            unlink(directory + "/" + name)
        }
    }

    /// fsync, rename into place, fsync the directory.
    private static func publish(_ temporary: String, as path: String, in directory: String) throws {
        let fd = open(temporary, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CaptureError(.ioError, "cannot reopen \(temporary)") }
        let synced = fsync(fd) == 0
        close(fd)
        guard synced, rename(temporary, path) == 0 else { throw CaptureError(.ioError, "cannot publish \(path)") }
        let dir = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 {
            fsync(dir)
            close(dir)
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        out.reserveCapacity(count)
        for element in self { out.append(try await transform(element)) }
        return out
    }
}

#if canImport(Glibc)
import Glibc
#endif
