import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A `sockaddr_un` for a filesystem path or an abstract-namespace name, with
/// the exact length to pass to bind/connect/sendto.
struct UnixSocketAddress {
    private var storage = sockaddr_un()
    private(set) var length: socklen_t

    /// The longest name `sun_path` holds: 108 bytes, less the NUL of a path.
    static let maxPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    private static let pathOffset = MemoryLayout<sa_family_t>.size

    /// A socket file at `path` (nil if empty, containing a NUL, or too long).
    init?(path: String) {
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
    init?(abstract name: String) {
        let bytes = Array(name.utf8)
        guard bytes.count <= Self.maxPathLength else { return nil }
        storage.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &storage.sun_path) { raw in
            raw[0] = 0
            UnsafeMutableRawBufferPointer(rebasing: raw[1...]).copyBytes(from: bytes)
        }
        length = socklen_t(Self.pathOffset + 1 + bytes.count)
    }

    /// The address as `$NOTIFY_SOCKET` spells it (sd_notify(3)): an absolute
    /// path, or "@name" for the abstract namespace. Anything else (a relative
    /// path, "vsock:CID:PORT") gives nil.
    init?(notifySocket value: String) {
        if value.hasPrefix("@") {
            self.init(abstract: String(value.dropFirst()))
        } else if value.hasPrefix("/") {
            self.init(path: value)
        } else {
            return nil
        }
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafePointer(to: storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }
}

/// `strerror(errno)` as a String.
func errnoDescription(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}
