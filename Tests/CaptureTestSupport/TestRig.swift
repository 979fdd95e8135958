public import CaptureCore
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
public import Darwin
#endif

/// One monitor of a rig. Several monitors sit side by side, top-aligned, left to right.
public struct RigMonitor: Sendable, Hashable {
    public var width: Int
    public var height: Int

    public init(width: Int, height: Int) {
        self.width = width
        self.height = height
    }
}

/// What a rig provides.
public struct RigOptions: Sendable, Hashable {
    /// One monitor runs on Xvfb; more than one on Xorg with the dummy driver.
    public var monitors: [RigMonitor]
    /// A private PulseAudio: null sink "spk" (the default sink) carrying a 1 kHz tone,
    /// so "spk.monitor" carries it; source "mic" (the default source) carrying 440 Hz.
    /// Both tones are sines at -6 dBFS peak (-9 dBFS RMS), delivered every 20 ms.
    public var audio: Bool
    /// A moving picture at 30 fps on the top-left quarter of the first monitor (960x540 on
    /// 1920x1080); the pointer parked away from it (1500,900 on 1920x1080).
    public var motion: Bool
    /// What moves (scripts/rig --motion-source): `pattern`, scripts/rig-motion's bars, text-like
    /// marks and a crossing block, drawn by the X server for a few per cent of a core;
    /// `testsrc2`, ffplay's test picture, about a third of a core, for tests whose
    /// measurement depends on natural-looking detail (an encoder's quality settings).
    public var motionSource: MotionSource
    public enum MotionSource: String, Sendable, Hashable { case pattern, testsrc2 }
    /// Which server speaks the PulseAudio protocol: "pulseaudio" or "pipewire" (pipewire-pulse,
    /// with pipewire and wireplumber on a private D-Bus session bus). Default: the environment's
    /// `CAPTURE_TEST_AUDIO_SERVER`, else pulseaudio, so the whole audio suite runs against
    /// either server (scripts/test runs it against both).
    public var audioServer: String
    /// How the tones are played (scripts/rig --tones): `shared`, one client, the sinks warmed up
    /// on the low latency and checked delivering; `separate`, one real-time client per tone and
    /// nothing warmed up, the plain way a user sets it up (a recorder attached at once may wait
    /// for its first byte).
    public var tones: Tones
    public enum Tones: String, Sendable, Hashable { case shared, separate }

    public static var defaultAudioServer: String {
        let value = ProcessInfo.processInfo.environment["CAPTURE_TEST_AUDIO_SERVER"] ?? ""
        return value.isEmpty ? "pulseaudio" : value
    }

    public init(
        monitors: [RigMonitor] = [RigMonitor(width: 1920, height: 1080)],
        audio: Bool = true,
        motion: Bool = true,
        audioServer: String = RigOptions.defaultAudioServer,
        tones: Tones = .shared,
        motionSource: MotionSource = .pattern
    ) {
        self.monitors = monitors
        self.audio = audio
        self.motion = motion
        self.motionSource = motionSource
        self.audioServer = audioServer
        self.tones = tones
    }
}

/// A private headless desktop started by `scripts/rig up` (see that script for the
/// details). Its servers are separate processes, killed by PID on `stop()`, on
/// deinit, at process exit, and by the script's watchdog if this process dies
/// without running exit handlers.
public final class TestRig: Sendable {
    /// The X display, e.g. ":3".
    public let display: String
    /// e.g. "unix:/tmp/capture-rig-XXXX/xdg/pulse/native"; nil without audio.
    public let pulseServer: String?
    /// DISPLAY, and with audio PULSE_SERVER and XDG_RUNTIME_DIR (pulse's runtime dir).
    public let environment: [String: String]
    /// The rig's state directory (logs: x.log, xorg.log, pulse.log, tones.log, motion.log).
    public let stateDirectory: String
    public let options: RigOptions
    /// Monitors as the X server reports them (xrandr --listmonitors), left to right.
    public let monitorRects: [PixelRect]
    /// Where the moving test pattern is; nil without motion.
    public let motionRect: PixelRect?
    /// Where the pointer was parked; nil without motion.
    public let pointer: (x: Int, y: Int)?
    /// How long `rig up` took.
    public let startupSeconds: Double
    /// "pulseaudio" or "pipewire" (nil without audio): `RigOptions.audioServer`.
    public let audioServer: String?

    private let stopped = Mutex(false)

    // MARK: starting

    private static let sharedRig: Result<TestRig, CaptureError> = {
        do {
            return .success(try TestRig.start(RigOptions()))
        } catch let error as CaptureError {
            return .failure(error)
        } catch {
            return .failure(CaptureError(.internalError, "starting the shared rig failed: \(error)"))
        }
    }()

    /// The rig with default options, started once per process (thread-safe) and
    /// stopped when the process exits. A failure to start is remembered and rethrown.
    public static func shared() throws -> TestRig {
        try sharedRig.get()
    }

