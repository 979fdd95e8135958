/// BGRX (XShm depth 24: B, G, R, unused, one little-endian 32-bit word per
/// pixel) to YUV 4:2:0 (I420), BT.709 matrix, limited range: what x264 gets.
///
/// Written for the one case the capture path needs (no scaling) because
/// swscale's general path is slow for it: with the BT.709 matrix swscale has
/// no special-purpose converter, and its 1:1 scaler path cost ~4.5 ns per pixel
/// here, 30% of a moving screen's CPU. This one converts 16 pixels of two rows
/// at a time with SIMD vectors; on a moving screen it takes ~9% of the CPU, most
/// of it waiting for the shared-memory image the X server has just written.
///
/// Each output sample depends only on its own 2x2 block of source pixels:
/// luma from its pixel, each chroma sample from the sum of the block's four
/// pixels. Converting any even-aligned rectangle therefore gives exactly the
/// bytes a whole-frame conversion has there, which is what partial conversion
/// (only what changed) relies on; the vector and the scalar path compute
/// identically.
///
///     Y  = 16  + 219/255 * ( 0.2126 R + 0.7152 G + 0.0722 B)
///     Cb = 128 + 224/255 * (-0.1146 R - 0.3854 G + 0.5    B)   (of the block's mean)
///     Cr = 128 + 224/255 * ( 0.5    R - 0.4542 G - 0.0458 B)
///
/// rounded to the nearest integer. The coefficients are 15-bit fixed-point
/// values (each chroma row sums to exactly 0), applied in Float: x86-64's
/// baseline SIMD (SSE2) has no 32-bit integer multiply, and every intermediate
/// is exact or within a rounding of it. Every result lies in 16...235 (Y) or
/// 16...240 (chroma) for any input, so nothing is clamped. Against swscale
/// (SWS_AREA | SWS_ACCURATE_RND, BT.709), samples differ by at most 1
/// (ConversionTests).
public enum BT709Conversion {
    // Luma: 219/255 * (0.2126, 0.7152, 0.0722) * 2^15.
    static let ry: Int32 = 5983, gy: Int32 = 20127, by: Int32 = 2032
    // Chroma: 224/255 * matrix row * 2^15 (each row sums to 0).
    static let ru: Int32 = -3298, gu: Int32 = -11094, bu: Int32 = 14392
    static let rv: Int32 = 14392, gv: Int32 = -13073, bv: Int32 = -1319

    /// Converts a `width` x `height` rectangle (both even). `source` points at
    /// its top-left pixel; `y`, `u`, `v` at the matching samples of each plane
    /// (chroma at half the coordinates). Never allocates.
    public static func convert(source: UnsafeRawPointer, bytesPerRow: Int, width: Int, height: Int,
                        y: UnsafeMutablePointer<UInt8>, yStride: Int,
                        u: UnsafeMutablePointer<UInt8>, uStride: Int,
                        v: UnsafeMutablePointer<UInt8>, vStride: Int) {
        precondition(width % 2 == 0 && height % 2 == 0 && width >= 0 && height >= 0,
                     "BT709Conversion.convert: \(width)x\(height) is not even")
        var row = 0
        while row < height {
            let top = source + row * bytesPerRow
            let bottom = top + bytesPerRow
            let yTop = y + row * yStride
            let yBottom = yTop + yStride
            let uRow = u + (row / 2) * uStride
            let vRow = v + (row / 2) * vStride
            var x = 0
            while x + 16 <= width {
                convert16(top + x * 4, bottom + x * 4, yTop + x, yBottom + x, uRow + x / 2, vRow + x / 2)
                x += 16
            }
            while x < width {
                convertBlock(top + x * 4, bottom + x * 4, yTop + x, yBottom + x, uRow + x / 2, vRow + x / 2)
                x += 2
            }
            row += 2
        }
    }

    // As Float; chroma's include the 1/4 of the block mean.
    static let fry = Float(ry) / 32768, fgy = Float(gy) / 32768, fby = Float(by) / 32768
    static let fru = Float(ru) / 131072, fgu = Float(gu) / 131072, fbu = Float(bu) / 131072
    static let frv = Float(rv) / 131072, fgv = Float(gv) / 131072, fbv = Float(bv) / 131072

    // Integer <-> Float without the standard library's per-lane generic conversions:
    // 2^23 + n (0 <= n < 2^23) is the Float whose bit pattern is 0x4B000000 | n, and
    // adding 2^23 to a Float in [0, 2^23) rounds it to the nearest integer (ties to even)
    // in the low bits. The scalar path below does exactly the same, so a pixel gets the
    // same bytes whichever path converts it.
    static let magic: Float = 8_388_608
    static let magicBits: UInt32 = 0x4B00_0000

