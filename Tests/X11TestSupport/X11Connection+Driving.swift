public import CaptureCore
public import X11Capture
internal import CX11

// Driving the X server from a test, through the capture's own connection: drawing on the
// root window, moving the pointer, setting its cursor. Test support only: the capture never
// draws or moves anything, so none of this ships in X11Capture.
extension X11Connection {

    /// Fills `rect` (root coordinates) of the root window with the 0xRRGGBB `color`,
    /// under any child windows' clipping (ClipByChildren), and waits until the server did it.
    public func fillRootRectangle(_ rect: PixelRect, color: UInt32) throws(CaptureError) {
        try checkAlive()
        let gc = XCreateGC(display, root, 0, nil)
        XSetForeground(display, gc, UInt(color))
        XFillRectangle(display, root, gc, rect.x, rect.y, UInt32(max(rect.width, 0)), UInt32(max(rect.height, 0)))
        XFreeGC(display, gc)
        XSync(display, 0)
        try checkAlive()
    }

    /// Moves the pointer to (x, y) on the root window and waits until the server did it.
    public func warpPointer(x: Int, y: Int) throws(CaptureError) {
        try checkAlive()
        XWarpPointer(display, 0, root, 0, 0, 0, 0, Int32(x), Int32(y))
        XSync(display, 0)
        try checkAlive()
    }

    /// Sets the root window's cursor to glyph `shape` of the standard cursor font
    /// (X11/cursorfont.h, e.g. 68 = XC_left_ptr, 152 = XC_xterm), or back to the default
    /// for nil. Waits until the server did it.
    public func defineRootCursor(fontShape shape: Int?) throws(CaptureError) {
        try checkAlive()
        if let shape {
            let cursor = XCreateFontCursor(display, UInt32(shape))
            XDefineCursor(display, root, cursor)
            XFreeCursor(display, cursor)
        } else {
            XUndefineCursor(display, root)
        }
        XSync(display, 0)
        try checkAlive()
    }

    /// Where the pointer is, in root coordinates (nil when it is on another screen).
    public func pointerPosition() throws(CaptureError) -> (x: Int, y: Int)? {
        try checkAlive()
        var rootReturn: Window = 0, child: Window = 0
        var rx: Int32 = 0, ry: Int32 = 0, wx: Int32 = 0, wy: Int32 = 0
        var mask: UInt32 = 0
        let onScreen = XQueryPointer(display, root, &rootReturn, &child, &rx, &ry, &wx, &wy, &mask) != 0
        try checkAlive()
        return onScreen ? (Int(rx), Int(ry)) : nil
    }

    /// Round trip to the server: everything sent so far has been processed when it returns.
    public func sync() throws(CaptureError) {
        try checkAlive()
        XSync(display, 0)
        try checkAlive()
    }
}
