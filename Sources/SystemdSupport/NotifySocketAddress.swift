import CaptureCore
import CaptureSystem
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

extension UnixSocketAddress {
    /// The address as `$NOTIFY_SOCKET` spells it (sd_notify(3)): an absolute
    /// path, or "@name" for the abstract namespace. Anything else (a relative
    /// path, "vsock:CID:PORT") gives nil.
    init?(notifySocket value: String) {
        if value.hasPrefix("@") {
            self.init(abstract: String(value.dropFirst()))
        } else if value.hasPrefix("/") {
            self.init(path: value)
        } else {
            return nil
        }
    }
}

/// `strerror(errno)` as a String.
func errnoDescription(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}
