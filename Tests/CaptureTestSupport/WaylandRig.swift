public import CaptureCore
public import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A private headless GNOME on Wayland, started by `scripts/rig up --desktop gnome-wayland`:
/// mutter with no X server, PipeWire with its pulse server, the ScreenCast portal, a session
/// bus, run as an unprivileged user (a desktop never runs as root). Everything the tests do
/// in the desktop (the agent, its clients) runs as that user through `rig run`; the consent
/// dialog is answered by synthetic input (`consent`), as a person would.
public final class WaylandRig: Sendable {
    public let stateDirectory: String
    /// The desktop's user.
    public let user: String
    public let uid: UInt32
    /// The desktop session's environment (WAYLAND_DISPLAY, XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS, …).
    public let environment: [String: String]
    /// Monitors as the compositor reports them, in display order, and their connector names.
    public let monitorRects: [PixelRect]
    public let monitorNames: [String]
    /// Where the moving window is, and where the pointer was parked (nil without motion).
    public let motionRect: PixelRect?
    public let pointer: (x: Int, y: Int)?
    public let startupSeconds: Double
    /// A directory of the desktop user's for the tests' files (binaries, output, state).
    public let userDirectory: String

    private let stopped = Mutex(false)

    /// Starts a desktop. `monitors` sit side by side, left to right.
    public static func start(monitors: [RigMonitor] = [RigMonitor(width: 1920, height: 1080)], audio: Bool = true,
                             motion: Bool = true) throws -> WaylandRig {
        let state = FileManager.default.temporaryDirectory
            .appendingPathComponent("capture-wlrig-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        var args = ["up", "--state-dir", state, "--desktop", "gnome-wayland",
                    "--monitors", monitors.map { "\($0.width)x\($0.height)" }.joined(separator: ","),
                    "--owner-pid", "\(getpid())"]
        if !audio { args.append("--no-audio") }
        if !motion { args.append("--no-motion") }
        let started = ContinuousClock.now
        let result: (status: Int32, stdout: String, stderr: String)
        do {
            result = try runProcess(Repo.script("rig"), args, timeout: .seconds(90))
        } catch {
            down(state)
            throw CaptureError(.internalError, "scripts/rig up --desktop gnome-wayland could not run: \(error)")
        }
        guard result.status == 0 else {
            down(state)
            throw CaptureError(.internalError,
                "scripts/rig up --desktop gnome-wayland failed (status \(result.status)): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        var values: [String: String] = [:]
        for line in result.stdout.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            values[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        guard let user = values["RIG_USER"], let uid = values["RIG_UID"].flatMap(UInt32.init) else {
            down(state)
            throw CaptureError(.internalError, "scripts/rig up printed no RIG_USER/RIG_UID: \(result.stdout)")
        }
        let elapsed = ContinuousClock.now - started
        let rig = WaylandRig(state: state, user: user, uid: uid, values: values,
                             startupSeconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        try rig.prepareUserDirectory()
        return rig
    }

    private init(state: String, user: String, uid: UInt32, values: [String: String], startupSeconds: Double) {
        stateDirectory = state
        self.user = user
        self.uid = uid
        var env: [String: String] = [:]
        for key in ["WAYLAND_DISPLAY", "XDG_RUNTIME_DIR", "XDG_SESSION_TYPE", "XDG_CURRENT_DESKTOP", "DBUS_SESSION_BUS_ADDRESS",
                    "HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "PULSE_SERVER"] {
            if let v = values[key] { env[key] = v }
        }
        environment = env
        func rects(_ text: String?) -> [PixelRect] {
            (text ?? "").split(separator: ",").compactMap { spec in
                let parts = spec.split(whereSeparator: { $0 == "x" || $0 == "+" }).compactMap { Int($0) }
                return parts.count == 4 ? PixelRect(x: parts[2], y: parts[3], width: parts[0], height: parts[1]) : nil
            }
        }
        monitorRects = rects(values["RIG_MONITORS"])
        monitorNames = (values["RIG_MONITOR_NAMES"] ?? "").split(separator: ",").map(String.init)
        motionRect = rects(values["RIG_MOTION"]).first
        if let p = values["RIG_POINTER"]?.split(separator: ","), p.count == 2, let x = Int(p[0]), let y = Int(p[1]) {
            pointer = (x, y)
        } else {
            pointer = nil
        }
        self.startupSeconds = startupSeconds
        userDirectory = state + "/work"
    }

    deinit { stop() }

    /// Makes `userDirectory`, owned by the desktop's user, with copies of the binaries the
    /// tests run there (the build directory may not be reachable for that user).
    private func prepareUserDirectory() throws {
        try FileManager.default.createDirectory(atPath: userDirectory + "/bin", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        for name in ["capture-agent", "capturectl"] {
            let source = BuiltProduct.path(name)
            guard FileManager.default.isExecutableFile(atPath: source) else { continue }
            let target = userDirectory + "/bin/" + name
            try? FileManager.default.removeItem(atPath: target)
            try FileManager.default.copyItem(atPath: source, toPath: target)
            chmod(target, 0o755)
        }
        if geteuid() == 0 { try chownTree(userDirectory) }
    }

    /// Gives `path` (and what is in it) to the desktop's user.
    public func chownTree(_ path: String) throws {
        let r = try runProcess("chown", ["-R", "\(uid)", path], timeout: .seconds(20))
        guard r.status == 0 else { throw CaptureError(.ioError, "chown -R \(uid) \(path): \(r.stderr)") }
    }

    /// A new directory of the desktop user's under `userDirectory`.
    public func makeDirectory(_ name: String) throws -> String {
        let path = userDirectory + "/" + name + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        if geteuid() == 0 { try chownTree(path) }
        return path
    }

    /// The path of a binary copied for the desktop's user.
    public func binary(_ name: String) -> String { userDirectory + "/bin/" + name }

    /// The argv that runs `command` as the desktop's user in the desktop session (`env`
    /// entries are added to its environment).
    public func commandLine(_ command: [String], env: [String: String] = [:]) -> [String] {
        var argv = [Repo.script("rig"), "run", "--state-dir", stateDirectory, "--"]
        if !env.isEmpty { argv += ["env"] + env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" } }
        return argv + command
    }

    /// Runs `command` in the desktop to completion.
    public func run(_ command: [String], env: [String: String] = [:], timeout: Duration = .seconds(120)) throws
        -> (status: Int32, stdout: String, stderr: String)
    {
        let argv = commandLine(command, env: env)
        return try runProcess(argv[0], Array(argv.dropFirst()), timeout: timeout)
    }

    /// Starts `command` in the desktop in the background; its output goes to `log`.
    public func spawn(_ command: [String], env: [String: String] = [:], log: String,
                      stdin: FileHandle? = nil, stdout: FileHandle? = nil) throws -> Process {
        let argv = commandLine(command, env: env)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        FileManager.default.createFile(atPath: log, contents: nil)
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = stdout ?? logHandle
        process.standardError = logHandle
        if let stdin { process.standardInput = stdin }
        try process.run()
        return process
    }

    public enum ConsentAnswer {
        case share(monitor: Int)
        case cancel
    }

    /// Answers the portal's consent dialog as a person would (waits for it to appear).
    public func consent(_ answer: ConsentAnswer, timeout: Int = 30) throws {
        var args = ["consent", "--state-dir", stateDirectory]
        switch answer {
        case .share(let monitor): args += ["share", "--monitor", "\(monitor)"]
        case .cancel: args += ["cancel"]
        }
        args += ["--timeout", "\(timeout)"]
        let r = try runProcess(Repo.script("rig"), args, timeout: .seconds(Int64(timeout) + 30))
        guard r.status == 0 else {
            throw CaptureError(.internalError, "rig consent \(answer) failed (status \(r.status)): \(r.stderr)")
        }
    }

    /// `rig <subcommand> --state-dir DIR args...`, which must succeed; returns its output.
    @discardableResult
    public func rig(_ subcommand: String, _ args: [String] = [], timeout: Duration = .seconds(60)) throws -> String {
        let r = try runProcess(Repo.script("rig"), [subcommand, "--state-dir", stateDirectory] + args, timeout: timeout)
        guard r.status == 0 else {
            throw CaptureError(.internalError, "rig \(subcommand) \(args.joined(separator: " ")) failed (status \(r.status)): \(r.stderr)")
        }
        return r.stdout
    }

    /// The PID of the rig's process recorded under `name` ("mutter", "portal", "pipewire", …),
    /// from its pids file (other rigs run as the same user: never look them up by name).
    public func pid(of name: String) throws -> Int32 {
        let text = try String(contentsOfFile: stateDirectory + "/pids", encoding: .utf8)
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count >= 3, fields[2] == name, let pid = Int32(fields[0]) { return pid }
        }
        throw CaptureError(.internalError, "the rig recorded no \(name) in \(stateDirectory)/pids")
    }

    /// Stops the desktop (`rig down`) and removes its state (CAPTURE_RIG_KEEP=1 keeps it). Idempotent.
    public func stop() {
        let first = stopped.withLock { wasStopped in
            defer { wasStopped = true }
            return !wasStopped
        }
        guard first else { return }
        Self.down(stateDirectory)
        if ProcessInfo.processInfo.environment["CAPTURE_RIG_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: stateDirectory)
        }
    }

    private static func down(_ state: String) {
        _ = try? runProcess(Repo.script("rig"), ["down", "--state-dir", state], timeout: .seconds(30))
    }
}