    @inline(__always)
    private static func channels(_ p: SIMD16<UInt32>) -> (r: SIMD16<Float>, g: SIMD16<Float>, b: SIMD16<Float>) {
        let mask = SIMD16<UInt32>(repeating: 0xFF), bits = SIMD16<UInt32>(repeating: magicBits)
        let m = SIMD16<Float>(repeating: magic)
        let b = unsafeBitCast((p & mask) | bits, to: SIMD16<Float>.self) - m
        let g = unsafeBitCast(((p &>> 8) & mask) | bits, to: SIMD16<Float>.self) - m
        let r = unsafeBitCast(((p &>> 16) & mask) | bits, to: SIMD16<Float>.self) - m
        return (r, g, b)
    }

    /// Sixteen pixels of two rows: 32 luma, 8 Cb and 8 Cr samples.
    @inline(__always)
    private static func convert16(_ top: UnsafeRawPointer, _ bottom: UnsafeRawPointer,
                                  _ yTop: UnsafeMutablePointer<UInt8>, _ yBottom: UnsafeMutablePointer<UInt8>,
                                  _ u: UnsafeMutablePointer<UInt8>, _ v: UnsafeMutablePointer<UInt8>) {
        let a = channels(top.loadUnaligned(as: SIMD16<UInt32>.self))
        let b = channels(bottom.loadUnaligned(as: SIMD16<UInt32>.self))

        let yBias = SIMD16<Float>(repeating: 16 + magic)
        let yA = a.r * fry + a.g * fgy + a.b * fby + yBias
        let yB = b.r * fry + b.g * fgy + b.b * fby + yBias
        UnsafeMutableRawPointer(yTop).storeBytes(
            of: SIMD16<UInt8>(truncatingIfNeeded: unsafeBitCast(yA, to: SIMD16<UInt32>.self)), as: SIMD16<UInt8>.self)
        UnsafeMutableRawPointer(yBottom).storeBytes(
            of: SIMD16<UInt8>(truncatingIfNeeded: unsafeBitCast(yB, to: SIMD16<UInt32>.self)), as: SIMD16<UInt8>.self)

        let r = a.r.evenHalf + a.r.oddHalf + b.r.evenHalf + b.r.oddHalf
        let g = a.g.evenHalf + a.g.oddHalf + b.g.evenHalf + b.g.oddHalf
        let bl = a.b.evenHalf + a.b.oddHalf + b.b.evenHalf + b.b.oddHalf
        let cBias = SIMD8<Float>(repeating: 128 + magic)
        let cb = r * fru + g * fgu + bl * fbu + cBias
        let cr = r * frv + g * fgv + bl * fbv + cBias
        UnsafeMutableRawPointer(u).storeBytes(
            of: SIMD8<UInt8>(truncatingIfNeeded: unsafeBitCast(cb, to: SIMD8<UInt32>.self)), as: SIMD8<UInt8>.self)
        UnsafeMutableRawPointer(v).storeBytes(
            of: SIMD8<UInt8>(truncatingIfNeeded: unsafeBitCast(cr, to: SIMD8<UInt32>.self)), as: SIMD8<UInt8>.self)
    }

    /// One 2x2 block (the rest of a row narrower than 16 pixels).
    @inline(__always)
    private static func convertBlock(_ top: UnsafeRawPointer, _ bottom: UnsafeRawPointer,
                                     _ yTop: UnsafeMutablePointer<UInt8>, _ yBottom: UnsafeMutablePointer<UInt8>,
                                     _ u: UnsafeMutablePointer<UInt8>, _ v: UnsafeMutablePointer<UInt8>) {
        var r: Float = 0, g: Float = 0, b: Float = 0
        @inline(__always) func pixel(_ src: UnsafeRawPointer, _ i: Int, _ dst: UnsafeMutablePointer<UInt8>) {
            let p = src.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)
            let pb = Float(bitPattern: (p & 0xFF) | magicBits) - magic
            let pg = Float(bitPattern: ((p >> 8) & 0xFF) | magicBits) - magic
            let pr = Float(bitPattern: ((p >> 16) & 0xFF) | magicBits) - magic
            dst[i] = UInt8(truncatingIfNeeded: (pr * fry + pg * fgy + pb * fby + (16 + magic)).bitPattern)
            r += pr
            g += pg
            b += pb
        }
        pixel(top, 0, yTop)
        pixel(top, 1, yTop)
        pixel(bottom, 0, yBottom)
        pixel(bottom, 1, yBottom)
        u.pointee = UInt8(truncatingIfNeeded: (r * fru + g * fgu + b * fbu + (128 + magic)).bitPattern)
        v.pointee = UInt8(truncatingIfNeeded: (r * frv + g * fgv + b * fbv + (128 + magic)).bitPattern)
    }
}
