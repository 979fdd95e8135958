#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// One socket the service manager passed to this process (socket activation).
public struct ActivatedSocket: Sendable, Hashable {
    /// The descriptor, already open in this process and close-on-exec.
    public let fd: Int32
    /// Its `FileDescriptorName=` (the unit name without ".socket" unless set),
    /// or nil when the manager passed no names.
    public let name: String?

    public init(fd: Int32, name: String?) {
        self.fd = fd
        self.name = name
    }
}

/// Why a descriptor is not what the daemon can serve on.
public struct SocketActivationError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Socket activation, following sd_listen_fds(3) and
/// sd_listen_fds_with_names(3), without libsystemd.
public enum SocketActivation {
    /// The first passed descriptor (`SD_LISTEN_FDS_START`); the others follow
    /// without gaps.
    public static let firstDescriptor: Int32 = 3

    /// The sockets the service manager passed, in order (fd 3, 4, ...), as
    /// sd_listen_fds_with_names(3) reads them:
    ///
    /// - `LISTEN_PID` must be this process's id; when it is unset, not a
    ///   number, or another process's (the variables were inherited from a
    ///   parent), nothing was passed to us: returns [].
    /// - `LISTEN_FDS` is the number of descriptors, starting at fd 3; unset,
    ///   not a number or 0 gives [].
    /// - `LISTEN_FDNAMES`, when present, is the colon-separated names
    ///   (`FileDescriptorName=`), one per descriptor. When it is absent or
    ///   does not hold exactly one name per descriptor (sd_listen_fds_with_names
    ///   fails then) every name is nil: the sockets are still returned, so
    ///   that none is silently left open and unserved.
    ///
    /// Each descriptor is set close-on-exec (`FD_CLOEXEC`), as sd_listen_fds
    /// does. A number that is not an open descriptor is left out.
    ///
    /// With `unsetEnvironment` (the default, as the daemon wants), `LISTEN_PID`,
    /// `LISTEN_FDS` and `LISTEN_FDNAMES` are removed from the process
    /// environment (unsetenv(3)) whatever the outcome, so a child never
    /// mistakes them for its own; call this once, early, before other threads
    /// read the environment (unsetenv is not thread-safe). The values are read
    /// from `environment`, which defaults to this process's.
    ///
    /// The caller owns the returned descriptors. Check each with
    /// `requireListeningUnixStreamSocket(_:)` before serving on it.
    public static func takeListeningSockets(
        environment: [String: String] = ProcessInfo.processInfo.environment, unsetEnvironment: Bool = true
    ) -> [ActivatedSocket] {
        defer {
            if unsetEnvironment {
                unsetenv("LISTEN_PID")
                unsetenv("LISTEN_FDS")
                unsetenv("LISTEN_FDNAMES")
            }
        }
        guard let pidText = environment["LISTEN_PID"], let pid = parseDecimal(pidText),
              pid == UInt64(getpid()) else { return [] }
        guard let countText = environment["LISTEN_FDS"], let count = parseDecimal(countText),
              count > 0, count <= UInt64(Int32.max - firstDescriptor) else { return [] }
        let n = Int(count)
        let names = names(environment["LISTEN_FDNAMES"], count: n)
        var sockets: [ActivatedSocket] = []
        for index in 0..<n {
            let fd = firstDescriptor + Int32(index)
            let flags = fcntl(fd, F_GETFD)
            guard flags >= 0 else { continue }
            if flags & FD_CLOEXEC == 0 {
                guard fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0 else { continue }
            }
            sockets.append(ActivatedSocket(fd: fd, name: names[index]))
        }
        return sockets
    }

    /// The names in `LISTEN_FDNAMES` (colon-separated), one per descriptor;
    /// all nil when the variable is absent or the count differs. An empty
    /// name is nil.
    static func names(_ text: String?, count: Int) -> [String?] {
        let none = [String?](repeating: nil, count: count)
        guard let text else { return none }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == count else { return none }
        return parts.map { $0.isEmpty ? nil : String($0) }
    }

    /// Checks that `fd` is an `AF_UNIX` stream socket in the listening state,
    /// the only kind the daemon's control socket can be (`ListenStream=` with
    /// a path, `Accept=no`): the equivalent of sd_is_socket_unix(fd,
    /// SOCK_STREAM, 1, NULL, 0) (sd_is_socket(3)). Throws an error that names
    /// the descriptor and what it is instead (not open, not a socket, another
    /// address family, a datagram or sequential-packet socket, not listening).
    public static func requireListeningUnixStreamSocket(_ fd: Int32) throws(SocketActivationError) {
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw SocketActivationError("fd \(fd) is not an open descriptor (\(errnoDescription()))")
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw SocketActivationError("fd \(fd) is not a socket (\(fileKind(info.st_mode)))")
        }

        var family = sockaddr_storage()
        var familyLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &family) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &familyLength) }
        }
        guard named == 0 else {
            throw SocketActivationError("fd \(fd): getsockname failed (\(errnoDescription()))")
        }
        guard Int32(family.ss_family) == AF_UNIX else {
            throw SocketActivationError("fd \(fd) is an \(familyName(Int32(family.ss_family))) socket, not AF_UNIX (the control socket is ListenStream= with a path)")
        }

        let type = try socketOption(fd, SO_TYPE, "SO_TYPE")
        guard type == Int32(SOCK_STREAM.rawValue) else {
            throw SocketActivationError("fd \(fd) is a \(typeName(type)) socket, not a stream socket (ListenStream=)")
        }
        let listening = try socketOption(fd, SO_ACCEPTCONN, "SO_ACCEPTCONN")
        guard listening != 0 else {
            throw SocketActivationError("fd \(fd) is an AF_UNIX stream socket that is not listening (a connection, or Accept=yes)")
        }
    }

    /// Whether `fd` is a listening `AF_UNIX` stream socket
    /// (`requireListeningUnixStreamSocket` without the reason).
    public static func isListeningUnixStreamSocket(_ fd: Int32) -> Bool {
        do {
            try requireListeningUnixStreamSocket(fd)
            return true
        } catch {
            return false
        }
    }

    private static func socketOption(_ fd: Int32, _ option: Int32, _ optionName: String) throws(SocketActivationError) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, option, &value, &length) == 0 else {
            throw SocketActivationError("fd \(fd): getsockopt(\(optionName)) failed (\(errnoDescription()))")
        }
        return value
    }

    private static func fileKind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: return "a regular file"
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a pipe"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFLNK: return "a symbolic link"
        default: return "file type \(String(mode & S_IFMT, radix: 8))"
        }
    }

    private static func familyName(_ family: Int32) -> String {
        switch family {
        case AF_INET: return "AF_INET"
        case AF_INET6: return "AF_INET6"
        case AF_NETLINK: return "AF_NETLINK"
        case AF_UNIX: return "AF_UNIX"
        default: return "address family \(family)"
        }
    }

    private static func typeName(_ type: Int32) -> String {
        switch type {
        case Int32(SOCK_DGRAM.rawValue): return "datagram (ListenDatagram=)"
        case Int32(SOCK_SEQPACKET.rawValue): return "sequential-packet (ListenSequentialPacket=)"
        case Int32(SOCK_RAW.rawValue): return "raw"
        default: return "type \(type)"
        }
    }
}
