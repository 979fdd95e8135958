import CaptureCore
import CaptureUplink
import Dispatch
import Logging
import Synchronization
import WebSocketUplink

/// Between `record`'s capture and its uplink: chunks made before the uplink exists wait
/// (in a `ChunkRelay`), and the uplink's reports end the wait for the last acknowledgement.
final class UploadRelay: Sendable {
    private let chunks = ChunkRelay()
    private struct State {
        var complete = false
        var problem: String?
        /// The endpoint does not speak the uplink protocol (the upload gives up at once).
        var incompatible = false
        /// Per acknowledged chunk: wall-clock ack time minus the end of the chunk's capture.
        var overheadsNs: [Int64] = []
    }
    private let state = Mutex(State())
    private let done = DispatchSemaphore(value: 0)

    func offer(_ chunk: ChunkMetadata) { chunks.deliver(chunk) }

    func attach(_ uplink: SessionUplink) { chunks.attach { uplink.offer($0) } }

    var problem: String? { state.withLock { $0.problem } }
    var incompatible: Bool { state.withLock { $0.incompatible } }

    func reported(_ report: UplinkMachine.UplinkReport, logger: Logger) {
        switch report {
        case .complete:
            state.withLock { $0.complete = true }
            done.signal()
        case .tokenRejected(let code):
            state.withLock { $0.problem = "the endpoint refused the token (close code \(code))" }
            logger.error("the endpoint refused the upload token", metadata: ["code": "\(code)"])
            done.signal()
        case .refused(let code, let reason):
            state.withLock { $0.problem = reason }
            logger.error("the endpoint refused the upload", metadata: ["code": "\(code.map(String.init) ?? "none")", "reason": "\(reason)"])
            done.signal()
        case .disconnected(let code, let reason, _):
            state.withLock { $0.problem = reason }
            logger.notice("uplink disconnected; retrying", metadata: ["code": "\(code.map(String.init) ?? "none")", "reason": "\(reason)"])
        case .acknowledged(let chunk, _, _):
            let overhead = WallClock.now() - (chunk.captureTimeUnixNs + chunk.durationNs)
            state.withLock { $0.overheadsNs.append(overhead) }
        case .welcomeAhead(let channel, let next, let spooled):
            logger.warning("the endpoint's welcome claims chunks never spooled; nothing deleted for them",
                           metadata: ["channel": "\(channel)", "next_seq": "\(next)", "spooled_up_to": "\(spooled)"])
        case .tokenReplaced(let code):
            logger.notice("the endpoint refused the old upload token; going on with the new one", metadata: ["code": "\(code)"])
        case .incompatibleEndpoint(_, let reason):
            // A command waits for its upload: waiting out the timeout would only hide this.
            state.withLock {
                $0.problem = "the endpoint does not speak the capture uplink protocol: \(reason)"
                $0.incompatible = true
            }
            logger.error("the endpoint does not speak the capture uplink protocol (docs/uplink-protocol.md)",
                         metadata: ["reason": "\(reason)"])
            done.signal()
        case .connected, .chunkRefused:
            break
        }
    }

    /// Waits for the stream's end (true), or for a refusal or the timeout (false).
    func waitUntilComplete(timeoutNs: Int64) -> Bool {
        _ = done.wait(timeout: .now() + .nanoseconds(Int(timeoutNs)))
        return state.withLock { $0.complete }
    }

    /// What the upload did, in a line: chunks, bytes, connections, and the time from the end
    /// of each chunk's capture to its acknowledgement (p50/p95/max).
    func report(_ uplink: SessionUplink) -> String {
        let p = uplink.progress
        var line = "uploaded \(p.chunksUploaded) chunks (\(p.bytesUploaded) bytes) over \(p.connections) connection(s) to \(uplink.configuration.target)"
        let sorted = state.withLock { $0.overheadsNs }.sorted()
        if !sorted.isEmpty {
            func ms(_ q: Double) -> String {
                let v = sorted[min(sorted.count - 1, Int(q * Double(sorted.count - 1)))]
                return (Double(v) / 1e6).fixed(1)
            }
            line += "; ack after the chunk's end: p50 \(ms(0.5)) ms, p95 \(ms(0.95)) ms, max \(ms(1)) ms"
        }
        line += "; uplink thread CPU \((Double(p.threadCPUNs) / 1e9).fixed(2)) s"
        return line
    }
}
