import CaptureCore
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the repository lives, found from this file's path (three levels up from
/// Tests/CaptureTestSupport/RunProcess.swift), to reach scripts/ and build products.
public enum Repo {
    public static var root: String {
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()   // CaptureTestSupport
            .deletingLastPathComponent()   // Tests
            .deletingLastPathComponent()   // repo root
            .path
    }

    /// `scripts/<name>` in the repository.
    public static func script(_ name: String) -> String { root + "/scripts/" + name }
}

/// Runs a program to completion and returns its exit status and output.
///
/// - `exe`: an absolute path, or a name looked up in PATH (the PATH of `environment`
///   when given, else this process's).
/// - `environment`: the child's COMPLETE environment; nil inherits this process's.
/// - `timeout`: when it passes, the child's process group gets SIGTERM, then SIGKILL
///   2 s later, and this throws.
///
/// The child runs in its own process group with stdin from /dev/null and all signal
/// dispositions reset to default. `status` is the exit code, or 128 + the signal
/// number if a signal ended it (as a shell reports it). Output that is not UTF-8 is
/// decoded lossily; use `runProcessData` for binary output.
public func runProcess(
    _ exe: String, _ args: [String], environment: [String: String]? = nil, timeout: Duration
) throws -> (status: Int32, stdout: String, stderr: String) {
    let r = try runProcessData(exe, args, environment: environment, timeout: timeout)
    return (r.status, String(decoding: r.stdout, as: UTF8.self), r.stderr)
}

/// `runProcess` with stdout as raw bytes (e.g. decoded PCM from ffmpeg).
public func runProcessData(
    _ exe: String, _ args: [String], environment: [String: String]? = nil, timeout: Duration
) throws -> (status: Int32, stdout: [UInt8], stderr: String) {
    let env = environment ?? ProcessInfo.processInfo.environment
    let path = try resolveExecutable(exe, path: env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin")
    let commandLine = ([exe] + args).joined(separator: " ")

    var outPipe: [Int32] = [-1, -1]
    var errPipe: [Int32] = [-1, -1]
    guard pipe(&outPipe) == 0 else {
        throw CaptureError(.ioError, "pipe failed (\(String(cString: strerror(errno)))) while starting \(exe)")
    }
    guard pipe(&errPipe) == 0 else {
        let e = errno
        close(outPipe[0]); close(outPipe[1])
        throw CaptureError(.ioError, "pipe failed (\(String(cString: strerror(e)))) while starting \(exe)")
    }
    // Close-on-exec, so other children (and this one, after the dup2s) don't hold them.
    // (pipe2 with O_CLOEXEC is not visible to Swift without _GNU_SOURCE.)
    for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    var readEnds = [outPipe[0], errPipe[0]]
    defer { for fd in readEnds where fd >= 0 { close(fd) } }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)

    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var allSignals = sigset_t()
    sigfillset(&allSignals)
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    posix_spawnattr_setsigdefault(&attr, &allSignals)
    posix_spawnattr_setsigmask(&attr, &noSignals)
    posix_spawnattr_setpgroup(&attr, 0)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))

    var argv: [UnsafeMutablePointer<CChar>?] = ([exe] + args).map { strdup($0) } + [nil]
    var envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        for p in argv { free(p) }
        for p in envp { free(p) }
    }
    var pid: pid_t = 0
    let spawnError = posix_spawn(&pid, path, &actions, &attr, &argv, &envp)
    close(outPipe[1])
    close(errPipe[1])
    guard spawnError == 0 else {
        throw CaptureError(.ioError, "cannot start \(path): \(String(cString: strerror(spawnError)))")
    }

    var stdoutBytes: [UInt8] = []
    var stderrBytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    var exitStatus: Int32?
    var exitedAt: ContinuousClock.Instant?
    var timedOut = false

    func reap(_ flags: Int32) -> Bool {
        var status: Int32 = 0
        let r = waitpid(pid, &status, flags)
        if r == pid {
            let signal = status & 0x7f
            exitStatus = signal == 0 ? (status >> 8) & 0xff : 128 + signal
            return true
        }
        if r < 0 && errno == ECHILD { exitStatus = exitStatus ?? -1; return true }
        return false
    }

    while true {
        if exitStatus == nil, reap(WNOHANG) { exitedAt = clock.now }
        let open = readEnds.filter { $0 >= 0 }
        if open.isEmpty, exitStatus != nil { break }
        // A grandchild may keep the pipes open after the child exits (a daemon that
        // forgot to redirect); give it 1 s, then stop reading.
        if let exitedAt, clock.now - exitedAt > .seconds(1) { break }
        if exitStatus == nil && clock.now >= deadline {
            timedOut = true
            kill(-pid, SIGTERM)
            let killAt = clock.now.advanced(by: .seconds(2))
            while !reap(WNOHANG) {
                if clock.now >= killAt { kill(-pid, SIGKILL); _ = reap(0); break }
                usleep(20_000)
            }
            break
        }
        if open.isEmpty { usleep(10_000); continue }
        var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let n = poll(&fds, nfds_t(fds.count), 50)
        if n < 0 && errno != EINTR {
            throw CaptureError(.ioError, "poll failed while running \(commandLine): \(String(cString: strerror(errno)))")
        }
        guard n > 0 else { continue }
        for p in fds where p.revents != 0 {
            let count = buffer.withUnsafeMutableBytes { read(p.fd, $0.baseAddress, $0.count) }
            if count > 0 {
                if p.fd == readEnds[0] {
                    stdoutBytes.append(contentsOf: buffer[0..<count])
                } else {
                    stderrBytes.append(contentsOf: buffer[0..<count])
                }
            } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                close(p.fd)
                if p.fd == readEnds[0] { readEnds[0] = -1 } else { readEnds[1] = -1 }
            }
        }
    }
    let stderrText = String(decoding: stderrBytes, as: UTF8.self)
    if timedOut {
        throw CaptureError(
            .internalError,
            "\(commandLine) did not finish within \(timeout); killed it. stderr: \(stderrText.suffix(2000))")
    }
    return (exitStatus ?? -1, stdoutBytes, stderrText)
}

func resolveExecutable(_ exe: String, path: String) throws -> String {
    if exe.contains("/") {
        guard access(exe, X_OK) == 0 else {
            throw CaptureError(.ioError, "\(exe) is missing or not executable")
        }
        return exe
    }
    for dir in path.split(separator: ":") where !dir.isEmpty {
        let candidate = "\(dir)/\(exe)"
        if access(candidate, X_OK) == 0 { return candidate }
    }
    throw CaptureError(.ioError, "\(exe) not found in PATH (\(path)); run scripts/install-deps.sh")
}

/// Executables of this package, as built for the tests.
public enum BuiltProduct {
    /// `name` beside the test bundle (where `swift build --build-tests` puts
    /// products), else in .build/debug or .build/release.
    public static func path(_ name: String) -> String {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if dir.lastPathComponent.hasSuffix(".xctest") || dir.path.contains(".xctest/") {
            while dir.pathComponents.count > 1 && !dir.lastPathComponent.hasSuffix(".xctest") { dir.deleteLastPathComponent() }
            dir.deleteLastPathComponent()
        }
        let candidate = dir.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        for config in ["debug", "release"] {
            let p = Repo.root + "/.build/\(config)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return candidate
    }
}