    /// A private rig; stop it with `stop()` (or let it go: deinit stops it).
    public static func start(_ options: RigOptions) throws -> TestRig {
        guard !options.monitors.isEmpty else {
            throw CaptureError(.invalidRequest, "a rig needs at least one monitor")
        }
        let state = FileManager.default.temporaryDirectory
            .appendingPathComponent("capture-rig-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        var args = [
            "up", "--state-dir", state,
            "--monitors", options.monitors.map { "\($0.width)x\($0.height)" }.joined(separator: ","),
            "--owner-pid", "\(getpid())",
        ]
        if !options.audio {
            args.append("--no-audio")
        } else {
            args += ["--audio-server", options.audioServer, "--tones", options.tones.rawValue]
        }
        args += options.motion ? ["--motion-source", options.motionSource.rawValue] : ["--no-motion"]

        Registry.track(state)
        let started = ContinuousClock.now
        let result: (status: Int32, stdout: String, stderr: String)
        do {
            result = try runProcess(Repo.script("rig"), args, timeout: .seconds(60))
        } catch {
            Registry.untrack(state)
            TestRig.runDown(state)
            try? FileManager.default.removeItem(atPath: state)
            throw CaptureError(.internalError, "scripts/rig up could not run: \(error)")
        }
        let elapsed = ContinuousClock.now - started
        guard result.status == 0 else {
            Registry.untrack(state)
            TestRig.runDown(state)
            try? FileManager.default.removeItem(atPath: state)
            throw CaptureError(
                .internalError,
                "scripts/rig up failed (status \(result.status)): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        var values: [String: String] = [:]
        for line in result.stdout.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            values[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        guard let display = values["DISPLAY"] else {
            Registry.untrack(state)
            TestRig.runDown(state)
            try? FileManager.default.removeItem(atPath: state)
            throw CaptureError(.internalError, "scripts/rig up printed no DISPLAY: \(result.stdout)")
        }
        return TestRig(
            display: display, values: values, state: state, options: options,
            startupSeconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    private init(display: String, values: [String: String], state: String, options: RigOptions, startupSeconds: Double) {
        self.display = display
        self.pulseServer = values["PULSE_SERVER"]
        var env = ["DISPLAY": display]
        for key in ["PULSE_SERVER", "XDG_RUNTIME_DIR"] {
            if let v = values[key] { env[key] = v }
        }
        self.environment = env
        self.stateDirectory = state
        self.options = options
        self.monitorRects = (values["RIG_MONITORS"] ?? "").split(separator: ",").compactMap { TestRig.parseRect($0) }
        self.motionRect = values["RIG_MOTION"].flatMap { TestRig.parseRect(Substring($0)) }
        if let p = values["RIG_POINTER"]?.split(separator: ","), p.count == 2, let x = Int(p[0]), let y = Int(p[1]) {
            self.pointer = (x, y)
        } else {
            self.pointer = nil
        }
        self.startupSeconds = startupSeconds
        self.audioServer = values["RIG_AUDIO_SERVER"]
    }

    deinit { stop() }

    // MARK: using

    /// Points this process at the rig: sets DISPLAY, PULSE_SERVER and XDG_RUNTIME_DIR
    /// (library code reads them). Without audio it unsets PULSE_SERVER.
    /// Process-wide: don't call it from tests that run concurrently on different rigs.
    public func makeCurrent() {
        setenv("DISPLAY", display, 1)
        if let pulseServer, let xdg = environment["XDG_RUNTIME_DIR"] {
            setenv("PULSE_SERVER", pulseServer, 1)
            setenv("XDG_RUNTIME_DIR", xdg, 1)
        } else {
            unsetenv("PULSE_SERVER")
        }
    }

    /// This process's environment with the rig's variables on top (for runProcess).
    public func childEnvironment(_ overrides: [String: String?] = [:]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        if pulseServer == nil { env["PULSE_SERVER"] = nil }
        for (k, v) in overrides { env[k] = v }
        return env
    }

    /// Kills the rig's processes (scripts/rig down) and removes its state directory
    /// (set CAPTURE_RIG_KEEP=1 to keep it and its logs). Idempotent.
    public func stop() {
        let first = stopped.withLock { wasStopped in
            defer { wasStopped = true }
            return !wasStopped
        }
        guard first else { return }
        TestRig.runDown(stateDirectory)
        Registry.untrack(stateDirectory)
        if ProcessInfo.processInfo.environment["CAPTURE_RIG_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: stateDirectory)
        }
    }

    // MARK: internals

    fileprivate static func runDown(_ state: String) {
        _ = try? runProcess(Repo.script("rig"), ["down", "--state-dir", state], timeout: .seconds(20))
    }

    private static func parseRect(_ text: Substring) -> PixelRect? {
        // WxH+X+Y
        let parts = text.split(whereSeparator: { $0 == "x" || $0 == "+" }).compactMap { Int($0) }
        guard parts.count == 4 else { return nil }
        return PixelRect(x: parts[2], y: parts[3], width: parts[0], height: parts[1])
    }
}

/// State directories of rigs that are up, so an exit handler can take them down
/// (the shared rig is never released, so its deinit never runs).
private enum Registry {
    static let live = Mutex<Set<String>>([])
    static let installed = Mutex(false)

    static func track(_ state: String) {
        live.withLock { _ = $0.insert(state) }
        let install = installed.withLock { done in
            defer { done = true }
            return !done
        }
        if install { atexit { Registry.downAll() } }
    }

    static func untrack(_ state: String) {
        live.withLock { _ = $0.remove(state) }
    }

    static func downAll() {
        // At exit another thread may be stuck holding the lock: don't wait for it
        // (the rig's watchdog still takes everything down within a second).
        let states: [String] = live.withLockIfAvailable { (set: inout Set<String>) -> [String] in
            defer { set.removeAll() }
            return Array(set)
        } ?? []
        for state in states {
            TestRig.runDown(state)
            if ProcessInfo.processInfo.environment["CAPTURE_RIG_KEEP"] == nil {
                try? FileManager.default.removeItem(atPath: state)
            }
        }
    }
}
