internal import CFFmpeg
import CaptureCore

/// BGR0 (XShm depth 24) -> YUV420P into a persistent picture, either whole or
/// only where the picture changed.
///
/// Partial conversion is exact: the output grid is cut into tiles of
/// `tileWidth` x `tileHeight` pixels (both even, so a tile never splits a 2x2
/// chroma block), and each horizontal run of dirty tiles in one tile row is
/// converted as its own small image (one sws_scale call) straight into the
/// persistent picture. With `SWS_AREA | SWS_ACCURATE_RND` and no scaling, luma is
/// a 1:1 (single-tap) transform and chroma a 2:1 box in both directions, so an
/// output sample depends only on its own 2x2 block and a run gives the same
/// bytes as a whole-frame conversion. Measured on this FFmpeg (5.1), random
/// images, tiles from 64x16 to 256x64, odd/tiny frames: 0 differing bytes.
/// Other choices measured and rejected: SWS_AREA without ACCURATE_RND (a few
/// chroma samples off by 1), bilinear/bicubic (chroma off by up to 20: their
/// vertical taps reach the neighbouring rows), fast-bilinear (luma differs),
/// point (exact but drops every other chroma row). One swscale quirk: an image
/// only 2 rows high gets a different chroma row than the same rows inside a
/// taller image, so the last tile row is never made 2 pixels high.
/// ConversionTests checks all of this on every run.
///
/// One swscale context exists per run width and tile-row height; all are built
/// in `init` (about 6 MB for 1920x1080), so converting never allocates.
///
/// With scaling (maxHeight), every update is a full conversion.
final class PictureConverter {
    static let tileWidth = 128
    static let tileHeight = 32
    static let swsFlags = SWS_AREA | SWS_ACCURATE_RND

    let sourceWidth: Int
    let sourceHeight: Int
    let outputWidth: Int
    let outputHeight: Int
    let isScaling: Bool

    /// Whole-frame context: source (cropped to even size unless scaling) -> output.
    private let fullContext: OpaquePointer
    /// Tile-run contexts, indexed by `heightVariant * widthSlots + runWidth / 2`.
    private let runContexts: UnsafeMutablePointer<OpaquePointer?>
    private let widthSlots: Int
    private let heightVariants: Int
    private let columns: Int
    private let rows: Int
    private let lastRowHeight: Int
    /// One byte per tile: 1 = convert this time. Cleared on each update.
    private let marks: UnsafeMutablePointer<UInt8>

    // Argument arrays for sws_scale, reused on every call.
    private let srcPlanes: UnsafeMutablePointer<UnsafePointer<UInt8>?>
    private let srcStrides: UnsafeMutablePointer<Int32>
    private let dstPlanes: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>
    private let dstStrides: UnsafeMutablePointer<Int32>

    init(sourceWidth: Int, sourceHeight: Int, outputWidth: Int, outputHeight: Int) throws(CaptureError) {
        self.sourceWidth = sourceWidth
        self.sourceHeight = sourceHeight
        self.outputWidth = outputWidth
        self.outputHeight = outputHeight
        let evenW = sourceWidth & ~1, evenH = sourceHeight & ~1
        isScaling = !(outputWidth == evenW && outputHeight == evenH)

        srcPlanes = .allocate(capacity: 4); srcPlanes.initialize(repeating: nil, count: 4)
        srcStrides = .allocate(capacity: 4); srcStrides.initialize(repeating: 0, count: 4)
        dstPlanes = .allocate(capacity: 4); dstPlanes.initialize(repeating: nil, count: 4)
        dstStrides = .allocate(capacity: 4); dstStrides.initialize(repeating: 0, count: 4)

        let tw = Self.tileWidth, th = Self.tileHeight
        columns = (outputWidth + tw - 1) / tw
        // swscale treats a 2-row image differently from the same two rows inside a
        // taller one (its single chroma row differs, measured), so a last tile row
        // of height 2 is merged into the row above it (height tileHeight + 2).
        var r = (outputHeight + th - 1) / th
        if r > 1 && outputHeight - (r - 1) * th == 2 { r -= 1 }
        rows = r
        lastRowHeight = outputHeight - (rows - 1) * th
        heightVariants = lastRowHeight == th ? 1 : 2
        widthSlots = outputWidth / 2 + 1
        marks = .allocate(capacity: max(1, columns * rows))
        marks.initialize(repeating: 0, count: max(1, columns * rows))
        let slotCount = isScaling ? 1 : widthSlots * heightVariants
        runContexts = .allocate(capacity: slotCount)
        runContexts.initialize(repeating: nil, count: slotCount)

        let inW = isScaling ? sourceWidth : outputWidth
        let inH = isScaling ? sourceHeight : outputHeight
        guard let full = Self.makeContext(inW, inH, outputWidth, outputHeight) else {
            Self.release(runContexts, count: slotCount)
            marks.deallocate(); srcPlanes.deallocate(); srcStrides.deallocate()
            dstPlanes.deallocate(); dstStrides.deallocate()
            throw CaptureError(.encoderError,
                "sws_getContext failed for \(inW)x\(inH) BGR0 -> \(outputWidth)x\(outputHeight) YUV420P; check the sizes")
        }
        fullContext = full
        if isScaling { return }

        // Run widths: k full tiles not touching the right edge, or j full tiles
        // plus the (possibly narrower) last column.
        let lastColumnWidth = outputWidth - (columns - 1) * tw
        var widths: [Int] = []
        for k in stride(from: 1, to: columns, by: 1) { widths.append(k * tw) }
        for j in 0..<columns { widths.append(j * tw + lastColumnWidth) }
        for v in 0..<heightVariants {
            // Variant 0: full tile rows (height th); variant 1: the last row, when different.
            if v == 0 && heightVariants == 2 && rows == 1 { continue }
            let h = v == 0 ? th : lastRowHeight
            for w in widths where runContexts[v * widthSlots + w / 2] == nil {
                guard let c = Self.makeContext(w, h, w, h) else {
                    throw CaptureError(.encoderError, "sws_getContext failed for a \(w)x\(h) tile run")
                }
                runContexts[v * widthSlots + w / 2] = c
            }
        }
    }

