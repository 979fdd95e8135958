internal import CFFmpeg
import CaptureCore
internal import FFmpegObjects
import PixelConversion

/// BGR0 (XShm depth 24) -> YUV420P into a persistent picture, either whole or
/// only where the picture changed.
///
/// Without scaling (the capture path) the conversion is `BT709Conversion`,
/// whose output samples each depend only on their own 2x2 block: the picture is
/// cut into `tileSize` x `tileSize` tiles (even, so a tile never splits a 2x2
/// chroma block), the tiles a dirty rectangle touches are marked, and each
/// horizontal run of marked tiles is converted straight into the persistent
/// picture. A partial update gives exactly the bytes a whole conversion would
/// (ConversionTests checks it on every run).
///
/// With scaling (maxHeight), swscale converts (SWS_AREA | SWS_ACCURATE_RND,
/// BT.709, limited range), and every update is a full conversion. `.swscale`
/// forces that path without scaling too, for comparisons.
final class PictureConverter {
    static let tileSize = 16
    static let swsFlags = SWS_AREA | SWS_ACCURATE_RND

    enum Engine {
        /// BT709Conversion (no scaling) or swscale (scaling).
        case automatic
        /// swscale, always (tests and measurements).
        case swscale
    }

    let sourceWidth: Int
    let sourceHeight: Int
    let outputWidth: Int
    let outputHeight: Int
    let isScaling: Bool
    /// Whether swscale converts (scaling, or asked for); partial updates are then full.
    let usesSwscale: Bool

    /// swscale context, when `usesSwscale`: source (cropped to even size unless scaling) -> output.
    private let scaler: FFScaleContext?
    private let columns: Int
    private let rows: Int
    /// One byte per tile: 1 = convert this time. Cleared on each update.
    private let marks: OwnedBuffer<UInt8>

    // Argument arrays for sws_scale, reused on every call.
    private let srcPlanes = OwnedBuffer<UnsafePointer<UInt8>?>(count: 4, repeating: nil)
    private let srcStrides = OwnedBuffer<Int32>(count: 4, repeating: 0)
    private let dstPlanes = OwnedBuffer<UnsafeMutablePointer<UInt8>?>(count: 4, repeating: nil)
    private let dstStrides = OwnedBuffer<Int32>(count: 4, repeating: 0)

    init(sourceWidth: Int, sourceHeight: Int, outputWidth: Int, outputHeight: Int,
         engine: Engine = .automatic) throws(CaptureError) {
        self.sourceWidth = sourceWidth
        self.sourceHeight = sourceHeight
        self.outputWidth = outputWidth
        self.outputHeight = outputHeight
        let evenW = sourceWidth & ~1, evenH = sourceHeight & ~1
        isScaling = !(outputWidth == evenW && outputHeight == evenH)
        usesSwscale = isScaling || engine == .swscale

        columns = (outputWidth + Self.tileSize - 1) / Self.tileSize
        rows = (outputHeight + Self.tileSize - 1) / Self.tileSize
        marks = OwnedBuffer(count: max(1, columns * rows), repeating: 0)

        if !usesSwscale {
            scaler = nil
            return
        }
        let inW = isScaling ? sourceWidth : outputWidth
        let inH = isScaling ? sourceHeight : outputHeight
        let c = try FFScaleContext(from: inW, inH, AV_PIX_FMT_BGR0, to: outputWidth, outputHeight, AV_PIX_FMT_YUV420P,
                                   flags: Self.swsFlags)
        // BT.709 matrix, limited ("TV") range output; the encoder tags the VUI the same.
        let coefficients = sws_getCoefficients(SWS_CS_ITU709)
        _ = sws_setColorspaceDetails(c.raw, coefficients, 1, coefficients, 0, 0, 1 << 16, 1 << 16)
        scaler = .some(c)
    }

