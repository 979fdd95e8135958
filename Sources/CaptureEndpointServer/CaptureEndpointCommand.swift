import ArgumentParser
import CaptureCore
import CaptureEndpoint
internal import LinuxSupport
import Foundation
import Hummingbird
import Logging

/// `capture-endpoint`: the reference capture endpoint. All of it lives in the
/// CaptureEndpoint library; this reads the options, loads the credentials and runs.
@main
struct CaptureEndpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture-endpoint",
        abstract: "The reference capture endpoint: sessions, client tokens, chunk uplink, webhooks, live HLS.",
        discussion: """
            Listens on 127.0.0.1 unless --host says otherwise. The API key comes from --api-key-file \
            (one key per line, each its own account), else CAPTURE_ENDPOINT_API_KEY, else DATA/api-key, \
            generated on first run (0600; the path is printed, never the key). The webhook signing secret likewise from \
            --webhook-secret-file, CAPTURE_ENDPOINT_WEBHOOK_SECRET or DATA/webhook-secret. \
            SIGTERM or SIGINT shut it down gracefully. See docs/openapi.yaml and docs/uplink-protocol.md.
            """,
        version: EndpointVersion.current)

    @Option(name: .customLong("data-dir"), help: "The directory for the database, chunks and secrets (created 0700).")
    var dataDirectory: String = "./capture-endpoint-data"

    @Option(help: "The address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "The TCP port (0 picks a free one; the log line 'listening' names it).")
    var port: Int = 8470

    @Option(name: .customLong("api-key-file"), help: "A file of API keys, one per line.")
    var apiKeyFile: String?

    @Option(name: .customLong("webhook-secret-file"), help: "A file whose first line is the whsec_ signing secret.")
    var webhookSecretFile: String?

    @Option(name: .customLong("public-url"), help: "The base URL put into handed-out URLs (default: the request's Host).")
    var publicURL: String?

    @Option(name: .customLong("silence-timeout"), help: "A session whose uplink is silent this long fails (e.g. 300s, 5m).")
    var silenceTimeout: String = "300s"

    @Option(name: .customLong("ping-interval"),
            help: "How often WebSockets are pinged; one that has not answered the previous ping is closed (e.g. 15s).")
    var pingInterval: String = "15s"

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(name: .customLong("log-format"), help: "json (one object per line) or text.")
    var logFormat: String = "json"

    @Flag(name: .customLong("allow-private-webhook-targets"),
          help: "Let callback_url reach loopback, private and link-local addresses (local development only).")
    var allowPrivateWebhookTargets = false

    @Flag(name: .customLong("follow-webhook-redirects"),
          help: "Follow a receiver's 307/308 (up to 3, each target checked); otherwise a redirect is a failed attempt.")
    var followWebhookRedirects = false

    @Option(name: .customLong("webhook-ca-file"),
            help: "PEM file of the CAs trusted for https callbacks (default: the system's store).")
    var webhookCAFile: String?

    @Option(name: .customLong("limit"),
            help: "NAME=VALUE, repeatable: what one account, session or address may take (SECURITY.md lists the names and defaults).")
    var limit: [String] = []

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0-65535") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level '\(logLevel)'") }
        guard logFormat == "json" || logFormat == "text" else { throw ValidationError("--log-format is json or text") }
        do {
            let ns = try parseDuration(silenceTimeout)
            guard ns >= 1_000_000_000 else { throw ValidationError("--silence-timeout must be at least 1s") }
        } catch let error as CaptureError {
            throw ValidationError("--silence-timeout: \(error.message)")
        }
        do {
            let ns = try parseDuration(pingInterval)
            guard (1_000_000_000...3_600_000_000_000).contains(ns) else { throw ValidationError("--ping-interval must be 1s to 1h") }
        } catch let error as CaptureError {
            throw ValidationError("--ping-interval: \(error.message)")
        }
        var limits = EndpointLimits()
        for assignment in limit {
            do { try limits.set(assignment) } catch { throw ValidationError(error.message) }
        }
        if let publicURL, !(publicURL.hasPrefix("http://") || publicURL.hasPrefix("https://")) {
            throw ValidationError("--public-url must start with http:// or https://")
        }
    }

    func run() async throws {
        // Everything the endpoint writes (database, chunks, exports, secrets) is its own:
        // other users of the machine read it through the API or not at all, whatever the
        // umask it was started with.
        umask(0o077)
        // Buffers of 512 KiB and more (uplink frames and chunk messages being assembled)
        // get pages of their own that go back to the kernel when freed. glibc's default
        // threshold starts at 128 KiB but rises to the largest block freed (up to 32 MiB),
        // after which such buffers come from the heap and the holes they leave keep the
        // resident size up: at 400 agents (scripts/benchmark-endpoint) the endpoint grew by
        // 30 MB more with the default. At 128 KiB it spent a quarter more CPU faulting fresh
        // pages in; at 512 KiB no more than with the default. (The agent does the same for
        // its frame buffers, ProcessMemory.)
        ProcessMemoryControl.setMmapThreshold(bytes: 512 << 10)
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "capture-endpoint")
        let environment = ProcessInfo.processInfo.environment
        do {
            let keys = try EndpointCredentials.apiKeys(file: apiKeyFile, environment: environment, dataDirectory: dataDirectory)
            let secret = try EndpointCredentials.webhookSecret(
                file: webhookSecretFile, environment: environment, dataDirectory: dataDirectory)
            // Where a generated secret is, never its value: stderr is the journal under systemd.
            if keys.generated != nil {
                FileHandle.standardError.write(Data("capture-endpoint: generated an API key, kept 0600 in \(keys.source) (show it: cat \(keys.source))\n".utf8))
            }
            if secret.generated != nil {
                FileHandle.standardError.write(Data("capture-endpoint: generated the webhook signing secret, kept 0600 in \(secret.source) (show it: cat \(secret.source))\n".utf8))
            }
            var configuration = EndpointConfiguration(
                dataDirectory: dataDirectory, apiKeys: keys.values, webhookSecret: secret.values[0])
            configuration.host = host
            configuration.port = port
            configuration.publicBaseURL = publicURL
            for assignment in limit { try configuration.limits.set(assignment) }
            configuration.allowPrivateWebhookTargets = allowPrivateWebhookTargets
            configuration.followWebhookRedirects = followWebhookRedirects
            if let webhookCAFile {
                guard FileManager.default.isReadableFile(atPath: webhookCAFile) else {
                    throw ValidationError("--webhook-ca-file: \(webhookCAFile) is not a readable file")
                }
                configuration.webhookCAFile = webhookCAFile
            }
            configuration.injectedExportHoldMarker = environment["CAPTURE_ENDPOINT_TEST_EXPORT_HOLD"]
            configuration.silenceTimeoutSeconds = Int(try parseDuration(silenceTimeout) / 1_000_000_000)
            configuration.pingIntervalSeconds = Int(try parseDuration(pingInterval) / 1_000_000_000)
            logger.info("starting", metadata: [
                "version": "\(EndpointVersion.current)", "data_dir": "\(dataDirectory)", "api_keys": "\(keys.values.count)",
                "api_key_source": "\(keys.source)", "webhook_secret_source": "\(secret.source)",
            ])
            let (application, _) = try buildApplication(configuration, logger: logger)
            try await application.runService()
            logger.info("stopped")
        } catch let error as CaptureError {
            logger.critical("cannot start", metadata: ["code": "\(error.code.rawValue)", "error": "\(error.message)"])
            throw ExitCode(error.code.exitStatus)
        }
    }
}
