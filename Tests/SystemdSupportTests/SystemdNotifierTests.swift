import Foundation
import Synchronization
import SystemdSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// sd_notify(3) over real AF_UNIX datagram sockets.
final class SystemdNotifierTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try makeTemporaryDirectory("notify")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testReadySendsReadyStatusAndMainPIDFromThisProcess() throws {
        let receiver = try NotifyReceiver(path: directory + "/notify.sock")
        let env = ["NOTIFY_SOCKET": receiver.notifySocket]
        XCTAssertTrue(SystemdNotifier.isAvailable(environment: env))
        XCTAssertTrue(SystemdNotifier.ready(status: "Listening on control.sock", environment: env))
        let message = try XCTUnwrap(receiver.receive(), "no datagram arrived")
        XCTAssertEqual(message.text, "READY=1\nSTATUS=Listening on control.sock\nMAINPID=\(getpid())")
        // systemd applies NotifyAccess=main with these kernel-supplied credentials.
        XCTAssertEqual(message.senderPID, getpid())
    }

    func testReadyWithoutStatus() throws {
        let receiver = try NotifyReceiver(path: directory + "/notify.sock")
        XCTAssertTrue(SystemdNotifier.ready(environment: ["NOTIFY_SOCKET": receiver.notifySocket]))
        XCTAssertEqual(try receiver.receive()?.text, "READY=1\nMAINPID=\(getpid())")
    }

    func testStoppingWatchdogStatusAndExtendTimeout() throws {
        let receiver = try NotifyReceiver(path: directory + "/notify.sock")
        let env = ["NOTIFY_SOCKET": receiver.notifySocket]
        XCTAssertTrue(SystemdNotifier.stopping(environment: env))
        XCTAssertEqual(try receiver.receive()?.text, "STOPPING=1")
        XCTAssertTrue(SystemdNotifier.stopping(status: "Closing 3 chunks", environment: env))
        XCTAssertEqual(try receiver.receive()?.text, "STOPPING=1\nSTATUS=Closing 3 chunks")
        XCTAssertTrue(SystemdNotifier.watchdog(environment: env))
        XCTAssertEqual(try receiver.receive()?.text, "WATCHDOG=1")
        // A status is one line: a newline would start a new assignment.
        XCTAssertTrue(SystemdNotifier.status("Recording\ndisplay:1", environment: env))
        XCTAssertEqual(try receiver.receive()?.text, "STATUS=Recording display:1")
        XCTAssertTrue(SystemdNotifier.extendTimeout(by: .milliseconds(5500), environment: env))
        XCTAssertEqual(try receiver.receive()?.text, "EXTEND_TIMEOUT_USEC=5500000")
        XCTAssertTrue(SystemdNotifier.notify("RELOADING=1", environment: env))
        XCTAssertEqual(try receiver.receive()?.text, "RELOADING=1")
    }

    func testAbstractNamespaceSocket() throws {
        let name = "capture-agent-systemd-support-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let receiver = try NotifyReceiver(abstractName: name)
        XCTAssertEqual(receiver.notifySocket, "@" + name)
        XCTAssertTrue(SystemdNotifier.ready(status: "abstract", environment: ["NOTIFY_SOCKET": receiver.notifySocket]))
        XCTAssertEqual(try receiver.receive()?.text, "READY=1\nSTATUS=abstract\nMAINPID=\(getpid())")
        XCTAssertTrue(SystemdNotifier.watchdog(environment: ["NOTIFY_SOCKET": receiver.notifySocket]))
        XCTAssertEqual(try receiver.receive()?.text, "WATCHDOG=1")
    }

    func testWithoutNotifySocketEverythingIsANoOp() throws {
        for env in [[:], ["NOTIFY_SOCKET": ""]] as [[String: String]] {
            XCTAssertFalse(SystemdNotifier.isAvailable(environment: env))
            XCTAssertFalse(SystemdNotifier.notify("READY=1", environment: env))
            XCTAssertFalse(SystemdNotifier.ready(status: "x", environment: env))
            XCTAssertFalse(SystemdNotifier.stopping(environment: env))
            XCTAssertFalse(SystemdNotifier.watchdog(environment: env))
            XCTAssertFalse(SystemdNotifier.status("x", environment: env))
        }
    }

    func testNotifySocketPointingNowhereFailsQuietly() throws {
        // A missing path, a path that is no socket, a socket nobody reads, an
        // unused abstract name, a relative path, an unsupported scheme, too long.
        let regularFile = directory + "/file"
        XCTAssertTrue(FileManager.default.createFile(atPath: regularFile, contents: Data("x".utf8)))
        let closedPath = directory + "/closed.sock"
        do { _ = try NotifyReceiver(path: closedPath) }   // bound, then closed at once: nothing listens
        XCTAssertTrue(FileManager.default.fileExists(atPath: closedPath))
        let values = [
            directory + "/missing.sock", regularFile, closedPath, directory,
            "@capture-agent-nobody-\(getpid())-\(UInt32.random(in: 0...UInt32.max))",
            "notify.sock", "vsock:2:1234", "/" + String(repeating: "x", count: 200),
        ]
        for value in values {
            XCTAssertFalse(SystemdNotifier.notify("READY=1", environment: ["NOTIFY_SOCKET": value]), value)
            XCTAssertFalse(SystemdNotifier.watchdog(environment: ["NOTIFY_SOCKET": value]), value)
        }
    }

    func testEmptyStateIsRefused() throws {
        let receiver = try NotifyReceiver(path: directory + "/notify.sock")
        XCTAssertFalse(SystemdNotifier.notify("", environment: ["NOTIFY_SOCKET": receiver.notifySocket]))
        XCTAssertNil(try receiver.receive(timeoutMilliseconds: 100))
    }

    func testConcurrentNotificationsFromManyThreads() throws {
        let receiver = try NotifyReceiver(path: directory + "/notify.sock")
        let env = ["NOTIFY_SOCKET": receiver.notifySocket]
        let count = 64
        // Read while the threads send: the receive queue holds only
        // net.unix.max_dgram_qlen (10) datagrams, as systemd's does.
        let seen = Mutex(Set<String>())
        let reader = Thread {
            var remaining = count
            while remaining > 0, let message = try? receiver.receive(timeoutMilliseconds: 5000) {
                seen.withLock { _ = $0.insert(message.text) }
                remaining -= 1
            }
        }
        reader.start()
        let results = Mutex([Bool](repeating: false, count: count))
        DispatchQueue.concurrentPerform(iterations: count) { i in
            let ok = SystemdNotifier.status("ping \(i)", environment: env)
            results.withLock { $0[i] = ok }
        }
        XCTAssertEqual(results.withLock { $0 }, [Bool](repeating: true, count: count))
        let deadline = ContinuousClock.now + .seconds(10)
        while seen.withLock({ $0.count }) < count && ContinuousClock.now < deadline { usleep(10_000) }
        XCTAssertEqual(seen.withLock { $0 }, Set((0..<count).map { "STATUS=ping \($0)" }))
    }

    func testAReceiverThatNeverReadsDoesNotHangTheSender() throws {
        let receiver = try NotifyReceiver(path: directory + "/notify.sock")
        let env = ["NOTIFY_SOCKET": receiver.notifySocket]
        // Fill the receiver's queue (net.unix.max_dgram_qlen, 10 by default).
        var sent = 0
        let started = ContinuousClock.now
        while SystemdNotifier.watchdog(environment: env) {
            sent += 1
            XCTAssertLessThan(sent, 10_000, "the queue never filled")
            if sent >= 10_000 { break }
        }
        let elapsed = ContinuousClock.now - started
        XCTAssertGreaterThan(sent, 0)
        XCTAssertGreaterThanOrEqual(elapsed, .seconds(SystemdNotifier.sendTimeoutSeconds) - .milliseconds(100))
        XCTAssertLessThan(elapsed, .seconds(SystemdNotifier.sendTimeoutSeconds + 5))
        XCTAssertEqual(try receiver.receive()?.text, "WATCHDOG=1", "the queued pings are intact")
    }

    func testWatchdogInterval() {
        let pid = getpid()
        XCTAssertEqual(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "3000000"]), .seconds(3))
        XCTAssertEqual(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "\(pid)"]),
                       .seconds(30))
        XCTAssertEqual(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "1500"]), .microseconds(1500))
        // Meant for another process (inherited from a parent): not ours.
        XCTAssertNil(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "\(getppid())"]))
        XCTAssertNil(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "self"]))
        XCTAssertNil(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "0"]))
        XCTAssertNil(SystemdNotifier.watchdogInterval(environment: [:]))
        XCTAssertNil(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_PID": "\(pid)"]))
        for garbage in ["", "0", "-1", "3s", " 3000000", "3e6", "0x10", "18446744073709551615", "99999999999999999999999"] {
            XCTAssertNil(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": garbage]), garbage)
        }
    }

    func testWatchdogIntervalUnsetsTheEnvironmentWhenAsked() {
        setenv("WATCHDOG_USEC", "4000000", 1)
        setenv("WATCHDOG_PID", "\(getpid())", 1)
        defer { unsetenv("WATCHDOG_USEC"); unsetenv("WATCHDOG_PID") }
        XCTAssertEqual(SystemdNotifier.watchdogInterval(), .seconds(4))
        XCTAssertNotNil(getenv("WATCHDOG_USEC"), "read without unsetEnvironment keeps the variables")
        XCTAssertEqual(SystemdNotifier.watchdogInterval(unsetEnvironment: true), .seconds(4))
        XCTAssertNil(getenv("WATCHDOG_USEC"))
        XCTAssertNil(getenv("WATCHDOG_PID"))
        XCTAssertNil(SystemdNotifier.watchdogInterval())
    }
}
