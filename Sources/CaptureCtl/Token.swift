import ArgumentParser
import CaptureControl
import CaptureCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where an upload token comes from. Never argv: a command line is visible to
/// every user (ps, /proc/PID/cmdline) and lands in shell history.
enum TokenSource {
    case file(String)
    case environment(String)

    static let argvWarning = """
        There is intentionally no --token option: a token on the command line is visible \
        to every user (ps, /proc) and lands in shell history. Use a file only you can read \
        (chmod 600; `-` reads stdin) or an environment variable.
        """

    init?(file: String?, env: String?) throws(ValidationError) {
        switch (file, env) {
        case (nil, nil): return nil
        case (let f?, nil): self = .file(f)
        case (nil, let e?): self = .environment(e)
        case (_?, _?): throw ValidationError("give the token either from a file or from an environment variable, not both")
        }
    }

    /// The token, trimmed of surrounding whitespace (the trailing newline of a file).
    func read() throws(CaptureError) -> String {
        let text: String
        switch self {
        case .environment(let name):
            guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
                throw CaptureError(.invalidToken, "environment variable \(name) is not set or empty; export the upload token in it")
            }
            text = value
        case .file(let path):
            text = try Self.readFile(path)
        }
        let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw CaptureError(.invalidToken, "the upload token (\(self)) is empty") }
        return token
    }

    private static let maxBytes = 65536

    private static func readFile(_ path: String) throws(CaptureError) -> String {
        let fd = path == "-" ? dup(STDIN_FILENO) : open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw CaptureError(.invalidToken, "cannot read token file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_mode & 0o044 != 0 {
            throw CaptureError(.invalidToken, String(format:
                "token file %@ is readable by other users (mode %04o): run `chmod 600 %@` and rotate the token if others could have read it",
                path, Int(info.st_mode & 0o7777), path))
        }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CaptureError(.invalidToken, "cannot read token file \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            bytes.append(contentsOf: buffer[0..<n])
            guard bytes.count <= maxBytes else {
                throw CaptureError(.invalidToken, "token file \(path) is larger than \(maxBytes / 1024) KiB; is it the right file?")
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension TokenSource: CustomStringConvertible {
    var description: String {
        switch self {
        case .file(let path): "file \(path)"
        case .environment(let name): "$\(name)"
        }
    }
}

struct TokenCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Give the daemon a new upload token (updateToken).",
        discussion: TokenSource.argvWarning)

    @Option(name: .long, help: ArgumentHelp("Read the token from this file (`-`: stdin).", valueName: "file"), completion: .file())
    var file: String?

    @Option(name: .long, help: ArgumentHelp("Read the token from this environment variable.", valueName: "var"))
    var env: String?

    @Option(name: .long, help: ArgumentHelp("When the token expires, in Unix seconds.", valueName: "seconds"))
    var expiresAt: Int64?

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        guard try TokenSource(file: file, env: env) != nil else {
            throw ValidationError("name the token's source: --file FILE or --env VAR")
        }
    }

    func execute() throws(CaptureError) {
        guard let source = try? TokenSource(file: file, env: env) else {
            throw CaptureError(.invalidRequest, "name the token's source: --file FILE or --env VAR")
        }
        var params: [String: JSONValue] = ["token": .string(try source.read())]
        if let expiresAt { params["expiresAt"] = .integer(expiresAt) }
        let result = try connection.connect().call(ControlCommand.updateToken.rawValue, params: params, timeout: .seconds(30))
        if connection.json { return Output.json(result) }
        if let expires = result["expiresAt"]?.int64Value {
            Output.line("token accepted (expires \(WallClock.iso8601(nanoseconds: expires * 1_000_000_000)))")
        } else {
            Output.line("token accepted")
        }
    }
}
