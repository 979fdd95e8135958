import NIOConcurrencyHelpers
public import NIOCore
import NIOPosix
public import NIOWebSocket

/// A WebSocket client connection (ws:// only) for the endpoint's tests and tools: the
/// replayer, the load generator and the scripted uplink client.
///
/// The upgrade is done by hand (`HandshakeHandler`): the request is written, the answer's
/// head read up to its blank line, and the bytes that came after it in the same read (on a
/// loaded machine the endpoint's first frame, or its close, comes with the 101) are handed
/// to the frame decoder, not dropped. Messages arrive whole (fragments joined); pings are
/// answered; the server's close is answered and kept (`closeFrame`).
public final class WebSocketClientConnection: Sendable {
    public enum Message: Sendable, Equatable {
        case text(String)
        case binary(ByteBuffer)
    }

    /// The server answered the upgrade with something other than 101.
    public struct UpgradeRefused: Error, CustomStringConvertible {
        /// The answer's status line and headers, as sent.
        public var head: String
        public var status: Int
        public var description: String { "the WebSocket upgrade was refused: \(head.prefix { $0 != "\r" })" }
    }

    /// The server's close: code (1005 when the frame had none) and reason.
    public struct CloseFrame: Sendable, Equatable {
        public var code: UInt16
        public var reason: String
    }

    private let channel: any Channel
    private let receiver: Receiver
    /// The messages as they arrive; the stream ends when the connection does.
    public let messages: AsyncThrowingStream<Message, any Error>

    private init(channel: any Channel, receiver: Receiver, messages: AsyncThrowingStream<Message, any Error>) {
        self.channel = channel
        self.receiver = receiver
        self.messages = messages
    }

    /// Connects to `ws://host:port/path` and completes the upgrade.
    public static func connect(host: String = "127.0.0.1", port: Int, path: String,
                               headers: [(String, String)] = [], maxMessageSize: Int = 1 << 26,
                               timeout: Duration = .seconds(30)) async throws -> WebSocketClientConnection {
        let (messages, continuation) = AsyncThrowingStream.makeStream(of: Message.self)
        let receiver = Receiver(continuation: continuation)
        let upgraded = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Void.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: upgraded.futureResult.eventLoop)
                .connectTimeout(.seconds(timeout.components.seconds))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handshake = HandshakeHandler(host: host, port: port, path: path, headers: headers,
                                                         maxMessageSize: maxMessageSize, upgraded: upgraded)
                        try channel.pipeline.syncOperations.addHandlers([
                            handshake, WebSocketFrameEncoder(), receiver,
                        ])
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            upgraded.fail(error)
            throw error
        }
        let deadline = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000)) {
            upgraded.fail(UpgradeTimedOut())
        }
        do {
            try await upgraded.futureResult.get()
            deadline.cancel()
        } catch {
            deadline.cancel()
            try? await channel.close()
            throw error
        }
        return WebSocketClientConnection(channel: channel, receiver: receiver, messages: messages)
    }

    struct UpgradeTimedOut: Error, CustomStringConvertible {
        var description: String { "no answer to the WebSocket upgrade in time" }
    }

    public func send(_ message: Message) async throws {
        var frame: WebSocketFrame
        switch message {
        case .text(let text):
            frame = WebSocketFrame(fin: true, opcode: .text, data: channel.allocator.buffer(string: text))
        case .binary(let bytes):
            frame = WebSocketFrame(fin: true, opcode: .binary, data: bytes)
        }
        frame.maskKey = .random()
        try await channel.writeAndFlush(frame)
    }

    public func send(text: String) async throws { try await send(.text(text)) }

    public func send(binary bytes: [UInt8]) async throws { try await send(.binary(ByteBuffer(bytes: bytes))) }

    /// Sends a close frame (once) and lets the server end the connection; it is closed from
    /// this side if the server has not within `linger`. `closed()` waits for the end.
    public func close(code: WebSocketErrorCode = .normalClosure, reason: String? = nil, linger: Duration = .seconds(5)) {
        receiver.sendClose(on: channel, code: code, reason: reason)
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(linger.components.seconds) * 1_000_000_000 + 1)) {
            channel.close(promise: nil)
        }
    }

    /// Waits for the connection to end; the server's close frame, if one came.
    public func closed() async -> CloseFrame? {
        try? await channel.closeFuture.get()
        return receiver.closeFrame
    }

    /// The server's close frame, if one came yet.
    public var closeFrame: CloseFrame? { receiver.closeFrame }
}

