import CaptureCore
import CaptureTestSupport
import CaptureUplinkReplay
import Foundation

/// A real 20 s recording (display + mic + system audio on the test rig: the
/// moving pattern, 440 Hz on the mic, 1 kHz on system audio), made once per
/// test process by the real capture-agent and shared by the tests that replay it.
enum RecordedFixture {
    static let seconds = 20

    private static let path = FileManager.default.temporaryDirectory.path + "/endpoint-fixture-\(getpid())-spool"

    private static let made: Result<String, CaptureError> = {
        do {
            let rig = try TestRig.shared()
            let out = path
            try? FileManager.default.removeItem(atPath: out)
            // Gone with the test process (each process records its own).
            atexit { try? FileManager.default.removeItem(atPath: RecordedFixture.path) }
            let run = try runProcess(BuiltProduct.path("capture-agent"), [
                "record", "--out", out, "--duration", "\(seconds)s", "--channel", "display:1",
                "--channel", "mic:default", "--channel", "system_audio:default",
            ], environment: rig.childEnvironment(), timeout: .seconds(90))
            guard run.status == 0 else {
                return .failure(CaptureError(.internalError, "recording the fixture failed (\(run.status)): \(run.stderr.suffix(600))"))
            }
            return .success(out)
        } catch let error as CaptureError {
            return .failure(error)
        } catch {
            return .failure(CaptureError(.internalError, "\(error)"))
        }
    }()

    /// The recording's directory.
    static func directory() throws -> String { try made.get() }

    static func spool() throws -> RecordedSpool { try RecordedSpool(directory: directory()) }
}
