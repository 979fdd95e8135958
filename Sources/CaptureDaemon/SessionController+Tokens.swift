import CaptureControl
import CaptureCore
import CaptureSpool
import Foundation

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
        var b64 = parts[1].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while b64.count % 4 != 0 { b64 += "=" }
        guard let data = Data(base64Encoded: b64),
              let claims = try? JSONCoding.decoder.decode(JSONValue.self, from: data) else { return nil }
        return claims["exp"]?.int64Value
    }

    /// Bytes of every file under the spool root (all sessions).
    static func spoolUsage() -> Int64 {
        let root = SpoolLocation.root
        guard let walker = FileManager.default.enumerator(atPath: root) else { return 0 }
        var total: Int64 = 0
        while let name = walker.nextObject() as? String {
            if let size = walker.fileAttributes?[.size] as? NSNumber, walker.fileAttributes?[.type] as? FileAttributeType == .typeRegular {
                total += size.int64Value
            }
            _ = name
        }
        return total
    }
}
