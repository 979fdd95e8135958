import ArgumentParser
import CaptureControl
import CaptureCore

struct StartCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Start a recording session (startRecording).",
        discussion: """
            Without --channel the daemon records its default channels. --primary alone marks \
            one of the defaults (display:1, mic:default, system_audio:default, as `capturectl \
            channels` lists them) primary.

            \(TokenSource.argvWarning)
            """)

    @Option(name: .long, help: ArgumentHelp("Session id (default: the daemon picks one).", valueName: "id"))
    var session: String?

    @Option(name: .long, help: ArgumentHelp("Read the upload token from this file (`-`: stdin); it must not be readable by others.", valueName: "file"),
            completion: .file())
    var tokenFile: String?

    @Option(name: .long, help: ArgumentHelp("Read the upload token from this environment variable.", valueName: "var"))
    var tokenEnv: String?

    @Option(name: .long, help: ArgumentHelp("When the upload token expires, in Unix seconds.", valueName: "seconds"))
    var tokenExpiresAt: Int64?

    @Option(name: .long, help: ArgumentHelp("Upload endpoint URL.", valueName: "url"))
    var endpoint: String?

    @Option(name: .customLong("channel"), help: ArgumentHelp(
        "A channel to record (display:N, mic:NAME, system_audio:NAME); repeat for more.", valueName: "id"))
    var channels: [String] = []

    @Option(name: .long, help: ArgumentHelp("The primary channel: one of the --channel ids.", valueName: "id"))
    var primary: String?

    @OptionGroup var connection: ConnectionOptions

    /// The channel ids in canonical form (`screen:1` is `display:1`).
    private func canonical(_ text: String) throws(ValidationError) -> String {
        do { return try ChannelID(parsing: text).description } catch { throw ValidationError(error.message) }
    }

    func validate() throws {
        _ = try TokenSource(file: tokenFile, env: tokenEnv)
        let ids = try channels.map(canonical)
        guard Set(ids).count == ids.count else { throw ValidationError("a --channel is named twice") }
        if let primary, !ids.isEmpty, !ids.contains(try canonical(primary)) {
            throw ValidationError("--primary \(primary) is not one of the --channel ids (\(channels.joined(separator: ", ")))")
        }
    }

    func execute() throws(CaptureError) {
        var params: [String: JSONValue] = [:]
        if let session { params["sessionId"] = .string(session) }
        if let source = try? TokenSource(file: tokenFile, env: tokenEnv) {
            params["uploadToken"] = .string(try source.read())
        }
        if let tokenExpiresAt { params["tokenExpiresAt"] = .integer(tokenExpiresAt) }
        if let endpoint { params["endpoint"] = .string(endpoint) }

        let client = try connection.connect()
        let primaryID = try primary.map { (text) throws(CaptureError) in try ChannelID(parsing: text).description }
        var ids = try channels.map { (text) throws(CaptureError) in try ChannelID(parsing: text).description }
        if ids.isEmpty, let primaryID {
            ids = try defaultChannels(client, including: primaryID)
        }
        if !ids.isEmpty {
            params["channels"] = .array(ids.map { .object(["channel_id": .string($0), "is_primary": .bool($0 == primaryID)]) })
        }

        let value = try client.call(ControlCommand.startRecording.rawValue, params: params, timeout: .seconds(60))
        if connection.json { return Output.json(value) }
        let result = try decodeResult(value, of: .startRecording, as: StartRecordingResult.self)
        Output.line("session \(result.sessionId) \(result.state.rawValue), output in \(result.outputDirectory)")
        var table = Table(headers: ["CHANNEL", "TYPE", "NAME"])
        for c in result.channels {
            table.rows.append([c.channelId + (c.isPrimary ? " (primary)" : ""), c.type.rawValue, c.name])
        }
        if !table.rows.isEmpty { Output.line(table.render()) }
    }

    /// The default channels the daemon lists, for `--primary` without `--channel`.
    private func defaultChannels(_ client: ControlClient, including primary: String) throws(CaptureError) -> [String] {
        let defaults = ["display:1", "mic:default", "system_audio:default"]
        let listed = Set(try client.call(.getChannels, as: ChannelsResult.self, timeout: .seconds(30)).channels.map(\.channelId))
        let ids = defaults.filter(listed.contains)
        guard ids.contains(primary) else {
            throw CaptureError(.invalidChannels,
                "--primary \(primary) is not one of the default channels this machine has (\(ids.joined(separator: ", "))); name every channel to record with --channel")
        }
        return ids
    }
}

