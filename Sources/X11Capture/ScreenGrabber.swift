import CX11
public import CaptureCore
public import CaptureConcurrency
import PixelConversion
#if canImport(Glibc)
import Glibc
#endif

/// Grabs one monitor's rectangle, frame after frame, into a pool of preallocated images.
///
/// Owned by the thread that owns its `X11Connection` (not thread-safe, not Sendable).
/// Per frame (`grab`, `pollChanges`) it allocates nothing: the images, the cursor cache and
/// the dirty-region bookkeeping are all created up front and reused.
///
/// Change tracking: a DAMAGE object on the root window in raw-rectangle mode streams one
/// event per drawn rectangle (no round trip, no region fetch). Each event carries the
/// sequence number of the last request of ours the server had processed when the drawing
/// happened, so events that arrive together with a grab's reply are split exactly into
/// "drawn before the snapshot" (reported now) and "drawn after it" (kept for the next grab).
public final class ScreenGrabber {
    public let connection: X11Connection
    /// The monitor this grabber captures (root coordinates).
    public let region: MonitorInfo
    public let width: Int
    public let height: Int
    /// False when MIT-SHM is missing or failed: the slower XGetImage path is used (see `warnings`).
    public private(set) var usesShm: Bool
    /// Non-fatal problems found while setting up (no MIT-SHM, no DAMAGE, no XFIXES...).
    public private(set) var warnings: [String] = []
    /// Whether the pointer is composited into the grabbed pixels.
    public let drawCursor: Bool
    /// Number of pool slots.
    public var poolSize: Int { slots.count }

    private struct Slot {
        let image: UnsafeMutablePointer<XImage>
        let shmInfo: UnsafeMutablePointer<XShmSegmentInfo>?  // nil: plain XImage over `pixels`
        let pixels: UnsafeMutableRawPointer
        let bytesPerRow: Int
    }

    private let live = ScreenGrabber.liveInstances.token()
    public static let liveInstances = LiveInstances("ScreenGrabber")

    private var slots: [Slot] = []
    private let regionRect: PixelRect          // root coordinates
    private var damage: Damage = 0             // 0: no DAMAGE, every grab reports everything
    private var needsFull = true
    private var pending = DirtyRegion()        // changes since the last grab, frame coordinates
    private var carry = DirtyRegion()          // changes drawn after the snapshot being taken
    private var splitSerial: UInt = .max       // during a grab: the GetImage request's serial

    // Cursor cache: premultiplied ARGB (0xAARRGGBB; BGRA bytes in memory), reused.
    private let cursorEnabled: Bool
    private var cursorPixels: UnsafeMutablePointer<UInt32>
    private var cursorCapacity: Int
    private var cursorWidth = 0, cursorHeight = 0, cursorXHot = 0, cursorYHot = 0
    private var cursorSerial: UInt = 0
    private var hasCursorImage = false
    private var cursorImageStale = true
    private var cursorImageChangedSinceGrab = false
    private var lastCursorRect = PixelRect.zero    // frame coordinates, unclipped; .zero if not visible
    // The pointer position pollChanges() just queried, reused by a grab() that follows at
    // once (saves a round trip per changed frame; the drawn position is what gets tracked).
    private var polledCursorRect = PixelRect.zero
    private var polledCursorTime: Int64 = 0
    private var polledCursorValid = false
    private static let polledCursorMaxAgeNs: Int64 = 2_000_000

