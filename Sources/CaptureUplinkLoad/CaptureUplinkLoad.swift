import ArgumentParser
import EndpointClient
import HTTPTypes
import NIOCore
import CaptureCore
import CaptureEndpoint
import CaptureUplink
import CaptureUplinkReplay
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// `capture-uplink-load`: N simulated agents, each with its own session and
/// client token, replaying a recorded spool over the uplink at real-time pace
/// (so 3 channels send 1 chunk a second each). Prints one JSON summary: ack
/// latency percentiles, chunks, errors. scripts/benchmark-endpoint drives it.
@main
struct CaptureUplinkLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture-uplink-load",
        abstract: "Replays a recorded spool as N concurrent agents against a capture endpoint.")

    @Option(help: "The endpoint's base URL.")
    var endpoint: String = "http://127.0.0.1:8470"

    @Option(name: .customLong("api-key-file"), help: "A file whose first line is the API key.")
    var apiKeyFile: String

    @Option(help: "The recorded session directory to replay.")
    var spool: String

    @Option(help: "Concurrent agents.")
    var agents: Int = 10

    @Option(help: "Replay speed: 1 is real time, 0 as fast as the window allows.")
    var speed: Double = 1

    @Option(name: .customLong("start-spread"), help: "Agents start spread over this many seconds.")
    var startSpread: Double = 1

    struct Envelope<T: Decodable>: Decodable { var data: T }

    func run() async throws {
        let logger = {
            var logger = Logger(label: "capture-uplink-load")
            logger.logLevel = .warning
            return logger
        }()
        let key = try String(contentsOfFile: apiKeyFile, encoding: .utf8).split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        let recorded = try RecordedSpool(directory: spool)
        let base = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        guard let url = URLComponents(string: base), url.scheme == "http", let host = url.host else {
            throw ValidationError("--endpoint: an http:// URL (the load generator speaks plain HTTP and ws://)")
        }
        let client = EndpointHTTPClient(host: host, port: url.port ?? 80, timeout: .seconds(30))
        let webSocket = "ws://" + base.dropFirst(7) + UplinkProtocol.path

        func post<T: Decodable>(_ path: String, _ body: String, as: T.Type) async throws -> T {
            let response = try await client.execute(
                uri: url.path + path, method: .post,
                headers: [HTTPField.Name("x-access-token")!: key, .contentType: "application/json"],
                body: ByteBuffer(string: body))
            let bytes = response.body
            guard response.status.code == 200 else {
                throw CaptureError(.internalError, "\(path): HTTP \(response.status.code): \(String(buffer: bytes))")
            }
            return try JSONDecoder().decode(Envelope<T>.self, from: Data(bytes.readableBytesView)).data
        }

        var sessions: [(String, String)] = []
        for index in 0..<agents {
            let session = try await post("/collection/default/capture/session", #"{"end_user_id": "load-\#(index)"}"#,
                                         as: CaptureSessionResource.self)
            let token = try await post("/capture/session/token", #"{"expires_in": 3600}"#, as: ClientTokenResource.self)
            sessions.append((session.sessionId, token.token))
        }

        let started = ContinuousClock.now
        let reports = await withTaskGroup(of: ReplayReport.self) { group in
            for (index, (session, token)) in sessions.enumerated() {
                var options = ReplayOptions(url: webSocket, token: token, sessionId: session)
                options.speed = speed
                options.agent = "capture-uplink-load/\(index)"
                let delay = agents > 1 ? startSpread * Double(index) / Double(agents) : 0
                group.addTask {
                    try? await Task.sleep(for: .seconds(delay))
                    return await UplinkReplayer.run(recorded, options: options, logger: logger)
                }
            }
            var all: [ReplayReport] = []
            for await report in group { all.append(report) }
            return all
        }
        let elapsed = ContinuousClock.now - started

        let latencies = reports.flatMap(\.ackLatenciesNs).sorted()
        func percentile(_ p: Double) -> Double {
            guard !latencies.isEmpty else { return 0 }
            return Double(latencies[min(latencies.count - 1, Int((Double(latencies.count) * p).rounded(.up)) - 1)]) / 1e6
        }
        let summary: [String: JSONValue] = [
            "agents": .integer(Int64(agents)),
            "chunks_per_agent": .integer(Int64(recorded.chunkCount)),
            "acked": .integer(Int64(reports.reduce(0) { $0 + $1.acked })),
            "duplicates": .integer(Int64(reports.reduce(0) { $0 + $1.duplicates })),
            "ended": .integer(Int64(reports.filter(\.ended).count)),
            "reconnects": .integer(Int64(reports.reduce(0) { $0 + $1.reconnects })),
            "busy_refusals": .integer(Int64(reports.reduce(0) { $0 + $1.busyRefusals })),
            "agents_refused_busy": .integer(Int64(reports.filter { $0.busyRefusals > 0 }.count)),
            "errors": .integer(Int64(reports.reduce(0) { $0 + $1.errors.count + ($1.failure == nil ? 0 : 1) + ($1.ended ? 0 : 1) })),
            "error_samples": .array(reports.flatMap { $0.errors + ($0.failure.map { [$0] } ?? []) }.prefix(5).map { .string($0) }),
            "ack_ms_p50": .number(percentile(0.50)),
            "ack_ms_p99": .number(percentile(0.99)),
            "ack_ms_max": .number(latencies.last.map { Double($0) / 1e6 } ?? 0),
            "seconds": .number(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18),
        ]
        print(JSONValue.object(summary).description)
    }
}
