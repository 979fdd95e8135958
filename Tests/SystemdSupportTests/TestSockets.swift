import CaptureCore
import CaptureSystem
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A fresh temporary directory for one test (removed by the caller's defer).
func makeTemporaryDirectory(_ name: String) throws -> String {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("systemd-support-tests-\(getpid())-\(name)-\(UInt32.random(in: 0...UInt32.max))").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

/// The address of a test socket: a path, or (when `abstract`) a name in the
/// abstract namespace, handed to `body` with its length for bind/connect.
func withUnixAddress<R>(_ name: String, abstract: Bool = false, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
    guard let address = abstract ? UnixSocketAddress(abstract: name) : UnixSocketAddress(path: name) else {
        preconditionFailure("socket name too long for the test: \(name)")
    }
    return address.withSockaddr(body)
}

/// A bound AF_UNIX datagram socket that receives what SystemdNotifier sends,
/// with the sender's credentials (SO_PASSCRED), as systemd's notify socket does.
final class NotifyReceiver: @unchecked Sendable {  // immutable after init; the fd is only read from
    let fd: Int32
    /// The value for NOTIFY_SOCKET: the path, or "@name" for the abstract namespace.
    let notifySocket: String

    init(path: String) throws {
        fd = try Self.makeSocket()
        notifySocket = path
        try bind(path, abstract: false)
    }

    init(abstractName: String) throws {
        fd = try Self.makeSocket()
        notifySocket = "@" + abstractName
        try bind(abstractName, abstract: true)
    }

    deinit { close(fd) }

    private static func makeSocket() throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errnoText())") }
        var one: Int32 = 1
        guard setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            close(fd)
            throw TestFailure("SO_PASSCRED: \(errnoText())")
        }
        return fd
    }

    private func bind(_ name: String, abstract: Bool) throws {
        let r = withUnixAddress(name, abstract: abstract) { Glibc.bind(fd, $0, $1) }
        guard r == 0 else { throw TestFailure("bind \(name): \(errnoText())") }
    }

    /// The next datagram's text and the sender's pid (from SCM_CREDENTIALS),
    /// or nil when nothing arrives within `timeoutMilliseconds`.
    func receive(timeoutMilliseconds: Int32 = 2000) throws -> (text: String, senderPID: pid_t?)? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, timeoutMilliseconds)
        guard ready > 0 else { return nil }
        var data = [UInt8](repeating: 0, count: 4096)
        // Room for one cmsghdr (16 bytes on LP64) plus a struct ucred (3 x 32 bits), aligned.
        var control = [UInt64](repeating: 0, count: 8)
        let count: Int = data.withUnsafeMutableBytes { dataBytes in
            control.withUnsafeMutableBytes { controlBytes in
                var iov = iovec(iov_base: dataBytes.baseAddress, iov_len: dataBytes.count)
                return withUnsafeMutablePointer(to: &iov) { iovPointer in
                    var message = msghdr()
                    message.msg_iov = iovPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBytes.baseAddress
                    message.msg_controllen = controlBytes.count
                    // Without credentials the zeroed control buffer stays zero (cmsg_len 0).
                    return recvmsg(fd, &message, 0)
                }
            }
        }
        guard count >= 0 else { throw TestFailure("recvmsg: \(errnoText())") }
        let text = String(decoding: data[0..<count], as: UTF8.self)
        var pid: pid_t?
        control.withUnsafeBytes { raw in
            let header = raw.load(as: cmsghdr.self)
            let dataOffset = (MemoryLayout<cmsghdr>.size + 7) & ~7
            // SCM_CREDENTIALS is 2 (linux/socket.h); struct ucred starts with the pid.
            if header.cmsg_level == SOL_SOCKET && header.cmsg_type == 2 && Int(header.cmsg_len) >= dataOffset + 12 {
                pid = raw.load(fromByteOffset: dataOffset, as: Int32.self)
            }
        }
        return (text, pid)
    }
}

/// A listening (or not) AF_UNIX stream socket bound to a path.
func makeUnixStreamSocket(path: String, listening: Bool) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(errnoText())") }
    guard withUnixAddress(path, { bind(fd, $0, $1) }) == 0 else {
        let e = errno
        close(fd)
        throw TestFailure("bind \(path): \(errnoText(e))")
    }
    if listening {
        guard listen(fd, 16) == 0 else {
            let e = errno
            close(fd)
            throw TestFailure("listen: \(errnoText(e))")
        }
    }
    return fd
}

/// Connects an AF_UNIX stream socket to `path`; -1 when that fails.
func connectUnixStream(path: String) -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return -1 }
    guard withUnixAddress(path, { connect(fd, $0, $1) }) == 0 else {
        close(fd)
        return -1
    }
    return fd
}

/// Reads until EOF or `timeoutMilliseconds` without data.
func readAll(_ fd: Int32, timeoutMilliseconds: Int32 = 10_000) -> String {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1024)
    while true {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, timeoutMilliseconds) > 0 else { break }
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { break }
        bytes += buffer[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
