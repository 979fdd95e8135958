import CaptureCore
import SHA256
import Foundation

/// Random credentials, their stored hashes, and HMAC-SHA256: the endpoint's only
/// cryptography, built on CaptureCore's SHA-256 so no crypto package is needed.
public enum Secrets {
    /// `count` bytes from the system's CSPRNG (getrandom(2) behind `SystemRandomNumberGenerator`).
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var out = [UInt8]()
        out.reserveCapacity(count)
        while out.count < count {
            var word = generator.next() as UInt64
            for _ in 0..<8 where out.count < count {
                out.append(UInt8(truncatingIfNeeded: word))
                word >>= 8
            }
        }
        return out
    }

    /// A credential: `prefix` + 32 random bytes (256 bits), base64url without padding.
    public static func newCredential(prefix: String) -> String {
        prefix + base64URL(randomBytes(32))
    }

    /// An identifier: `prefix` + 16 random bytes as hex.
    public static func newIdentifier(prefix: String) -> String {
        prefix + SHA256.hex(randomBytes(16))
    }

    /// What the store keeps of a credential: its SHA-256, hex. A credential has
    /// 256 random bits, so a plain hash is enough (no slow KDF needed).
    public static func storedHash(of credential: String) -> String {
        var hasher = SHA256()
        hasher.update(Array(credential.utf8))
        return SHA256.hex(hasher.finalize())
    }

    /// HMAC-SHA256 (RFC 2104).
    public static func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var block = key
        if block.count > 64 {
            var hasher = SHA256()
            hasher.update(block)
            block = hasher.finalize()
        }
        block += [UInt8](repeating: 0, count: 64 - block.count)
        var inner = SHA256()
        inner.update(block.map { $0 ^ 0x36 })
        message.withUnsafeBytes { inner.update($0) }
        let innerDigest = inner.finalize()
        var outer = SHA256()
        outer.update(block.map { $0 ^ 0x5c })
        outer.update(innerDigest)
        return outer.finalize()
    }

    public static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Compares two strings in time that depends only on their lengths.
    public static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<x.count { diff |= x[i] ^ y[i] }
        return diff == 0
    }
}