    private static func makeContext(_ sw: Int, _ sh: Int, _ dw: Int, _ dh: Int) -> OpaquePointer? {
        guard let c = sws_getContext(Int32(sw), Int32(sh), AV_PIX_FMT_BGR0, Int32(dw), Int32(dh),
                                     AV_PIX_FMT_YUV420P, swsFlags, nil, nil, nil) else { return nil }
        // BT.709 matrix, limited ("TV") range output; the encoder tags the VUI the same.
        let coefficients = sws_getCoefficients(SWS_CS_ITU709)
        _ = sws_setColorspaceDetails(c, coefficients, 1, coefficients, 0, 0, 1 << 16, 1 << 16)
        return c
    }

    private static func release(_ contexts: UnsafeMutablePointer<OpaquePointer?>, count: Int) {
        for i in 0..<count where contexts[i] != nil { sws_freeContext(contexts[i]) }
        contexts.deallocate()
    }

    deinit {
        sws_freeContext(fullContext)
        Self.release(runContexts, count: isScaling ? 1 : widthSlots * heightVariants)
        marks.deallocate()
        srcPlanes.deallocate(); srcStrides.deallocate()
        dstPlanes.deallocate(); dstStrides.deallocate()
    }

    /// Converts `image` (at least sourceWidth x sourceHeight) into `picture`.
    /// Returns the number of output pixels converted.
    func convert(_ image: PixelBufferView, dirty: DirtyRegion?, into picture: PlanarYUV) -> Int {
        srcStrides[0] = Int32(image.bytesPerRow)
        dstStrides[0] = Int32(picture.yStride)
        dstStrides[1] = Int32(picture.uStride)
        dstStrides[2] = Int32(picture.vStride)

        if let dirty {
            if dirty.isEmpty { return 0 }
            let b = dirty.bounds
            let coversAll = b.x <= 0 && b.y <= 0 && Int(b.maxX) >= outputWidth && Int(b.maxY) >= outputHeight
            if !isScaling && !coversAll { return convertTiles(image, dirty, picture) }
        }
        srcPlanes[0] = UnsafePointer(image.baseAddress.assumingMemoryBound(to: UInt8.self))
        dstPlanes[0] = picture.y
        dstPlanes[1] = picture.u
        dstPlanes[2] = picture.v
        let inH = isScaling ? sourceHeight : outputHeight
        _ = sws_scale(fullContext, srcPlanes, srcStrides, 0, Int32(inH), dstPlanes, dstStrides)
        return outputWidth * outputHeight
    }

    private func convertTiles(_ image: PixelBufferView, _ dirty: DirtyRegion, _ picture: PlanarYUV) -> Int {
        let tw = Self.tileWidth, th = Self.tileHeight
        marks.update(repeating: 0, count: columns * rows)
        let frameRect = PixelRect(x: 0, y: 0, width: outputWidth, height: outputHeight)
        for i in 0..<dirty.count {
            let r = dirty[i].intersection(frameRect)
            if r.isEmpty { continue }
            let c0 = Int(r.x) / tw, c1 = (Int(r.maxX) - 1) / tw
            let r0 = min(Int(r.y) / th, rows - 1), r1 = min((Int(r.maxY) - 1) / th, rows - 1)
            for row in r0...r1 {
                let base = marks + row * columns
                for col in c0...c1 { base[col] = 1 }
            }
        }

        let src = image.baseAddress.assumingMemoryBound(to: UInt8.self)
        let bpr = image.bytesPerRow
        let y0 = picture.y, u0 = picture.u, v0 = picture.v
        let ls0 = picture.yStride, ls1 = picture.uStride, ls2 = picture.vStride
        var converted = 0
        for row in 0..<rows {
            let h = row == rows - 1 ? lastRowHeight : th
            let variant = h == th ? 0 : 1
            let y = row * th
            let rowMarks = marks + row * columns
            var col = 0
            while col < columns {
                if rowMarks[col] == 0 { col += 1; continue }
                let start = col
                while col < columns && rowMarks[col] != 0 { col += 1 }
                let x = start * tw
                let w = min(col * tw, outputWidth) - x
                guard let ctx = runContexts[variant * widthSlots + w / 2] else {
                    assertionFailure("no swscale context for a \(w)x\(h) run")
                    continue
                }
                srcPlanes[0] = UnsafePointer(src + y * bpr + x * 4)
                dstPlanes[0] = y0 + y * ls0 + x
                dstPlanes[1] = u0 + (y / 2) * ls1 + x / 2
                dstPlanes[2] = v0 + (y / 2) * ls2 + x / 2
                _ = sws_scale(ctx, srcPlanes, srcStrides, 0, Int32(h), dstPlanes, dstStrides)
                converted += w * h
            }
        }
        return converted
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
