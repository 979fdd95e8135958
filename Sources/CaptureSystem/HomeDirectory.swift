#if canImport(Glibc)
import Glibc
#endif

public enum HomeDirectory {
    /// This user's home directory from the password database (what NSHomeDirectory()
    /// answered when $HOME is unset or empty); "/" when the user has no entry.
    public static func fromPasswordDatabase() -> String {
        var entry = passwd()
        var found: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        while true {
            let rc = getpwuid_r(geteuid(), &entry, &buffer, buffer.count, &found)
            if rc == ERANGE, buffer.count < 1 << 20 {
                buffer = [CChar](repeating: 0, count: buffer.count * 4)
                continue
            }
            guard rc == 0, found != nil, let dir = entry.pw_dir else { return "/" }
            return String(cString: dir)
        }
    }
}
