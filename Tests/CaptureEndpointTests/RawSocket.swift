import CaptureTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP client for what no well-behaved client library sends:
/// malformed HTTP, a WebSocket peer that stops reading.
final class RawSocket {
    let fd: Int32

    init(port: Int, receiveBuffer: Int32? = nil) throws {
        guard let fd = Loopback.connect(port: port, receiveBuffer: receiveBuffer) else { throw POSIXError(.ECONNREFUSED) }
        self.fd = fd
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// How long a send or a receive may block.
    func setTimeouts(seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Reads up to the end of an HTTP response head.
    func readHead() -> String {
        var out: [UInt8] = []
        var byte: UInt8 = 0
        while out.count < 65536 {
            let n = recv(fd, &byte, 1, 0)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out.append(byte)
            if out.suffix(4) == [13, 10, 13, 10] { break }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Upgrades to a WebSocket on `path`; returns the response head.
    func upgrade(path: String) -> String {
        _ = send(Array(("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").utf8))
        return readHead()
    }

    /// Reads one (unmasked, server) frame: opcode and payload; nil if the connection ended.
    func readFrame() -> (opcode: UInt8, payload: [UInt8])? {
        func exactly(_ n: Int) -> [UInt8]? {
            var out = [UInt8](repeating: 0, count: n)
            var got = 0
            while got < n {
                let r = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, n - got, 0) }
                if r < 0 && errno == EINTR { continue }
                if r <= 0 { return nil }
                got += r
            }
            return out
        }
        guard let head = exactly(2) else { return nil }
        var length = Int(head[1] & 0x7f)
        if length == 126, let ext = exactly(2) { length = Int(ext[0]) << 8 | Int(ext[1]) }
        else if length == 127, let ext = exactly(8) { length = ext.reduce(0) { $0 << 8 | Int($1) } }
        guard let payload = length == 0 ? [] : exactly(length) else { return nil }
        return (head[0] & 0x0f, payload)
    }

    /// One masked client frame (RFC 6455 5.2): opcode 1 text, 2 binary, 9 ping, 10 pong.
    static func frame(opcode: UInt8, _ payload: [UInt8]) -> [UInt8] {
        let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        var out = frameHeader(opcode: opcode, fin: true, length: payload.count, mask: mask)
        for (i, byte) in payload.enumerated() { out.append(byte ^ mask[i & 3]) }
        return out
    }

    /// A masked client frame's header, with the shortest length field.
    static func frameHeader(opcode: UInt8, fin: Bool, length: Int, mask: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        if length < 126 {
            out.append(0x80 | UInt8(length))
        } else if length < 65536 {
            out += [0x80 | 126, UInt8(length >> 8), UInt8(length & 0xff)]
        } else {
            out.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((length >> shift) & 0xff)) }
        }
        return out + mask
    }

    deinit { close(fd) }

    /// Sets the receive buffer small, so a peer that stops reading fills up quickly.
    func shrinkReceiveBuffer() {
        var size: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }

    /// Reads until the peer closes (or 10 s pass without data).
    func readAll(limit: Int = 1 << 20) -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while out.count < limit {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, 65536, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out += buffer[0..<n]
        }
        return out
    }

    /// Connects, sends, reads the whole answer, on a thread of its own.
    static func exchange(port: Int, send bytes: [UInt8]) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                do {
                    let socket = try RawSocket(port: port)
                    _ = socket.send(bytes)
                    continuation.resume(returning: String(decoding: socket.readAll(), as: UTF8.self))
                } catch {
                    continuation.resume(throwing: error)
                }
            }.start()
        }
    }
}

/// Runs blocking socket work on a thread of its own (not the test's cooperative pool, which
/// the in-process endpoint's handlers need).
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
