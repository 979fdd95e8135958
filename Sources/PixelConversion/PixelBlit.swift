#if canImport(Glibc)
import Glibc
#endif
internal import CPixelKernels

/// Copying rectangles between 32-bit pictures and drawing the pointer over them: the
/// per-pixel loops the screen sources share (X11's cursor, a screencast's frames and cursor).
public enum PixelBlit {
    /// Copies a `width` x `height` rectangle of 4-byte pixels. With `swapRedBlue` each pixel's
    /// first and third bytes trade places (R G B x to B G R x, CPixelKernels' vector loop);
    /// otherwise rows are memcpy'd. Never allocates.
    public static func copy(from source: UnsafeRawPointer, sourceBytesPerRow: Int,
                            to destination: UnsafeMutableRawPointer, destinationBytesPerRow: Int,
                            width: Int, height: Int, swapRedBlue: Bool) {
        guard width > 0, height > 0 else { return }
        if !swapRedBlue {
            for row in 0..<height {
                (destination + row * destinationBytesPerRow).copyMemory(from: source + row * sourceBytesPerRow, byteCount: width * 4)
            }
            return
        }
        capture_copy_swap_red_blue(source.assumingMemoryBound(to: UInt8.self), sourceBytesPerRow,
                                   destination.assumingMemoryBound(to: UInt8.self), destinationBytesPerRow,
                                   Int32(width), Int32(height))
    }

    /// Finds where two pictures of 4-byte pixels differ, in bands of 16 rows (the encoder's
    /// macroblock rows) and columns of 16 pixels: `body(x, y, width, height)` gets, for each run
    /// of bands that changed over the same columns, the rectangle from the leftmost to the
    /// rightmost changed column. A band that did not change costs one comparison per row; a
    /// changed one is searched from both ends only until its first changed column.
    ///
    /// For producers that send whole frames without saying what changed (GNOME's screencast):
    /// what changed then costs reading both frames once, far less than converting and encoding
    /// all of it.
    public static func changedRegion(_ a: UnsafeRawPointer, _ aBytesPerRow: Int,
                                     _ b: UnsafeRawPointer, _ bBytesPerRow: Int,
                                     width: Int, height: Int,
                                     _ body: (_ x: Int, _ y: Int, _ width: Int, _ height: Int) -> Void) {
        let band = 16, tile = 16
        let columns = (width + tile - 1) / tile
        @inline(__always) func tileDiffers(_ column: Int, _ y0: Int, _ rows: Int) -> Bool {
            let x = column * tile
            let bytes = min(tile, width - x) * 4
            for row in y0..<(y0 + rows) where memcmp(a + row * aBytesPerRow + x * 4, b + row * bBytesPerRow + x * 4, bytes) != 0 {
                return true
            }
            return false
        }
        var run: (x0: Int, x1: Int, y: Int, height: Int)?
        func flush() {
            if let r = run { body(r.x0 * tile, r.y, min(r.x1 * tile, width) - r.x0 * tile, r.height) }
            run = nil
        }
        var y = 0
        while y < height {
            let rows = min(band, height - y)
            var same = true
            for row in y..<(y + rows) where memcmp(a + row * aBytesPerRow, b + row * bBytesPerRow, width * 4) != 0 {
                same = false
                break
            }
            if same {
                flush()
            } else {
                var first = 0
                while first < columns - 1 && !tileDiffers(first, y, rows) { first += 1 }
                var last = columns - 1
                while last > first && !tileDiffers(last, y, rows) { last -= 1 }
                if let r = run, r.x0 == first, r.x1 == last + 1 {
                    run = (r.x0, r.x1, r.y, r.height + rows)
                } else {
                    flush()
                    run = (first, last + 1, y, rows)
                }
            }
            y += rows
        }
        flush()
    }

    /// Alpha-blends a premultiplied ARGB image (0xAARRGGBB words) whose top-left corner is at
    /// (`x`, `y`) over a `pictureWidth` x `pictureHeight` BGRX picture, clipped to it:
    /// dst = src + dst * (255 - a) / 255.
    public static func blendPremultiplied(_ image: UnsafePointer<UInt32>, imageWidth: Int, imageHeight: Int,
                                          atX x: Int, y: Int,
                                          over picture: UnsafeMutableRawPointer, pictureBytesPerRow: Int,
                                          pictureWidth: Int, pictureHeight: Int) {
        let x0 = max(x, 0), y0 = max(y, 0)
        let x1 = min(x + imageWidth, pictureWidth), y1 = min(y + imageHeight, pictureHeight)
        guard x1 > x0, y1 > y0 else { return }
        for row in y0..<y1 {
            let src = image + (row - y) * imageWidth + (x0 - x)
            let dst = (picture + row * pictureBytesPerRow).assumingMemoryBound(to: UInt32.self) + x0
            for i in 0..<(x1 - x0) {
                let s = src[i]
                let a = s >> 24
                if a == 0 { continue }
                if a == 255 { dst[i] = s; continue }
                let d = dst[i]
                let inv = 255 &- a
                var rb = (d & 0x00FF_00FF) &* inv &+ 0x0080_0080
                rb = ((rb &+ ((rb >> 8) & 0x00FF_00FF)) >> 8) & 0x00FF_00FF
                var ag = ((d >> 8) & 0x00FF_00FF) &* inv &+ 0x0080_0080
                ag = (ag &+ ((ag >> 8) & 0x00FF_00FF)) & 0xFF00_FF00
                dst[i] = s &+ (rb | ag)
            }
        }
    }
}
