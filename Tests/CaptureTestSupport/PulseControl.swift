import CaptureCore
public import Foundation
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
        return try spawn(PulseControl.realtime + args)
    }

    /// `chrt -r 10` where the kernel allows it, as scripts/rig runs its own tone client and the
    /// audio server: on a busy machine a tone client scheduled late leaves holes of silence
    /// that a test would blame on the capture.
    public static let realtime: [String] = {
        let r = try? runProcess("chrt", ["-r", "10", "true"], timeout: .seconds(5))
        return r?.status == 0 ? ["chrt", "-r", "10"] : []
    }()

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

    /// Kills the audio server with SIGKILL (a crash, as far as clients can tell: pulseaudio, or
    /// pipewire-pulse with pipewire and wireplumber) and waits until its socket refuses
    /// connections (`scripts/rig audio-kill`).
    public func killDaemon() throws {
        let r = try runProcess(Repo.script("rig"), ["audio-kill", "--state-dir", rig.stateDirectory], timeout: .seconds(20))
        guard r.status == 0 else {
            throw CaptureError(.internalError, "rig audio-kill failed (status \(r.status)): \(r.stderr)")
        }
    }

    /// Starts a fresh audio server of the rig's kind on the same runtime dir with a null sink
    /// "spk" (the default sink), no tones (`scripts/rig audio-start`). Returns the PID of its
    /// first process; `rig down` stops all of them.
    public func restartDaemon() throws -> pid_t {
        let r = try runProcess(Repo.script("rig"), ["audio-start", "--state-dir", rig.stateDirectory], timeout: .seconds(30))
        guard r.status == 0 else {
            throw CaptureError(.internalError, "rig audio-start failed (status \(r.status)): \(r.stderr)")
        }
        let pids = r.stdout.split(separator: "\n").compactMap { line in
            line.hasPrefix("PID=") ? pid_t(line.dropFirst(4)) : nil
        }
        guard let first = pids.first else {
            throw CaptureError(.internalError, "rig audio-start printed no PID: \(r.stdout)")
        }
        return first
    }
}