    /// Converts `image` (at least sourceWidth x sourceHeight) into `picture`.
    /// Returns the number of output pixels converted.
    func convert(_ image: PixelBufferView, dirty: DirtyRegion?, into picture: PlanarYUV) -> Int {
        if let dirty {
            if dirty.isEmpty { return 0 }
            let b = dirty.bounds
            let coversAll = b.x <= 0 && b.y <= 0 && Int(b.maxX) >= outputWidth && Int(b.maxY) >= outputHeight
            if !usesSwscale && !coversAll { return convertTiles(image, dirty, picture) }
        }
        switch scaler {
        case .some(let scaler):
            let srcPlanes = srcPlanes.pointer, srcStrides = srcStrides.pointer
            let dstPlanes = dstPlanes.pointer, dstStrides = dstStrides.pointer
            srcPlanes[0] = UnsafePointer(image.baseAddress.assumingMemoryBound(to: UInt8.self))
            srcStrides[0] = Int32(image.bytesPerRow)
            dstPlanes[0] = picture.y
            dstPlanes[1] = picture.u
            dstPlanes[2] = picture.v
            dstStrides[0] = Int32(picture.yStride)
            dstStrides[1] = Int32(picture.uStride)
            dstStrides[2] = Int32(picture.vStride)
            let inH = isScaling ? sourceHeight : outputHeight
            _ = sws_scale(scaler.raw, srcPlanes, srcStrides, 0, Int32(inH), dstPlanes, dstStrides)
        case .none:
            convertRect(image, x: 0, y: 0, width: outputWidth, height: outputHeight, picture)
        }
        return outputWidth * outputHeight
    }

    private func convertTiles(_ image: PixelBufferView, _ dirty: DirtyRegion, _ picture: PlanarYUV) -> Int {
        let ts = Self.tileSize
        let marks = marks.pointer
        marks.update(repeating: 0, count: columns * rows)
        let frameRect = PixelRect(x: 0, y: 0, width: outputWidth, height: outputHeight)
        for i in 0..<dirty.count {
            let r = dirty[i].intersection(frameRect)
            if r.isEmpty { continue }
            let c0 = Int(r.x) / ts, c1 = (Int(r.maxX) - 1) / ts
            let r0 = Int(r.y) / ts, r1 = (Int(r.maxY) - 1) / ts
            for row in r0...r1 {
                (marks + row * columns + c0).update(repeating: 1, count: c1 - c0 + 1)
            }
        }
        var converted = 0
        for row in 0..<rows {
            let y = row * ts
            let h = min(ts, outputHeight - y)
            let rowMarks = marks + row * columns
            var col = 0
            while col < columns {
                if rowMarks[col] == 0 { col += 1; continue }
                let start = col
                while col < columns && rowMarks[col] != 0 { col += 1 }
                let x = start * ts
                let w = min(col * ts, outputWidth) - x
                convertRect(image, x: x, y: y, width: w, height: h, picture)
                converted += w * h
            }
        }
        return converted
    }

    /// BT709Conversion of one even-aligned rectangle of the output.
    @inline(__always)
    private func convertRect(_ image: PixelBufferView, x: Int, y: Int, width: Int, height: Int, _ picture: PlanarYUV) {
        BT709Conversion.convert(
            source: UnsafeRawPointer(image.baseAddress) + y * image.bytesPerRow + x * 4, bytesPerRow: image.bytesPerRow,
            width: width, height: height,
            y: picture.y + y * picture.yStride + x, yStride: picture.yStride,
            u: picture.u + (y / 2) * picture.uStride + x / 2, uStride: picture.uStride,
            v: picture.v + (y / 2) * picture.vStride + x / 2, vStride: picture.vStride)
    }
}

/// The planes of an 8-bit YUV 4:2:0 picture (I420): where they are and their
/// row strides in bytes. Chroma planes are (width/2) x (height/2).
struct PlanarYUV {
    var y: UnsafeMutablePointer<UInt8>
    var u: UnsafeMutablePointer<UInt8>
    var v: UnsafeMutablePointer<UInt8>
    var yStride: Int
    var uStride: Int
    var vStride: Int
}
