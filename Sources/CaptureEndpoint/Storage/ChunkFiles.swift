import CaptureCore
import CaptureSystem
import CaptureUplink
import Foundation
import NIOCore
import NIOPosix

/// The chunk bytes, as files under the data directory:
/// `sessions/<session>/c<position>/chunk-NNNNNN-<sha256>.ts`. Every path is built
/// from the endpoint's own ids (session ids it generated, channel positions) and the
/// verified hash, never from text a client chose. Named by content, a file is never
/// replaced by other bytes: two connections racing for one seq (a superseded one and its
/// successor) write two files, the index keeps one, and the loser's file is removed. Blocking work (hashing, writing, fsync) runs on
/// NIO's blocking thread pool, off the event loops and the cooperative pool.
struct ChunkFiles: Sendable {
    let dataDirectory: String
    let threadPool: NIOThreadPool

    static func relativePath(sessionId: String, channel: ChannelRecord, seq: Int, sha256: String) -> String {
        let name = ChunkMetadata.mediaFileName(seq: seq)
        return "sessions/\(sessionId)/\(channel.directoryName)/\(name.dropLast(3))-\(sha256).ts"
    }

    /// Removes a file the index did not take.
    func remove(_ relative: String) async {
        let path = absolute(relative)
        try? await threadPool.runIfActive { _ = unlink(path) }
    }

    func absolute(_ relative: String) -> String { dataDirectory + "/" + relative }

    enum WriteResult: Sendable, Equatable {
        case written
        case hashMismatch(actual: String)
        /// Not MPEG-TS, or a PTS outside the header's window (`ptsNs` then says where).
        case mediaMismatch(MPEGTSTimestamps.Failure)
    }

    /// Where the header says the chunk lies: its media must agree (`MPEGTSTimestamps`).
    struct Window: Sendable {
        var startNs: Int64
        var durationNs: Int64
    }

    /// Hashes `count` bytes of `buffer` from `offset`; if they are `expectedSHA256` and their
    /// media lies in `window`, writes them to `relative` atomically and durably (file and
    /// directory fsync'ed).
    func verifyAndWrite(_ buffer: ByteBuffer, offset: Int, count: Int, expectedSHA256: String, window: Window,
                        to relative: String, writer: UInt64) async throws -> WriteResult {
        let path = absolute(relative)
        return try await threadPool.runIfActive { () throws(CaptureError) -> WriteResult in
            try buffer.withUnsafeReadableBytes { raw throws(CaptureError) -> WriteResult in
                let payload = UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + count)])
                let actual = ChunkDigest.sha256Hex(payload)
                guard actual == expectedSHA256 else { return .hashMismatch(actual: actual) }
                if case .failure(let failure) = MPEGTSTimestamps.check(
                    payload, startNs: window.startNs, durationNs: window.durationNs,
                    toleranceNs: UplinkProtocol.mediaToleranceNs) {
                    return .mediaMismatch(failure)
                }
                let slash = path.lastIndex(of: "/")!
                let directory = try AtomicDirectory(creating: String(path[..<slash]))
                try directory.publish(String(path[path.index(after: slash)...]), bytes: payload, writer: "w\(writer)")
                try directory.sync()
                return .written
            }
        }
    }

    /// Reads a stored chunk (HLS segments, export).
    func read(_ relative: String) async throws -> ByteBuffer {
        let path = absolute(relative)
        return try await threadPool.runIfActive { () throws -> ByteBuffer in
            guard let data = FileManager.default.contents(atPath: path) else {
                throw CaptureError(.ioError, "chunk file \(relative) is missing")
            }
            return ByteBuffer(bytes: data)
        }
    }
}