    /// - Parameters:
    ///   - region: the monitor to capture; must lie inside the root window.
    ///   - poolSize: number of images to preallocate (1...64).
    ///   - drawCursor: composite the pointer into the pixels.
    ///   - allowShm: false forces the XGetImage path (for tests and diagnostics).
    public init(connection: X11Connection, region: MonitorInfo, poolSize: Int,
                drawCursor: Bool = true, allowShm: Bool = true) throws(CaptureError) {
        guard (1...64).contains(poolSize) else {
            throw CaptureError(.invalidRequest, "grabber pool size \(poolSize) is out of range; use 1 to 64 images")
        }
        guard region.width > 0, region.height > 0 else {
            throw CaptureError(.invalidRequest, "monitor \(region.index) '\(region.name)' has an empty size \(region.width)x\(region.height)")
        }
        try connection.checkAlive()
        // Refreshes the root size; the region must still fit the screen.
        _ = try connection.monitors()
        guard region.x >= 0, region.y >= 0,
              region.x + region.width <= connection.rootWidth,
              region.y + region.height <= connection.rootHeight else {
            throw CaptureError(.displayUnavailable,
                               "monitor \(region.index) '\(region.name)' (\(region.width)x\(region.height)+\(region.x)+\(region.y)) does not fit the X screen (\(connection.rootWidth)x\(connection.rootHeight)) any more; the screen layout changed: list the monitors again")
        }

        self.connection = connection
        self.region = region
        self.width = region.width
        self.height = region.height
        self.regionRect = region.rect
        self.drawCursor = drawCursor
        self.cursorEnabled = drawCursor && connection.hasXFixes
        self.usesShm = false
        self.cursorCapacity = 64 * 64
        self.cursorPixels = .allocate(capacity: 64 * 64)
        slots.reserveCapacity(poolSize)

        // From here on deinit cleans up whatever was created.
        try Self.checkVisual(connection)

        if allowShm && connection.hasShm {
            if let problem = createShmSlots(count: poolSize) {
                detachShmSlots()
                destroySlots()
                warnings.append("MIT-SHM failed (\(problem)); falling back to XGetImage, which copies every frame through the socket and costs much more CPU")
            } else {
                usesShm = true
            }
        } else if allowShm {
            warnings.append("the X server has no MIT-SHM extension (remote display?); falling back to XGetImage, which copies every frame through the socket and costs much more CPU")
        } else {
            warnings.append("MIT-SHM disabled by the caller; using XGetImage")
        }
        if !usesShm {
            try createPlainSlots(count: poolSize)
        }
        try validateImageFormat(slots[0].image)

        if connection.hasDamage {
            damage = XDamageCreate(connection.display, connection.root, Int32(XDamageReportRawRectangles))
        } else {
            warnings.append("the X server has no DAMAGE extension; every frame is reported as fully changed")
        }
        if cursorEnabled {
            XFixesSelectCursorInput(connection.display, connection.root, UInt(XFixesDisplayCursorNotifyMask))
        } else if drawCursor {
            warnings.append("the X server has no XFIXES 2 extension; the pointer is not drawn into the frames")
        }
        connection.addEventSink(self)
        let errorsBefore = connection.protocolErrorCount
        XSync(connection.display, 0)
        try connection.checkAlive()
        if connection.protocolErrorCount != errorsBefore {
            throw CaptureError(.displayUnavailable, "setting up change tracking on '\(connection.displayName)' failed: \(connection.health.lastProtocolErrorDescription)")
        }
    }

    deinit {
        connection.removeEventSink(self)
        if connection.isAlive && damage != 0 { XDamageDestroy(connection.display, damage) }
        detachShmSlots()
        destroySlots()
        cursorPixels.deallocate()
    }

    // MARK: Public API

    /// Memory of pool slot `slot` (stable address for the grabber's lifetime; BGRX 32 bpp).
    public func pixels(slot: Int) -> PixelBufferView {
        let s = slots[slot]
        return PixelBufferView(baseAddress: s.pixels, width: width, height: height, bytesPerRow: s.bytesPerRow)
    }

    /// Processes pending X events (damage, cursor notify) without blocking. Returns true when
    /// something inside the region changed (damage, or the cursor moved or changed) since the
    /// last grab(). Always true without DAMAGE. Throws DISPLAY_UNAVAILABLE when the server
    /// went away.
    public func pollChanges() throws(CaptureError) -> Bool {
        try connection.drainEvents()
        if damage == 0 || needsFull || !pending.isEmpty { return true }
        if cursorEnabled {
            try refreshCursorImageIfNeeded()
            let rect = try currentCursorRect()
            polledCursorRect = rect
            polledCursorTime = MonotonicClock.now()
            polledCursorValid = true
            if rect != lastCursorRect { return true }
            if cursorImageChangedSinceGrab && !rect.isEmpty { return true }
        }
        return false
    }

