import Foundation
@testable import SystemdSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// sd_listen_fds(3) semantics, the listening-socket check, and one real
/// activation by systemd-socket-activate(1).
final class SocketActivationTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        // The child side of testSystemdSocketActivateEndToEnd needs no directory.
        guard ProcessInfo.processInfo.environment[ActivatedChild.marker] == nil else { return }
        directory = try makeTemporaryDirectory("activation")
    }

    override func tearDown() {
        if !directory.isEmpty { try? FileManager.default.removeItem(atPath: directory) }
    }

    // MARK: Environment that passes nothing to this process

    func testNoVariablesMeansNoSockets() {
        XCTAssertEqual(SocketActivation.takeListeningSockets(environment: [:], unsetEnvironment: false), [])
        XCTAssertEqual(SocketActivation.takeListeningSockets(environment: ["LISTEN_FDS": "1"], unsetEnvironment: false), [])
        XCTAssertEqual(SocketActivation.takeListeningSockets(environment: ["LISTEN_PID": "\(getpid())"], unsetEnvironment: false), [])
    }

    func testListenPIDOfAnotherProcessMeansNoSockets() {
        // Inherited from a socket-activated parent: the descriptors are not ours.
        for pid in ["\(getppid())", "1", "\(getpid() + 1)"] {
            let env = ["LISTEN_PID": pid, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "control"]
            XCTAssertEqual(SocketActivation.takeListeningSockets(environment: env, unsetEnvironment: false), [], pid)
        }
    }

    func testMalformedVariablesMeanNoSockets() {
        let pid = "\(getpid())"
        for (listenPID, listenFDs) in [("x", "1"), ("", "1"), ("-\(pid)", "1"), (" \(pid)", "1"),
                                       (pid, "0"), (pid, ""), (pid, "one"), (pid, "-1"), (pid, "99999999999")] {
            let env = ["LISTEN_PID": listenPID, "LISTEN_FDS": listenFDs]
            XCTAssertEqual(SocketActivation.takeListeningSockets(environment: env, unsetEnvironment: false), [],
                           "LISTEN_PID=\(listenPID) LISTEN_FDS=\(listenFDs)")
        }
    }

    func testUnsetEnvironmentRemovesTheVariablesWhateverTheOutcome() {
        setenv("LISTEN_PID", "\(getppid())", 1)
        setenv("LISTEN_FDS", "1", 1)
        setenv("LISTEN_FDNAMES", "control", 1)
        defer { unsetenv("LISTEN_PID"); unsetenv("LISTEN_FDS"); unsetenv("LISTEN_FDNAMES") }

        XCTAssertEqual(SocketActivation.takeListeningSockets(unsetEnvironment: false), [])
        XCTAssertEqual(getenv("LISTEN_FDS").map { String(cString: $0) }, "1")

        XCTAssertEqual(SocketActivation.takeListeningSockets(), [])   // unsets by default
        XCTAssertNil(getenv("LISTEN_PID"))
        XCTAssertNil(getenv("LISTEN_FDS"))
        XCTAssertNil(getenv("LISTEN_FDNAMES"))
    }

    func testFileDescriptorNamesParsing() {
        XCTAssertEqual(SocketActivation.names(nil, count: 2), [nil, nil])
        XCTAssertEqual(SocketActivation.names("control", count: 1), ["control"])
        XCTAssertEqual(SocketActivation.names("control:extra", count: 2), ["control", "extra"])
        XCTAssertEqual(SocketActivation.names("control::x", count: 3), ["control", nil, "x"])
        // Not one name per descriptor: no names (sd_listen_fds_with_names fails), the sockets stay.
        XCTAssertEqual(SocketActivation.names("control:extra", count: 1), [nil])
        XCTAssertEqual(SocketActivation.names("control", count: 2), [nil, nil])
        XCTAssertEqual(SocketActivation.names("", count: 1), [nil])
    }

    // MARK: The listening-socket check on real descriptors

    func testListeningUnixStreamSocketPasses() throws {
        let fd = try makeUnixStreamSocket(path: directory + "/listening.sock", listening: true)
        defer { close(fd) }
        XCTAssertNoThrow(try SocketActivation.requireListeningUnixStreamSocket(fd))
        XCTAssertTrue(SocketActivation.isListeningUnixStreamSocket(fd))
    }

    func testWrongDescriptorsAreRejectedWithAReason() throws {
        func reason(_ fd: Int32) -> String {
            do {
                try SocketActivation.requireListeningUnixStreamSocket(fd)
                return "accepted"
            } catch {
                XCTAssertFalse(SocketActivation.isListeningUnixStreamSocket(fd))
                return error.message
            }
        }

        let bound = try makeUnixStreamSocket(path: directory + "/bound.sock", listening: false)
        defer { close(bound) }
        XCTAssertEqual(reason(bound), "fd \(bound) is an AF_UNIX stream socket that is not listening (a connection, or Accept=yes)")

        var pair: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair), 0)
        defer { close(pair[0]); close(pair[1]) }
        XCTAssertTrue(reason(pair[0]).contains("not listening"), reason(pair[0]))

        let datagram = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(datagram) }
        XCTAssertEqual(withUnixAddress(directory + "/datagram.sock") { bind(datagram, $0, $1) }, 0)
        XCTAssertEqual(reason(datagram), "fd \(datagram) is a datagram (ListenDatagram=) socket, not a stream socket (ListenStream=)")

        let seqpacket = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(seqpacket) }
        XCTAssertEqual(withUnixAddress(directory + "/seqpacket.sock") { bind(seqpacket, $0, $1) }, 0)
        XCTAssertEqual(listen(seqpacket, 4), 0)
        XCTAssertTrue(reason(seqpacket).contains("sequential-packet"), reason(seqpacket))

        let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(tcp) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound4 = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(tcp, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(bound4, 0)
        XCTAssertEqual(listen(tcp, 4), 0)
        XCTAssertEqual(reason(tcp), "fd \(tcp) is an AF_INET socket, not AF_UNIX (the control socket is ListenStream= with a path)")

        var pipeFDs: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&pipeFDs), 0)
        defer { close(pipeFDs[0]); close(pipeFDs[1]) }
        XCTAssertEqual(reason(pipeFDs[0]), "fd \(pipeFDs[0]) is not a socket (a pipe)")

        let file = open(directory, O_RDONLY | O_CLOEXEC)
        defer { close(file) }
        XCTAssertEqual(reason(file), "fd \(file) is not a socket (a directory)")

        let closed = dup(pipeFDs[0])
        close(closed)
        XCTAssertEqual(reason(closed), "fd \(closed) is not an open descriptor (Bad file descriptor)")
    }

    // MARK: End to end: systemd-socket-activate execs this test bundle

    /// systemd-socket-activate(1) binds two sockets, waits for a connection,
    /// then execs this test bundle (running only this test) with fds 3 and 4
    /// and LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES set, exactly as systemd starts a
    /// socket-activated service. The child takes the sockets, checks them,
    /// answers the waiting connection on fd 3 and writes a report.
    func testSystemdSocketActivateEndToEnd() throws {
        if ProcessInfo.processInfo.environment[ActivatedChild.marker] != nil {
            try ActivatedChild.run()
            return
        }
        let activator = "/usr/bin/systemd-socket-activate"
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: activator), "\(activator) is missing (apt-get install systemd)")
        let bundle = try XCTUnwrap(ActivatedChild.testBundleExecutable(), "cannot find the test bundle executable from \(CommandLine.arguments)")
        let control = directory + "/control.sock"
        let extra = directory + "/extra.sock"
        let report = directory + "/report.json"
        let log = directory + "/child.log"
        XCTAssertTrue(FileManager.default.createFile(atPath: log, contents: nil))

        let process = Process()
        process.executableURL = URL(fileURLWithPath: activator)
        process.arguments = [
            "--listen=" + control, "--listen=" + extra, "--fdname=control:extra",
            "--setenv=\(ActivatedChild.marker)=1", "--setenv=SYSTEMD_SUPPORT_REPORT=\(report)",
            // The variables the test bundle needs to start at all.
            "--setenv=PATH=\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")",
            "--setenv=HOME=\(NSHomeDirectory())",
        ] + (ProcessInfo.processInfo.environment["LD_LIBRARY_PATH"].map { ["--setenv=LD_LIBRARY_PATH=\($0)"] } ?? [])
          + ["--", bundle] + ActivatedChild.testSelectionArguments
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        defer { try? logHandle.close() }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = logHandle
        process.standardError = logHandle
        try process.run()
        defer { if process.isRunning { process.terminate() } }

        // The activator listens first and execs the service on the first connection.
        var client: Int32 = -1
        let deadline = ContinuousClock.now + .seconds(20)
        while client < 0 && ContinuousClock.now < deadline && process.isRunning {
            client = connectUnixStream(path: control)
            if client < 0 { usleep(20_000) }
        }
        XCTAssertGreaterThanOrEqual(client, 0, "could not connect to \(control); activator log: \(childLog(log))")
        guard client >= 0 else { return }
        defer { close(client) }

        let greeting = readAll(client, timeoutMilliseconds: 60_000)
        let exited = waitForExit(process, timeout: .seconds(60))
        XCTAssertTrue(exited, "the activated test bundle did not exit; log: \(childLog(log))")
        XCTAssertEqual(process.terminationStatus, 0, "activated child failed; log: \(childLog(log))")

        let data = try Data(contentsOf: URL(fileURLWithPath: report))
        let result = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any], String(decoding: data, as: UTF8.self))
        let childPID = try XCTUnwrap(result["pid"] as? Int)
        // LISTEN_PID named the exec'ed child itself: the activator's own pid.
        XCTAssertEqual(childPID, Int(process.processIdentifier))
        XCTAssertEqual(greeting, "served by \(childPID) on control\n")
        XCTAssertEqual(result["fds"] as? [Int], [3, 4])
        XCTAssertEqual(result["names"] as? [String], ["control", "extra"])
        XCTAssertEqual(result["paths"] as? [String], [control, extra])
        XCTAssertEqual(result["closeOnExec"] as? [Bool], [true, true])
        XCTAssertEqual(result["checks"] as? [String], ["ok", "ok"])
        XCTAssertEqual(result["environmentLeft"] as? [String], [])
        XCTAssertEqual(result["secondTake"] as? Int, 0)
    }

    private func childLog(_ path: String) -> String {
        String((try? String(contentsOfFile: path, encoding: .utf8))?.suffix(4000) ?? "")
    }

    private func waitForExit(_ process: Process, timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline { usleep(20_000) }
        if process.isRunning { return false }
        process.waitUntilExit()
        return true
    }
}

