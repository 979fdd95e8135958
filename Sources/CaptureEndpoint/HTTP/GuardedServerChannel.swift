import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// Hummingbird's HTTP/1 + WebSocket-upgrade child channel, plus three guards:
/// a connection over its address's quota of sockets (`EndpointLimits.socketsPerAddress`)
/// is closed before anything is read, a request the HTTP parser rejects (a NUL byte in a
/// header, garbage instead of a request line) gets `400 Bad Request` and a close, and a
/// request whose Content-Length is over the body limit gets `413` from its head, and a close.
///
/// Without it such a connection hangs: the upgrade pipeline turns NIO's own
/// parse-error handling off (Hummingbird handles errors later), but a parse
/// error before the first request head never reaches that later stage, so the
/// upgrade negotiation waits forever and the client never hears back.
struct GuardedServerChannel: ServerChildChannel {
    typealias Value = HTTP1WebSocketUpgradeChannel.Value
    let inner: HTTP1WebSocketUpgradeChannel
    let maxBodyBytes: Int
    let sockets: SocketsPerAddress

    struct TooManySockets: Error {}

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let key = UplinkHub.addressKey(channel.remoteAddress)
        guard sockets.admit(key) else {
            logger.notice("connection refused: too many from its address", metadata: ["address": "\(key)"])
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(TooManySockets())
        }
        channel.closeFuture.whenComplete { [sockets] _ in sockets.release(key) }
        return inner.setup(channel: channel, logger: logger).flatMapThrowing { [maxBodyBytes] value in
            let operations = channel.pipeline.syncOperations
            let decoder = try operations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            let parseErrors = HTTPParseErrorResponder()
            try operations.addHandler(parseErrors, position: .after(decoder))
            try operations.addHandler(DeclaredBodySizeGuard(maxBodyBytes: maxBodyBytes), position: .after(parseErrors))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }

    static func builder(webSocketRouter: Router<EndpointRequestContext>,
                        configuration: HTTP1WebSocketUpgradeChannel.Configuration, maxBodyBytes: Int,
                        sockets: SocketsPerAddress) -> HTTPServerBuilder {
        let webSocketResponder = webSocketRouter.buildResponder()
        return HTTPServerBuilder { responder in
            GuardedServerChannel(inner: HTTP1WebSocketUpgradeChannel(
                responder: responder, webSocketResponder: webSocketResponder, configuration: configuration),
                maxBodyBytes: maxBodyBytes, sockets: sockets)
        }
    }
}

/// Closes a connection a guard has answered. First it tells the handlers after it that no
/// more input comes: the upgrade handler, still waiting for the request head the guard kept
/// from it, then gives up as for a client that closed (`ChannelError.inputClosed`, which
/// Hummingbird logs at trace). A plain close would fail its wait with "inappropriate
/// operation", which Hummingbird logs at error level for what was the client's mistake.
private func closeAnswered(_ context: ChannelHandlerContext) {
    context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
    context.close(promise: nil)
}

/// Open TCP connections per remote address (IPv6 per /64), of every kind (REST, uplink,
/// event sockets), counted from the accept: one address cannot hold the endpoint's
/// sockets, whatever it does or does not send on them.
final class SocketsPerAddress: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Counts a new connection from `key`, unless the address has `limit` already.
    func admit(_ key: String) -> Bool {
        counts.withLock { counts in
            guard counts[key, default: 0] < limit else { return false }
            counts[key, default: 0] += 1
            return true
        }
    }

    func release(_ key: String) {
        counts.withLock { $0.decrementCount(key) }
    }

    func count(_ key: String) -> Int { counts.withLock { $0[key, default: 0] } }
}

/// Answers a request that declares a body over the limit (Content-Length) with 413 from its
/// head and closes, without reading the body. Otherwise the route refuses it after reading
/// up to the limit and the rest is never read: the client, still sending, waits for an
/// answer that only comes once its body is through, and holds the connection meanwhile.
/// Bodies without a length (chunked) keep the route's check.
///
/// After a head that asks for a WebSocket upgrade it only forwards, never looking at what
/// passes (after the upgrade that is WebSocket frames, not HTTP parts).
final class DeclaredBodySizeGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let maxBodyBytes: Int
    private var passThrough = false
    private var refused = false

    init(maxBodyBytes: Int) {
        self.maxBodyBytes = maxBodyBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if passThrough { return context.fireChannelRead(data) }
        if refused { return }   // the rest of a refused request, until the close
        if case .head(let head) = unwrapInboundIn(data) {
            if head.headers[canonicalForm: "upgrade"].contains(where: { $0.lowercased() == "websocket" }) {
                passThrough = true
            } else if let declared = head.headers.first(name: "content-length").flatMap({ Int($0) }), declared > maxBodyBytes {
                refused = true
                refuse(context: context, declared: declared)
                return
            }
        }
        context.fireChannelRead(data)
    }

    private func refuse(context: ChannelHandlerContext, declared: Int) {
        let body = #"{"error_code":"PAYLOAD_TOO_LARGE","message":"the request body (\#(declared) bytes) is larger than \#(maxBodyBytes) bytes","success":false}"#
        var headers = HTTPHeaders()
        headers.add(name: "connection", value: "close")
        headers.add(name: "content-type", value: "application/json; charset=utf-8")
        headers.add(name: "content-length", value: "\(body.utf8.count)")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .payloadTooLarge, headers: headers))),
                      promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            closeAnswered(context)
        }
    }
}

/// Answers an HTTP parse error with 400 and closes. Everything else passes
/// through untouched (it never unwraps what it forwards, so it stays harmless
/// after a WebSocket upgrade has replaced the HTTP handlers around it).
final class HTTPParseErrorResponder: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        var headers = HTTPHeaders()
        headers.add(name: "connection", value: "close")
        headers.add(name: "content-length", value: "0")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers))),
                      promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            closeAnswered(context)
        }
    }
}