    /// Grabs the region into `slot`, composites the cursor, and returns what changed relative
    /// to the previous grab (any slot): damage inside the region plus the old and new cursor
    /// rectangles, in frame coordinates. The first grab (or the first after `invalidate()`)
    /// returns the full region. Throws DISPLAY_UNAVAILABLE when the server went away or the
    /// grab failed (e.g. the screen shrank under the monitor).
    public func grab(into slot: Int) throws(CaptureError) -> DirtyRegion {
        precondition(slot >= 0 && slot < slots.count, "slot \(slot) outside the pool of \(slots.count)")
        let dpy = connection.display
        try connection.drainEvents()

        var cursorRect = PixelRect.zero
        if cursorEnabled {
            try refreshCursorImageIfNeeded()
            if polledCursorValid && MonotonicClock.now() - polledCursorTime < Self.polledCursorMaxAgeNs {
                cursorRect = polledCursorRect
            } else {
                cursorRect = try currentCursorRect()
            }
            polledCursorValid = false
        }

        let s = slots[slot]
        splitSerial = XNextRequest(dpy)
        let ok: Bool
        if usesShm {
            ok = XShmGetImage(dpy, connection.root, s.image, regionRect.x, regionRect.y, XAllPlanes()) != 0
        } else {
            ok = XGetSubImage(dpy, connection.root, regionRect.x, regionRect.y, UInt32(width), UInt32(height),
                              XAllPlanes(), ZPixmap, s.image, 0, 0) != nil
        }
        if !ok {
            splitSerial = .max
            try connection.checkAlive()
            needsFull = true
            throw CaptureError(.displayUnavailable,
                               "grabbing monitor \(region.index) '\(region.name)' (\(width)x\(height)+\(region.x)+\(region.y)) failed with \(connection.health.lastProtocolErrorDescription); the screen layout probably changed: list the monitors again and restart this display's capture")
        }
        // Events that came in with the reply: before the snapshot -> pending, after -> carry.
        do {
            try connection.drainEvents()
        } catch {
            splitSerial = .max
            throw error
        }
        splitSerial = .max

        if !cursorRect.isEmpty {
            composite(into: s, cursorAt: cursorRect)
        }

        var dirty: DirtyRegion
        if needsFull || damage == 0 {
            dirty = .full(width: width, height: height)
        } else {
            dirty = pending
            if cursorRect != lastCursorRect || (cursorImageChangedSinceGrab && !cursorRect.isEmpty) {
                let frame = PixelRect(x: 0, y: 0, width: width, height: height)
                dirty.add(lastCursorRect.intersection(frame))
                dirty.add(cursorRect.intersection(frame))
            }
        }
        pending = carry
        carry.removeAll()
        needsFull = false
        lastCursorRect = cursorRect
        cursorImageChangedSinceGrab = false
        return dirty
    }

    /// Forgets accumulated state so that the next grab reports the full region.
    public func invalidate() {
        needsFull = true
    }

    // MARK: Events (called by the connection while it drains its queue)

    func noteDamage(_ event: XDamageNotifyEvent) {
        guard event.damage == damage else { return }
        let area = PixelRect(x: Int(event.area.x), y: Int(event.area.y),
                             width: Int(event.area.width), height: Int(event.area.height))
        let clipped = area.intersection(regionRect)
        if clipped.isEmpty { return }
        let local = PixelRect(x: Int(clipped.x - regionRect.x), y: Int(clipped.y - regionRect.y),
                              width: Int(clipped.width), height: Int(clipped.height))
        if event.serial >= splitSerial {
            carry.add(local)
        } else {
            pending.add(local)
        }
    }

    func noteCursorChanged() {
        cursorImageStale = true
    }

    // MARK: Cursor

    /// The cursor's rectangle in frame coordinates, not clipped (.zero when no part of it is
    /// visible in this region). One round trip (XQueryPointer).
    private func currentCursorRect() throws(CaptureError) -> PixelRect {
        guard hasCursorImage else { return .zero }
        var rootReturn: Window = 0, child: Window = 0
        var rx: Int32 = 0, ry: Int32 = 0, wx: Int32 = 0, wy: Int32 = 0
        var mask: UInt32 = 0
        let onScreen = XQueryPointer(connection.display, connection.root, &rootReturn, &child,
                                     &rx, &ry, &wx, &wy, &mask) != 0
        try connection.checkAlive()
        guard onScreen else { return .zero }
        let rect = PixelRect(x: Int(rx) - cursorXHot - region.x, y: Int(ry) - cursorYHot - region.y,
                             width: cursorWidth, height: cursorHeight)
        return rect.intersection(PixelRect(x: 0, y: 0, width: width, height: height)).isEmpty ? .zero : rect
    }

