import ArgumentParser
import CaptureControl
import CaptureCore
import CaptureSystem
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
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
            text = try TokenFile.read(path)
        }
        let token = text.trimmingWhitespace()
        guard !token.isEmpty else { throw CaptureError(.invalidToken, "the upload token (\(self)) is empty") }
        return token
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
        let value = try connection.connect().call(ControlCommand.updateToken.rawValue, params: params, timeout: .seconds(30))
        if connection.json { return Output.json(value) }
        if let expires = try decodeResult(value, of: .updateToken, as: UpdateTokenResult.self).expiresAt {
            Output.line("token accepted (expires \(WallClock.iso8601(nanoseconds: expires * 1_000_000_000)))")
        } else {
            Output.line("token accepted")
        }
    }
}