/// Writes the upgrade request once connected, reads the answer's head and then steps
/// aside: the frame decoder goes in behind it, and every byte after the head goes there.
private final class HandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let request: String
    private let maxMessageSize: Int
    private let upgraded: EventLoopPromise<Void>
    private var head = ByteBuffer()
    private var done = false
    static let maxHead = 16 << 10

    init(host: String, port: Int, path: String, headers: [(String, String)], maxMessageSize: Int,
         upgraded: EventLoopPromise<Void>) {
        var lines = [
            "GET \(path) HTTP/1.1", "Host: \(host):\(port)", "Upgrade: websocket", "Connection: Upgrade",
            "Sec-WebSocket-Key: \(NIOWebSocketClientUpgrader.randomRequestKey())", "Sec-WebSocket-Version: 13",
        ]
        lines += headers.map { "\($0.0): \($0.1)" }
        request = lines.joined(separator: "\r\n") + "\r\n\r\n"
        self.maxMessageSize = maxMessageSize
        self.upgraded = upgraded
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: request)), promise: nil)
        context.fireChannelActive()
    }

    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return context.fireChannelRead(data) }
        var bytes = unwrapInboundIn(data)
        head.writeBuffer(&bytes)
        let view = head.readableBytesView
        guard let end = view.firstRange(of: [13, 10, 13, 10]) else {
            if head.readableBytes > Self.maxHead { refuse(context: context, status: 0) }
            return
        }
        let headText = String(decoding: view[view.startIndex..<end.upperBound], as: UTF8.self)
        let statusLine = headText.prefix { $0 != "\r" }
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        let status = parts.count >= 2 ? Int(parts[1]) ?? 0 : 0
        guard status == 101 else { return refuse(context: context, status: status, head: headText) }
        done = true
        head.moveReaderIndex(forwardBy: end.upperBound - view.startIndex)
        let rest = head
        head = ByteBuffer()
        do {
            try context.pipeline.syncOperations.addHandlers(
                [ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxMessageSize)),
                 NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 16,
                                             maxAccumulatedFrameSize: maxMessageSize)],
                position: .after(self))
        } catch {
            upgraded.fail(error)
            context.close(promise: nil)
            return
        }
        upgraded.succeed(())
        if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
    }

    private func refuse(context: ChannelHandlerContext, status: Int, head: String = "") {
        done = true
        upgraded.fail(WebSocketClientConnection.UpgradeRefused(head: head.isEmpty ? "(no complete answer head)" : head,
                                                               status: status))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done { upgraded.fail(WebSocketClientConnection.UpgradeRefused(head: "(connection closed)", status: 0)) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done { upgraded.fail(error) }
        context.fireErrorCaught(error)
    }
}

/// The last handler: whole messages into the stream, pongs for pings, the close answered.
/// Its state is touched on the channel's event loop only, except `closeFrame` (locked).
private final class Receiver: ChannelInboundHandler, Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let continuation: AsyncThrowingStream<WebSocketClientConnection.Message, any Error>.Continuation
    private struct State {
        var closeFrame: WebSocketClientConnection.CloseFrame?
        var closeSent = false
    }
    private let state = NIOLockedValueBox(State())

    init(continuation: AsyncThrowingStream<WebSocketClientConnection.Message, any Error>.Continuation) {
        self.continuation = continuation
    }

    var closeFrame: WebSocketClientConnection.CloseFrame? { state.withLockedValue { $0.closeFrame } }

    func sendClose(on channel: any Channel, code: WebSocketErrorCode, reason: String?) {
        let first = state.withLockedValue { state in
            defer { state.closeSent = true }
            return !state.closeSent
        }
        guard first else { return }
        var data = channel.allocator.buffer(capacity: 2 + (reason?.utf8.count ?? 0))
        data.write(webSocketErrorCode: code)
        if let reason { data.writeString(reason) }
        var frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
        frame.maskKey = .random()
        channel.writeAndFlush(frame, promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            continuation.yield(.text(String(buffer: frame.unmaskedData)))
        case .binary:
            continuation.yield(.binary(frame.unmaskedData))
        case .ping:
            var pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            pong.maskKey = .random()
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            var data = frame.unmaskedData
            let code = data.readInteger(as: UInt16.self) ?? 1005
            let reason = data.readString(length: data.readableBytes) ?? ""
            state.withLockedValue { $0.closeFrame = WebSocketClientConnection.CloseFrame(code: code, reason: reason) }
            continuation.finish()
            // Answered with the same code (unless this side closed first), then the server ends the TCP connection.
            sendClose(on: context.channel, code: WebSocketErrorCode(codeNumber: Int(code == 1005 ? 1000 : code)),
                      reason: nil)
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        continuation.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        continuation.finish(throwing: error)
        context.close(promise: nil)
    }
}
