public import CaptureCore
import CaptureSystem
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Creates the daemon's own listening socket when systemd did not pass one.
public enum ControlSocket {
    /// Binds and listens on `path`: the parent directory is created 0700 when
    /// missing, the socket is 0600. A stale socket (nothing accepting) is
    /// replaced; a live one means another daemon runs: INVALID_STATE.
    public static func listen(path: String) throws(CaptureError) -> Int32 {
        guard path.hasPrefix("/"), let address = UnixSocketAddress(path: path) else {
            throw CaptureError(.invalidRequest, "socket path must be absolute and at most \(UnixSocketAddress.maxPathLength) bytes: \(path)")
        }
        let directory = parentDirectory(of: path)
        var info = stat()
        if lstat(directory, &info) != 0 {
            // Parents (e.g. $XDG_RUNTIME_DIR) must exist; only our own directory is created.
            if mkdir(directory, 0o700) != 0 && errno != EEXIST {
                throw CaptureError(.ioError, "cannot create \(directory): \(String(cString: strerror(errno)))")
            }
            _ = chmod(directory, 0o700)
        } else if (info.st_mode & S_IFMT) != S_IFDIR {
            throw CaptureError(.ioError, "\(directory) is not a directory")
        } else if info.st_uid != geteuid() && !(info.st_uid == 0 && info.st_mode & S_ISVTX != 0) {
            // Another user's directory (even a world-writable one) could let that user
            // replace our socket with theirs; only a root-owned sticky one (/tmp) cannot.
            throw CaptureError(.permissionDenied, "\(directory) belongs to uid \(info.st_uid), not to this user: choose a socket path in a directory of your own")
        } else if info.st_mode & 0o002 != 0 && info.st_mode & S_ISVTX == 0 {
            throw CaptureError(.permissionDenied, "\(directory) is writable by everyone without the sticky bit: anyone could replace the socket; choose a directory of your own")
        }

        if lstat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFSOCK else {
                throw CaptureError(.ioError, "\(path) exists and is not a socket; remove it or choose another path")
            }
            if isAccepting(path) {
                throw CaptureError(.invalidState, "another capture-agent is already running on \(path)")
            }
            unlink(path)   // stale: left behind by a crash
        }

        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw CaptureError(.ioError, "cannot create a socket: \(String(cString: strerror(errno)))") }
        let oldMask = umask(0o177)   // the socket is created 0600
        let bound = address.bind(fd)
        let bindErrno = errno
        umask(oldMask)
        guard bound == 0 else {
            close(fd)
            throw CaptureError(.ioError, "cannot bind \(path): \(String(cString: strerror(bindErrno)))")
        }
        _ = chmod(path, 0o600)
        guard Glibc.listen(fd, 64) == 0 else {
            let e = errno
            close(fd)
            throw CaptureError(.ioError, "cannot listen on \(path): \(String(cString: strerror(e)))")
        }
        return fd
    }

    /// True when something accepts connections on `path`.
    static func isAccepting(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return UnixSocketAddress(path: path)?.connect(fd) == 0
    }

    /// The directory an absolute path is in, as NSString's deletingLastPathComponent
    /// gave it: "/run/user/1000/capture-agent/control.sock" -> "/run/user/1000/capture-agent",
    /// "/control.sock" -> "/" (trailing and doubled slashes are ignored).
    static func parentDirectory(of path: String) -> String {
        var components = path.split(separator: "/", omittingEmptySubsequences: true)
        if !components.isEmpty { components.removeLast() }
        return "/" + components.joined(separator: "/")
    }
}
