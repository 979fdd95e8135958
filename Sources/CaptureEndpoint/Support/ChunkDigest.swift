internal import CCrypto
import CaptureCore
import SHA256

/// SHA-256 of chunk payloads through OpenSSL's EVP (hardware SHA where the CPU
/// has it). Hashing every received chunk was 30% of the endpoint's CPU with the
/// portable SHA256 module; the two agree (a test checks).
enum ChunkDigest {
    static func sha256Hex(_ bytes: UnsafeRawBufferPointer) -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let ok = digest.withUnsafeMutableBufferPointer { out in
            EVP_Digest(bytes.baseAddress, bytes.count, out.baseAddress, &length, EVP_sha256(), nil)
        }
        // EVP_Digest fails only without memory; the portable implementation is the fallback.
        guard ok == 1, length == 32 else { return SHA256.hexDigest(bytes) }
        return SHA256.hex(digest)
    }
}
