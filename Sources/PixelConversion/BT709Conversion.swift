internal import CPixelKernels

/// BGRX (XShm depth 24: B, G, R, unused, one little-endian 32-bit word per
/// pixel) to YUV 4:2:0 (I420), BT.709 matrix, limited range: what x264 gets.
///
/// Written for the one case the capture path needs (no scaling) because
/// swscale's general path is slow for it: with the BT.709 matrix swscale has
/// no special-purpose converter, and its 1:1 scaler path cost ~4.5 ns per pixel
/// here, 30% of a moving screen's CPU. This one converts 16 pixels of two rows
/// at a time with vector instructions (CPixelKernels' `capture_bt709_convert`,
/// C so that debug builds run it at a usable speed too); on a moving screen it
/// takes ~9% of the CPU, most of it waiting for the shared-memory image the X
/// server has just written.
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
    /// Converts a `width` x `height` rectangle (both even). `source` points at
    /// its top-left pixel; `y`, `u`, `v` at the matching samples of each plane
    /// (chroma at half the coordinates). Never allocates.
    public static func convert(source: UnsafeRawPointer, bytesPerRow: Int, width: Int, height: Int,
                        y: UnsafeMutablePointer<UInt8>, yStride: Int,
                        u: UnsafeMutablePointer<UInt8>, uStride: Int,
                        v: UnsafeMutablePointer<UInt8>, vStride: Int) {
        precondition(width % 2 == 0 && height % 2 == 0 && width >= 0 && height >= 0 && width <= Int(Int32.max)
                        && height <= Int(Int32.max),
                     "BT709Conversion.convert: \(width)x\(height) is not even")
        capture_bt709_convert(source.assumingMemoryBound(to: UInt8.self), bytesPerRow, Int32(width), Int32(height),
                              y, yStride, u, uStride, v, vStride)
    }
}
