#if canImport(Glibc)
public import Glibc
#endif

/// A `sockaddr_un` for a filesystem path or an abstract-namespace name, with
/// the exact length to pass to bind/connect/sendto. Shared by the control
/// socket's server and clients and by the systemd notifier.
public struct UnixSocketAddress {
    private var storage = sockaddr_un()
    public private(set) var length: socklen_t

    /// The longest name `sun_path` holds: 108 bytes, less the NUL of a path.
    public static let maxPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    private static let pathOffset = MemoryLayout<sa_family_t>.size

    /// A socket file at `path` (nil if empty, containing a NUL, or too long).
    public init?(path: String) {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, !bytes.contains(0), bytes.count <= Self.maxPathLength else { return nil }
        storage.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &storage.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        length = socklen_t(Self.pathOffset + bytes.count + 1)
    }

    /// `name` in the abstract namespace (sun_path starts with a NUL byte; the
    /// name is not NUL-terminated and the length says where it ends).
    public init?(abstract name: String) {
        let bytes = Array(name.utf8)
        guard bytes.count <= Self.maxPathLength else { return nil }
        storage.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &storage.sun_path) { raw in
            raw[0] = 0
            UnsafeMutableRawBufferPointer(rebasing: raw[1...]).copyBytes(from: bytes)
        }
        length = socklen_t(Self.pathOffset + 1 + bytes.count)
    }

    public func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafePointer(to: storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }

    /// connect(2) `fd` to this address; 0 or -1 with errno set.
    public func connect(_ fd: Int32) -> Int32 {
        withSockaddr { Glibc.connect(fd, $0, $1) }
    }

    /// bind(2) `fd` to this address; 0 or -1 with errno set.
    public func bind(_ fd: Int32) -> Int32 {
        withSockaddr { Glibc.bind(fd, $0, $1) }
    }
}
