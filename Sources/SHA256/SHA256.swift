internal import CSHA256

/// SHA-256 (FIPS 180-4), incremental. Used for chunk checksums in the spool;
/// small and dependency-free so the daemon does not need a crypto package. The
/// compression function is C (CSHA256: it runs over every byte the agent captures, and
/// unoptimized Swift was 14 times slower there); the buffering and padding are here.
public struct SHA256: Sendable {
    private var state: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) =
        (0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19)
    /// The bytes of a block not yet complete (`bufferCount` of them).
    private var buffer: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    private var bufferCount = 0
    private var totalBytes: UInt64 = 0

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var next = bytes.baseAddress, !bytes.isEmpty else { return }
        totalBytes &+= UInt64(bytes.count)
        var left = bytes.count
        if bufferCount > 0 {
            let taken = min(64 - bufferCount, left)
            withUnsafeMutableBytes(of: &buffer) { $0.baseAddress!.advanced(by: bufferCount).copyMemory(from: next, byteCount: taken) }
            bufferCount += taken
            next += taken
            left -= taken
            guard bufferCount == 64 else { return }
            var block = buffer
            withUnsafeBytes(of: &block) { compress($0.baseAddress!, blocks: 1) }
            bufferCount = 0
        }
        if left >= 64 {
            compress(next, blocks: left / 64)
            next += left / 64 * 64
            left %= 64
        }
        if left > 0 {
            withUnsafeMutableBytes(of: &buffer) { $0.baseAddress!.copyMemory(from: next, byteCount: left) }
            bufferCount = left
        }
    }

    public mutating func update<S: Sequence>(_ bytes: S) where S.Element == UInt8 {
        let array = Array(bytes)
        array.withUnsafeBytes { update($0) }
    }

    /// The digest; the hasher must not be used afterwards.
    public mutating func finalize() -> [UInt8] {
        let bitLength = totalBytes &* 8
        var tail: [UInt8] = [0x80]
        let padding = (bufferCount + 1) % 64 <= 56 ? 56 - (bufferCount + 1) % 64 : 120 - (bufferCount + 1) % 64
        tail += [UInt8](repeating: 0, count: padding)
        for shift in stride(from: 56, through: 0, by: -8) { tail.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift))) }
        let saved = totalBytes
        tail.withUnsafeBytes { update($0) }
        totalBytes = saved
        precondition(bufferCount == 0)
        var out = [UInt8]()
        out.reserveCapacity(32)
        for word in [state.0, state.1, state.2, state.3, state.4, state.5, state.6, state.7] {
            out += [UInt8(word >> 24), UInt8((word >> 16) & 0xff), UInt8((word >> 8) & 0xff), UInt8(word & 0xff)]
        }
        return out
    }

    public static func hexDigest(_ bytes: UnsafeRawBufferPointer) -> String {
        var h = SHA256()
        h.update(bytes)
        return hex(h.finalize())
    }

    public static func hex(_ digest: [UInt8]) -> String {
        let digits: [Character] = Array("0123456789abcdef")
        var s = ""
        s.reserveCapacity(digest.count * 2)
        for b in digest {
            s.append(digits[Int(b >> 4)])
            s.append(digits[Int(b & 0xf)])
        }
        return s
    }

    /// `blocks` whole 64-byte blocks from `p`.
    private mutating func compress(_ p: UnsafeRawPointer, blocks: Int) {
        // A homogeneous tuple is laid out as an array of its element type.
        withUnsafeMutableBytes(of: &state) { words in
            capture_sha256_blocks(words.baseAddress!.assumingMemoryBound(to: UInt32.self),
                                  p.assumingMemoryBound(to: UInt8.self), blocks)
        }
    }
}
