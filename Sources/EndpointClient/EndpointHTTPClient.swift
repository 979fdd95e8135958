public import HTTPTypes
public import NIOCore
import NIOHTTP1
import NIOPosix

/// A plain-HTTP/1.1 client for the reference endpoint, for its tests and tools (the load
/// generator): one request per connection (`connection: close`), the whole answer read
/// into memory, one deadline for all of it. No TLS: the endpoint serves plain HTTP behind
/// whatever terminates TLS in front of it, and these clients run beside it.
public struct EndpointHTTPClient: Sendable {
    public var host: String
    public var port: Int
    /// The deadline for one exchange: connect, request, status, headers and body.
    public var timeout: Duration

    public init(host: String = "127.0.0.1", port: Int, timeout: Duration = .seconds(60)) {
        self.host = host
        self.port = port
        self.timeout = timeout
    }

    public struct Response: Sendable {
        public var status: HTTPResponse.Status
        public var headers: HTTPFields
        public var body: ByteBuffer
    }

    /// The exchange ran out of time, or the connection ended before the answer did.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// `uri` is the path and query (`/capture/session?x=1`).
    public func execute(uri: String, method: HTTPRequest.Method, headers: HTTPFields = [:], body: ByteBuffer? = nil)
        async throws -> Response {
        try await withThrowingTaskGroup(of: Response?.self) { group in
            group.addTask { try await exchange(uri: uri, method: method, headers: headers, body: body) }
            group.addTask { [timeout] in
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let response = first else {
                throw Failure(description: "\(method) \(uri): no complete answer within \(timeout)")
            }
            return response
        }
    }

    private func exchange(uri: String, method: HTTPRequest.Method, headers: HTTPFields, body: ByteBuffer?)
        async throws -> Response {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(timeout.components.seconds + 1))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                        wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method.rawValue), uri: uri)
            head.headers.add(name: "host", value: "\(host):\(port)")
            for field in headers { head.headers.add(name: field.name.rawName, value: field.value) }
            if let body, head.headers["content-length"].isEmpty {
                head.headers.add(name: "content-length", value: String(body.readableBytes))
            }
            head.headers.replaceOrAdd(name: "connection", value: "close")
            // A server may answer before it has read the whole request and close (the endpoint
            // answers 413 from the head of a body over its limit): a write that fails then is
            // not the outcome, the answer is, if one came.
            var writeFailure: (any Error)?
            do {
                try await outbound.write(.head(head))
                if let body { try await outbound.write(.body(.byteBuffer(body))) }
                try await outbound.write(.end(nil))
            } catch {
                writeFailure = error
            }

            var response: (status: HTTPResponse.Status, headers: HTTPFields)?
            var collected = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let answer):
                    // An interim answer (100 Continue) is followed by the real one.
                    guard answer.status.code >= 200 else { continue }
                    var fields = HTTPFields()
                    for (name, value) in answer.headers {
                        if let fieldName = HTTPField.Name(name) { fields.append(HTTPField(name: fieldName, value: value)) }
                    }
                    response = (HTTPResponse.Status(code: Int(answer.status.code), reasonPhrase: answer.status.reasonPhrase),
                                fields)
                case .body(var bytes):
                    collected.writeBuffer(&bytes)
                case .end:
                    guard let response else { throw Failure(description: "\(method) \(uri): an answer without a head") }
                    return Response(status: response.status, headers: response.headers, body: collected)
                }
            }
            if let writeFailure { throw writeFailure }
            throw Failure(description: "\(method) \(uri): the connection ended before the answer did")
        }
    }
}
