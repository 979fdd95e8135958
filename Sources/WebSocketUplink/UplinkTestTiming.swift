import CaptureCore
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif

extension UplinkMachine.Timing {
    /// The environment variable of `withTestOverrides`.
    public static let testOverrideVariable = "CAPTURE_AGENT_TEST_UPLINK_TIMING"

    /// Fault injection for tests: the production watchdogs (a welcome within 15 s, silence
    /// hung up after 25 s, ...) with those named in `CAPTURE_AGENT_TEST_UPLINK_TIMING`
    /// replaced, e.g. `welcome=2s,hangup=3s,ping=1s`. Keys: connect, welcome, ack, ping,
    /// hangup; values as `parseDuration` reads them. A test of a silent or incompatible
    /// endpoint then waits seconds instead of the production half minute. Anything malformed
    /// is ignored (production timing), never a crash.
    public static func withTestOverrides(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Self {
        var timing = Self()
        guard let spec = environment[testOverrideVariable] else { return timing }
        for item in spec.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let ns = try? parseDuration(parts[1]), ns > 0 else { continue }
            switch parts[0] {
            case "connect": timing.connectTimeoutNs = ns
            case "welcome": timing.welcomeTimeoutNs = ns
            case "ack": timing.ackTimeoutNs = ns
            case "ping": timing.pingIntervalNs = ns
            case "hangup": timing.hangupNs = ns
            default: continue
            }
        }
        return timing
    }
}
