import CaptureCore
import CaptureSystem
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Where sessions are spooled: `$XDG_STATE_HOME/capture-agent/spool/<session>/`
/// (`~/.local/state/capture-agent/spool/<session>/` when XDG_STATE_HOME is unset
/// or not absolute, as the XDG Base Directory specification says).
public enum SpoolLocation {
    public static var root: String {
        let env = ProcessInfo.processInfo.environment
        if let state = env["XDG_STATE_HOME"], state.hasPrefix("/") {
            return state + "/capture-agent/spool"
        }
        let home = env["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? HomeDirectory.fromPasswordDatabase()
        return home + "/.local/state/capture-agent/spool"
    }

    public static func sessionDirectory(_ sessionId: String) -> String {
        root + "/" + sessionId
    }
}