/// The activated side of testSystemdSocketActivateEndToEnd, running in the
/// test bundle that systemd-socket-activate exec'ed.
enum ActivatedChild {
    static let marker = "SYSTEMD_SUPPORT_ACTIVATED_CHILD"

    /// The XCTest arguments that run only testSystemdSocketActivateEndToEnd.
    static let testSelectionArguments = ["SystemdSupportTests.SocketActivationTests/testSystemdSocketActivateEndToEnd"]

    /// This test bundle's executable (on Linux the .xctest file is the executable).
    static func testBundleExecutable() -> String? {
        let path = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
        if path.hasSuffix(".xctest"), FileManager.default.isExecutableFile(atPath: path) { return path }
        if let resolved = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"),
           FileManager.default.isExecutableFile(atPath: resolved) { return resolved }
        return nil
    }

    static func run() throws {
        let reportPath = try XCTUnwrap(ProcessInfo.processInfo.environment["SYSTEMD_SUPPORT_REPORT"])
        let sockets = SocketActivation.takeListeningSockets()
        let left = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"].filter { (name: String) in getenv(name) != nil }
        let again = SocketActivation.takeListeningSockets()
        var checks: [String] = []
        for socket in sockets {
            do {
                try SocketActivation.requireListeningUnixStreamSocket(socket.fd)
                checks.append("ok")
            } catch {
                checks.append(error.message)
            }
        }
        // Serve the connection that triggered the activation on the "control" socket.
        if let control = sockets.first(where: { $0.name == "control" }) {
            var pfd = pollfd(fd: control.fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 20_000) > 0 {
                let connection = accept(control.fd, nil, nil)
                if connection >= 0 {
                    let text = Array("served by \(getpid()) on control\n".utf8)
                    _ = text.withUnsafeBytes { write(connection, $0.baseAddress, $0.count) }
                    close(connection)
                }
            }
        }
        let report: [String: Any] = [
            "pid": Int(getpid()),
            "fds": sockets.map { Int($0.fd) },
            "names": sockets.map { $0.name ?? "<nil>" },
            "paths": sockets.map { boundPath($0.fd) },
            "closeOnExec": sockets.map { fcntl($0.fd, F_GETFD) & FD_CLOEXEC != 0 },
            "checks": checks,
            "environmentLeft": left,
            "secondTake": again.count,
        ]
        let data = try JSONSerialization.data(withJSONObject: report)
        try data.write(to: URL(fileURLWithPath: reportPath))
    }

    private static func boundPath(_ fd: Int32) -> String {
        var address = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let r = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard r == 0 else { return "<getsockname failed: \(errnoText())>" }
        return withUnsafeBytes(of: address.sun_path) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}