    /// Re-fetches the cursor image after a CursorNotify (cold path: only when it changed).
    private func refreshCursorImageIfNeeded() throws(CaptureError) {
        guard cursorImageStale else { return }
        cursorImageStale = false
        guard let image = XFixesGetCursorImage(connection.display) else {
            try connection.checkAlive()
            if hasCursorImage { cursorImageChangedSinceGrab = true }
            hasCursorImage = false
            polledCursorValid = false
            return
        }
        defer { XFree(image) }
        let c = image.pointee
        if hasCursorImage && c.cursor_serial == cursorSerial { return }
        let w = Int(c.width), h = Int(c.height)
        if w * h > cursorCapacity {
            cursorPixels.deallocate()
            cursorCapacity = w * h
            cursorPixels = .allocate(capacity: cursorCapacity)
        }
        // `unsigned long` pixels, premultiplied ARGB in the low 32 bits. Clamp colour to alpha
        // so a malformed image cannot overflow the blend.
        for i in 0..<(w * h) {
            let p = UInt32(truncatingIfNeeded: c.pixels[i])
            let a = p >> 24
            let r = min((p >> 16) & 0xFF, a), g = min((p >> 8) & 0xFF, a), b = min(p & 0xFF, a)
            cursorPixels[i] = a << 24 | r << 16 | g << 8 | b
        }
        cursorWidth = w
        cursorHeight = h
        cursorXHot = Int(c.xhot)
        cursorYHot = Int(c.yhot)
        cursorSerial = c.cursor_serial
        hasCursorImage = w > 0 && h > 0
        cursorImageChangedSinceGrab = true
        polledCursorValid = false   // its rectangle used the old image's size and hotspot
    }

    /// Alpha-blends the cached premultiplied cursor at `rect` (frame coordinates, possibly
    /// partly outside) over the slot's pixels.
    private func composite(into slot: Slot, cursorAt rect: PixelRect) {
        PixelBlit.blendPremultiplied(cursorPixels, imageWidth: cursorWidth, imageHeight: cursorHeight,
                                     atX: Int(rect.x), y: Int(rect.y), over: slot.pixels,
                                     pictureBytesPerRow: slot.bytesPerRow, pictureWidth: width, pictureHeight: height)
    }

    // MARK: Images

    private static func checkVisual(_ connection: X11Connection) throws(CaptureError) {
        let v = connection.visual.pointee
        let depth = connection.depth
        guard depth == 24 || depth == 32,
              v.red_mask == 0xFF_0000, v.green_mask == 0xFF00, v.blue_mask == 0xFF else {
            throw CaptureError(.displayUnavailable,
                               "X display '\(connection.displayName)' has a depth-\(depth) visual (masks \(String(v.red_mask, radix: 16))/\(String(v.green_mask, radix: 16))/\(String(v.blue_mask, radix: 16))); only 24-bit true colour (32 bits per pixel, BGRX) is supported: run the X server at depth 24")
        }
    }

    private func validateImageFormat(_ image: UnsafeMutablePointer<XImage>) throws(CaptureError) {
        let i = image.pointee
        guard i.bits_per_pixel == 32, i.byte_order == LSBFirst,
              i.red_mask == 0xFF_0000, i.green_mask == 0xFF00, i.blue_mask == 0xFF,
              Int(i.bytes_per_line) >= width * 4 else {
            throw CaptureError(.displayUnavailable,
                               "X display '\(connection.displayName)' delivers \(i.bits_per_pixel)-bit pixels (depth \(i.depth), byte order \(i.byte_order)); only 24-bit true colour at 32 bits per pixel, little endian (BGRX) is supported: run the X server at depth 24")
        }
    }

