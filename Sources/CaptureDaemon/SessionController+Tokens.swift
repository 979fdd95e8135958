import CaptureControl
import CaptureCore
import CaptureConcurrency
import CaptureSpool
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// What the controller knows about tokens and the spool without a session: when a token
/// expires (the client's word, else a JWT's `exp`), and how much the spool holds.
extension SessionController {
    /// A token's expiry: the one the client gave, else the JWT `exp` claim.
    static func expiry(of token: String, given: Int64?) -> Int64? {
        given ?? jwtExpiry(token)
    }

    /// The `exp` claim of a JWT (unix seconds), if the token is one.
    static func jwtExpiry(_ token: String) -> Int64? {
        let parts = token.split(separator: ".")
        guard parts.count == 3 else { return nil }
        var b64 = String(parts[1]).replacing("-", with: "+").replacing("_", with: "/")
        while b64.count % 4 != 0 { b64 += "=" }
        guard let data = Data(base64Encoded: b64),
              let claims = try? JSONCoding.decoder.decode(JSONValue.self, from: data) else { return nil }
        return claims["exp"]?.int64Value
    }

    /// Bytes of every file under the spool root (all sessions).
    static func spoolUsage() -> Int64 {
        regularFileBytes(under: SpoolLocation.root)
    }

    /// Bytes of the regular files under `directory`, recursively. Symbolic links are
    /// not followed (as with FileManager's enumerator); unreadable entries count 0.
    private static func regularFileBytes(under directory: String) -> Int64 {
        guard let dir = opendir(directory) else { return 0 }
        defer { closedir(dir) }
        var total: Int64 = 0
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: entry.pointee.d_name)) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            let path = directory + "/" + name
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            switch info.st_mode & S_IFMT {
            case S_IFREG: total += Int64(info.st_size)
            case S_IFDIR: total += regularFileBytes(under: path)
            default: break
            }
        }
        return total
    }
}