struct StopCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop",
        abstract: "Stop the recording session and print what each channel recorded (stopRecording).")

    @Option(name: .long, help: ArgumentHelp("The session to stop (default: the current one).", valueName: "id"))
    var session: String?

    @OptionGroup var connection: ConnectionOptions

    func execute() throws(CaptureError) {
        var params: [String: JSONValue] = [:]
        if let session { params["sessionId"] = .string(session) }
        let result = try connection.connect().call(ControlCommand.stopRecording.rawValue, params: params, timeout: .seconds(120))
        if connection.json { return Output.json(result) }
        let stopped = try decodeResult(result, of: .stopRecording, as: StopRecordingResult.self)
        let summary = stopped.summary
        Output.line("session \(stopped.sessionId) \(stopped.state.rawValue) after \(Format.duration(ns: summary.durationNs)), output in \(summary.outputDirectory)")
        if let message = summary.error {
            Output.warn("the session ended with an error: \(summary.errorCode ?? "ERROR"): \(message)")
        }
        let columns: [(header: String, value: (ChannelStatsSnapshot) -> Int)] = [
            ("CAPTURED", \.captured), ("REPEATED", \.repeated), ("LEFT OUT", \.leftOut), ("DROPPED", \.dropped),
            ("ENCODED", \.encoded), ("SILENCE MS", \.silenceFilledMs), ("OVERLAP MS", \.overlapDroppedMs),
            ("DISCONT", \.discontinuities), ("CHUNKS", \.chunks),
        ]
        var table = Table(headers: ["CHANNEL", "TYPE"] + columns.map(\.header) + ["BYTES"],
                          rightAligned: Set(2...(columns.count + 2)))
        for c in summary.channels {
            table.rows.append([c.channel, c.type.rawValue] + columns.map { Format.number($0.value(c)) } + [Format.bytes(Int64(c.bytes))])
        }
        if !table.rows.isEmpty { Output.line(table.render()) }
    }
}

struct PauseCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause",
        abstract: "Pause tracks of the recording (pauseTracks); without --track, all of them.")

    @Option(name: .customLong("track"), help: ArgumentHelp("A track to pause; repeat for more.", valueName: "track"))
    var tracks: [Track] = []

    @OptionGroup var connection: ConnectionOptions

    func execute() throws(CaptureError) {
        try changeTracks(.pauseTracks, tracks, connection)
    }
}

struct ResumeCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "Resume paused tracks (resumeTracks); without --track, all of them.")

    @Option(name: .customLong("track"), help: ArgumentHelp("A track to resume; repeat for more.", valueName: "track"))
    var tracks: [Track] = []

    @OptionGroup var connection: ConnectionOptions

    func execute() throws(CaptureError) {
        try changeTracks(.resumeTracks, tracks, connection)
    }
}

private func changeTracks(_ command: ControlCommand, _ tracks: [Track], _ connection: ConnectionOptions) throws(CaptureError) {
    var params: [String: JSONValue] = [:]
    if !tracks.isEmpty { params["tracks"] = .array(Set(tracks).sorted().map { .string($0.rawValue) }) }
    let value = try connection.connect().call(command.rawValue, params: params, timeout: .seconds(30))
    if connection.json { return Output.json(value) }
    let result = try decodeResult(value, of: command, as: TracksResult.self)
    let done = tracks.isEmpty ? "all tracks" : Set(tracks).sorted().map(\.rawValue).joined(separator: ", ")
    Output.line("\(command == .pauseTracks ? "paused" : "resumed") \(done) at \(Format.duration(ns: result.atNs)); "
        + (result.pausedTracks.isEmpty ? "nothing is paused" : "paused now: \(result.pausedTracks.map(\.rawValue).joined(separator: ", "))"))
}