    /// Creates `count` XShm images; returns a description of the problem instead on failure
    /// (the caller then destroys whatever was created and falls back).
    private func createShmSlots(count: Int) -> String? {
        let dpy = connection.display
        for _ in 0..<count {
            let info = UnsafeMutablePointer<XShmSegmentInfo>.allocate(capacity: 1)
            info.initialize(to: XShmSegmentInfo())
            guard let image = XShmCreateImage(dpy, connection.visual, UInt32(connection.depth), ZPixmap, nil,
                                              info, UInt32(width), UInt32(height)) else {
                info.deallocate()
                return "XShmCreateImage returned nothing"
            }
            let bitsPerPixel = image.pointee.bits_per_pixel
            if bitsPerPixel != 32 {
                _ = cx11_destroy_image(image)
                info.deallocate()
                return "the server's images have \(bitsPerPixel) bits per pixel"
            }
            let bytesPerRow = Int(image.pointee.bytes_per_line)
            let size = bytesPerRow * height
            let id = shmget(0 /* IPC_PRIVATE */, size, IPC_CREAT | 0o600)
            if id < 0 {
                let err = errno
                _ = cx11_destroy_image(image)
                info.deallocate()
                return "shmget of \(size) bytes failed: \(String(cString: strerror(err))) (check kernel.shmmax / shmall)"
            }
            guard let address = shmat(id, nil, 0), address != UnsafeMutableRawPointer(bitPattern: -1) else {
                let err = errno
                shmctl(id, IPC_RMID, nil)
                _ = cx11_destroy_image(image)
                info.deallocate()
                return "shmat failed: \(String(cString: strerror(err)))"
            }
            info.pointee.shmid = id
            info.pointee.shmaddr = address.assumingMemoryBound(to: CChar.self)
            info.pointee.readOnly = 0
            image.pointee.data = address.assumingMemoryBound(to: CChar.self)

            let errorsBefore = connection.protocolErrorCount
            let attached = XShmAttach(dpy, info) != 0
            XSync(dpy, 0)
            // The server holds its own attachment now (or never will): mark the segment for
            // removal so it disappears with the last detach, even if this process crashes.
            shmctl(id, IPC_RMID, nil)
            let failed = !attached || connection.protocolErrorCount != errorsBefore || !connection.isAlive
            if failed {
                shmdt(address)
                image.pointee.data = nil
                _ = cx11_destroy_image(image)
                info.deallocate()
                return connection.isAlive
                    ? "XShmAttach failed: \(connection.health.lastProtocolErrorDescription) (the X server cannot share memory with this process, e.g. a remote display or another IPC namespace)"
                    : "the X server went away"
            }
            slots.append(Slot(image: image, shmInfo: info, pixels: address, bytesPerRow: bytesPerRow))
        }
        return nil
    }

    /// Creates `count` client-side images over our own buffers for the XGetImage path.
    private func createPlainSlots(count: Int) throws(CaptureError) {
        for _ in 0..<count {
            guard let image = XCreateImage(connection.display, connection.visual, UInt32(connection.depth), ZPixmap, 0,
                                           nil, UInt32(width), UInt32(height), 32, 0) else {
                throw CaptureError(.displayUnavailable, "XCreateImage failed for a \(width)x\(height) image")
            }
            let bytesPerRow = Int(image.pointee.bytes_per_line)
            guard image.pointee.bits_per_pixel == 32, let buffer = aligned(bytesPerRow * height) else {
                let bpp = image.pointee.bits_per_pixel
                _ = cx11_destroy_image(image)
                throw CaptureError(.displayUnavailable,
                                   "X display '\(connection.displayName)' uses \(bpp) bits per pixel; only 24-bit true colour at 32 bits per pixel (BGRX) is supported: run the X server at depth 24")
            }
            image.pointee.data = buffer.assumingMemoryBound(to: CChar.self)
            slots.append(Slot(image: image, shmInfo: nil, pixels: buffer, bytesPerRow: bytesPerRow))
        }
    }

    private func aligned(_ size: Int) -> UnsafeMutableRawPointer? {
        var p: UnsafeMutableRawPointer?
        return posix_memalign(&p, 64, size) == 0 ? p : nil
    }

    /// Detaches the server from every shared segment (no-op on a dead connection).
    private func detachShmSlots() {
        guard connection.isAlive else { return }
        for slot in slots {
            if let info = slot.shmInfo { XShmDetach(connection.display, info) }
        }
        XSync(connection.display, 0)
    }

    /// Frees every slot's client-side memory (the caller detached the server side first).
    private func destroySlots() {
        for slot in slots {
            if let info = slot.shmInfo {
                shmdt(slot.pixels)
                slot.image.pointee.data = nil
                _ = cx11_destroy_image(slot.image)
                info.deallocate()
            } else {
                slot.image.pointee.data = nil
                _ = cx11_destroy_image(slot.image)
                free(slot.pixels)
            }
        }
        slots.removeAll()
    }
}
