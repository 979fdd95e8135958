import CaptureCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Shell helpers for a rig's PulseAudio (pactl, a tone client, kill/restart).
public struct PulseControl {
    public init(rig: TestRig) { self.rig = rig }

    public let rig: TestRig

    public var runtimeDir: String { rig.environment["XDG_RUNTIME_DIR"]! }
    public var server: String { rig.pulseServer! }

    public var env: [String: String] {
        rig.childEnvironment(["DISPLAY": nil])
    }

    @discardableResult
    public func pactl(_ args: String...) throws -> String {
        let r = try runProcess("pactl", args, environment: env, timeout: .seconds(10))
        guard r.status == 0 else {
            throw CaptureError(.internalError, "pactl \(args.joined(separator: " ")) failed: \(r.stderr)")
        }
        return r.stdout
    }

    /// Starts `ffmpeg` playing a sine (-9 dBFS RMS) into `sink`; returns its PID. The caller kills
    /// it (`kill(pid)`). 200 ms of buffer in the server, so a busy machine does not starve it (the
    /// sink still runs at the 20 ms its monitor's recorder asks for).
    public func startTone(frequency: Int, sink: String, name: String) throws -> pid_t {
        let args = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
            "-f", "lavfi", "-i", "sine=frequency=\(frequency):sample_rate=48000",
            "-af", "volume=12dB", "-ac", "2",
            "-f", "pulse", "-buffer_duration", "200", "-name", name, "-device", sink, name,
        ]
        return try spawn(args)
    }

    public func spawn(_ args: [String]) throws -> pid_t {
        var pid: pid_t = 0
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let envList = env.map { "\($0.key)=\($0.value)" }
        let cArgs = args.map { strdup($0) } + [nil]
        let cEnv = envList.map { strdup($0) } + [nil]
        defer { for p in cArgs + cEnv { free(p) } }
        let rc = posix_spawnp(&pid, args[0], &actions, nil, cArgs, cEnv)
        guard rc == 0 else {
            throw CaptureError(.internalError, "cannot start \(args[0]): \(String(cString: strerror(rc)))")
        }
        return pid
    }

    /// SIGTERM, then SIGKILL after 2 s; reaps it when it is our child.
    public static func kill(_ pid: pid_t) {
        guard pid > 0 else { return }
        Glibc.kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(2)
        var status: Int32 = 0
        while Date() < deadline {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || (r < 0 && Glibc.kill(pid, 0) != 0) { return }
            usleep(20_000)
        }
        Glibc.kill(pid, SIGKILL)
        _ = waitpid(pid, &status, 0)
    }

    /// The PID of the rig's (or our restarted) pulseaudio daemon.
    public func daemonPID() throws -> pid_t {
        let text = try String(contentsOfFile: runtimeDir + "/pulse/pid", encoding: .utf8)
        guard let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 else {
            throw CaptureError(.internalError, "no pulseaudio pid in \(runtimeDir)/pulse/pid")
        }
        return pid
    }

    /// Kills the daemon with SIGKILL (a crash, as far as clients can tell) and waits until its
    /// socket refuses connections.
    public func killDaemon() throws {
        let pid = try daemonPID()
        Glibc.kill(pid, SIGKILL)
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            if let r = try? runProcess("pactl", ["--server", server, "info"], environment: env, timeout: .seconds(2)),
               r.status != 0 { return }
            usleep(20_000)
        }
        throw CaptureError(.internalError, "pulseaudio \(pid) still answers after SIGKILL")
    }

    /// Starts a fresh daemon on the same runtime dir with a null sink "spk" (the default sink).
    /// Returns its PID; the caller kills it.
    public func restartDaemon() throws -> pid_t {
        // A killed daemon may linger as a zombie until reaped; its pid file would make the new
        // one refuse to start ("Daemon already running").
        try? FileManager.default.removeItem(atPath: runtimeDir + "/pulse/pid")
        let r = try runProcess("pulseaudio", [
            "-D", "--exit-idle-time=-1", "--disallow-exit", "-n", "--use-pid-file=yes",
            "--log-target=file:\(rig.stateDirectory)/pulse-restarted.log",
            "--load=module-null-sink sink_name=spk rate=48000 channels=2",
            "--load=module-native-protocol-unix auth-anonymous=1",
        ], environment: env.merging(["PULSE_STATE_PATH": rig.stateDirectory + "/pulse-state"]) { $1 },
           timeout: .seconds(20))
        guard r.status == 0 else {
            throw CaptureError(.internalError, "restarting pulseaudio failed: \(r.stderr)")
        }
        return try daemonPID()
    }
}

