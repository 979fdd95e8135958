#if canImport(Glibc)
import Glibc
#endif
public import CaptureCore

/// Reads an upload token from a file only its owner can read (`-`: standard input).
/// Tokens never travel in argv (visible to every user through ps and /proc); a file
/// or an environment variable is how the command-line tools take one.
public enum TokenFile {
    public static let maxBytes = 65536

    /// The file's text, untrimmed. A regular file readable by group or others is refused:
    /// the token may have leaked, and the message says so.
    public static func read(_ path: String) throws(CaptureError) -> String {
        let fd: Int32
        do {
            fd = path == "-" ? try POSIX.call("dup") { dup(STDIN_FILENO) } : try POSIX.open(path, O_RDONLY)
        } catch {
            throw CaptureError(.invalidToken, "cannot read token file \(path): \(String(cString: strerror(error.errno)))")
        }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_mode & 0o044 != 0 {
            let mode = String(Int(info.st_mode & 0o7777), radix: 8)
            throw CaptureError(.invalidToken,
                "token file \(path) is readable by other users (mode 0\(mode)): run `chmod 600 \(path)` and rotate the token if others could have read it")
        }
        var bytes = [UInt8](repeating: 0, count: maxBytes + 1)
        let read = bytes.withUnsafeMutableBytes { raw in Result { () throws(SystemCallError) in try POSIX.readFully(fd, into: raw) } }
        let n: Int
        switch read {
        case .success(let count): n = count
        case .failure(let error):
            throw CaptureError(.invalidToken, "cannot read token file \(path): \(String(cString: strerror(error.errno)))")
        }
        guard n <= maxBytes else {
            throw CaptureError(.invalidToken, "token file \(path) is larger than \(maxBytes / 1024) KiB; is it the right file?")
        }
        return String(decoding: bytes[0..<n], as: UTF8.self)
    }
}
