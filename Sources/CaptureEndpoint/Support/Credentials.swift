public import CaptureCore
import CaptureSystem
import Foundation

/// The account an API key stands for. Every key is an account of its own,
/// named by its hash, so nothing about accounts needs storing.
public struct Account: Sendable, Hashable {
    public var id: String

    public init(apiKey: String) {
        id = "acct_" + Secrets.storedHash(of: apiKey).prefix(16)
    }
}

/// Where the API keys and the webhook secret come from: an option's file, the
/// environment, or (neither given) a value generated on first run, kept 0600 in
/// the data directory and shown once.
public enum EndpointCredentials {
    public static let apiKeyEnvironment = "CAPTURE_ENDPOINT_API_KEY"
    public static let webhookSecretEnvironment = "CAPTURE_ENDPOINT_WEBHOOK_SECRET"
    static let generatedKeyFile = "api-key"
    static let generatedSecretFile = "webhook-secret"

    public struct Loaded: Sendable {
        public var values: [String]
        /// The value was generated now (first run): the caller says where it is (never the
        /// value itself: stderr ends up in the journal).
        public var generated: String?
        /// Where it came from, for the log (never the value).
        public var source: String
    }

    /// The API keys: one per line of `file` (`#` comments, blank lines ignored), else
    /// `CAPTURE_ENDPOINT_API_KEY`, else `DATA/api-key`, generated if missing.
    public static func apiKeys(file: String?, environment: [String: String], dataDirectory: String) throws(CaptureError)
        -> Loaded {
        if let file {
            try requirePrivate(file, what: "API key file")
            let keys = try readLines(file, what: "API key file").filter { !$0.hasPrefix("#") }
            guard !keys.isEmpty else { throw CaptureError(.invalidRequest, "the API key file \(file) holds no key") }
            for key in keys { try validateKey(key, source: file) }
            return Loaded(values: keys, generated: nil, source: file)
        }
        if let key = environment[apiKeyEnvironment], !key.isEmpty {
            try validateKey(key, source: apiKeyEnvironment)
            return Loaded(values: [key], generated: nil, source: apiKeyEnvironment)
        }
        return try storedOrGenerated(generatedKeyFile, in: dataDirectory, what: "API key") {
            Secrets.newCredential(prefix: "cek_")
        }
    }

    /// The webhook signing secret, `whsec_<base64>`: `file`'s first line, else
    /// `CAPTURE_ENDPOINT_WEBHOOK_SECRET`, else `DATA/webhook-secret`, generated if missing.
    public static func webhookSecret(file: String?, environment: [String: String], dataDirectory: String)
        throws(CaptureError) -> Loaded {
        let loaded: Loaded
        if let file {
            try requirePrivate(file, what: "webhook secret file")
            guard let first = try readLines(file, what: "webhook secret file").first else {
                throw CaptureError(.invalidRequest, "the webhook secret file \(file) is empty")
            }
            loaded = Loaded(values: [first], generated: nil, source: file)
        } else if let secret = environment[webhookSecretEnvironment], !secret.isEmpty {
            loaded = Loaded(values: [secret], generated: nil, source: webhookSecretEnvironment)
        } else {
            loaded = try storedOrGenerated(generatedSecretFile, in: dataDirectory, what: "webhook secret") {
                "whsec_" + Data(Secrets.randomBytes(32)).base64EncodedString()
            }
        }
        guard WebhookSigner(secret: loaded.values[0]) != nil else {
            throw CaptureError(.invalidRequest, "the webhook secret from \(loaded.source) is not whsec_<base64 of 24-64 bytes>")
        }
        return loaded
    }

    static func validateKey(_ key: String, source: String) throws(CaptureError) {
        guard key.utf8.count >= 16, key.utf8.count <= 256,
              key.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw CaptureError(.invalidRequest, "an API key from \(source) must be 16-256 printable ASCII characters without spaces")
        }
    }

    /// A secret file others can read is refused (as the agent refuses token files): the
    /// keys in it are every account's.
    static func requirePrivate(_ path: String, what: String) throws(CaptureError) {
        // (FileManager, not stat(2): with MemberImportVisibility, struct stat's members belong
        // to whichever C module the importer met first, here Dispatch's.)
        guard let mode = (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? NSNumber else {
            throw CaptureError(.ioError, "cannot read the \(what) \(path)")
        }
        guard mode.intValue & 0o077 == 0 else {
            throw CaptureError(.permissionDenied, "the \(what) \(path) is readable by others (mode \(String(mode.intValue & 0o777, radix: 8))); chmod 600 it")
        }
    }

    private static func readLines(_ path: String, what: String) throws(CaptureError) -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw CaptureError(.ioError, "cannot read the \(what) \(path)")
        }
        return text.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
    }

    private static func storedOrGenerated(_ name: String, in directory: String, what: String,
                                          make: () -> String) throws(CaptureError) -> Loaded {
        let path = directory + "/" + name
        if FileManager.default.fileExists(atPath: path) {
            let lines = try readLines(path, what: what)
            guard let value = lines.first else { throw CaptureError(.ioError, "the \(what) file \(path) is empty") }
            return Loaded(values: [value], generated: nil, source: path)
        }
        let value = make()
        let dir = try AtomicDirectory(creating: directory)
        try dir.publish(name, string: value + "\n")
        try dir.sync()
        return Loaded(values: [value], generated: value, source: path)
    }
}
