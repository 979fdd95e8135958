/// An axis-aligned rectangle in pixels, origin top-left.
public struct PixelRect: Sendable, Hashable, BitwiseCopyable, CustomStringConvertible {
    public var x: Int32
    public var y: Int32
    public var width: Int32
    public var height: Int32

    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = Int32(x); self.y = Int32(y); self.width = Int32(width); self.height = Int32(height)
    }

    public static let zero = PixelRect(x: 0, y: 0, width: 0, height: 0)

    public var isEmpty: Bool { width <= 0 || height <= 0 }
    public var maxX: Int32 { x + width }
    public var maxY: Int32 { y + height }

    public func intersection(_ other: PixelRect) -> PixelRect {
        let x0 = max(x, other.x), y0 = max(y, other.y)
        let x1 = min(maxX, other.maxX), y1 = min(maxY, other.maxY)
        if x1 <= x0 || y1 <= y0 { return .zero }
        return PixelRect(x: Int(x0), y: Int(y0), width: Int(x1 - x0), height: Int(y1 - y0))
    }

    public func union(_ other: PixelRect) -> PixelRect {
        if isEmpty { return other }
        if other.isEmpty { return self }
        let x0 = min(x, other.x), y0 = min(y, other.y)
        let x1 = max(maxX, other.maxX), y1 = max(maxY, other.maxY)
        return PixelRect(x: Int(x0), y: Int(y0), width: Int(x1 - x0), height: Int(y1 - y0))
    }

    public var area: Int { isEmpty ? 0 : Int(width) * Int(height) }

    public var description: String { "\(width)x\(height)+\(x)+\(y)" }
}

/// The part of a frame that changed since the previous delivered frame, as at
/// most `DirtyRegion.capacity` rectangles. A fixed-size value type: building,
/// copying and passing it through a ring never allocates. When more rectangles
/// arrive than fit, the two whose union grows the covered area least are merged,
/// so the region only ever over-approximates (never misses a change).
public struct DirtyRegion: Sendable, BitwiseCopyable {
    public static let capacity = 16
    private var storage: InlineArray<16, PixelRect>
    public private(set) var count: Int

    public init() {
        storage = InlineArray(repeating: .zero)
        count = 0
    }

    /// A region covering the whole `width` x `height` frame.
    public static func full(width: Int, height: Int) -> DirtyRegion {
        var r = DirtyRegion()
        r.add(PixelRect(x: 0, y: 0, width: width, height: height))
        return r
    }

    public var isEmpty: Bool { count == 0 }

    public subscript(index: Int) -> PixelRect {
        precondition(index >= 0 && index < count)
        return storage[index]
    }

    /// The bounding box of every rectangle.
    public var bounds: PixelRect {
        var b = PixelRect.zero
        for i in 0..<count { b = b.union(storage[i]) }
        return b
    }

    /// Sum of the rectangles' areas (overlaps counted twice; an upper bound).
    public var area: Int {
        var a = 0
        for i in 0..<count { a += storage[i].area }
        return a
    }

    public mutating func removeAll() { count = 0 }

    /// Adds `rect`, clipped to nothing: callers clip to the frame first.
    public mutating func add(_ rect: PixelRect) {
        if rect.isEmpty { return }
        // Already covered? Covers others? Cheap containment checks first.
        for i in 0..<count {
            let r = storage[i]
            if r.union(rect) == r { return }
            if rect.union(r) == rect {
                storage[i] = rect
                return
            }
        }
        if count < Self.capacity {
            storage[count] = rect
            count += 1
            return
        }
        // Full: merge the new rect into the existing one where it adds least area.
        var best = 0
        var bestGrowth = Int.max
        for i in 0..<count {
            let growth = storage[i].union(rect).area - storage[i].area
            if growth < bestGrowth { bestGrowth = growth; best = i }
        }
        storage[best] = storage[best].union(rect)
    }

    public mutating func formUnion(_ other: DirtyRegion) {
        for i in 0..<other.count { add(other[i]) }
    }
}

/// One monitor of the desktop, as a display channel records it.
public struct MonitorInfo: Sendable, Hashable {
    /// 1-based: RandR monitor order on X11 (XRRGetMonitors with get_active = True); on
    /// Wayland primary first, then left to right, top to bottom (see `WaylandOutputs`).
    public var index: Int
    /// The monitor's name: RandR's on X11 ("DUMMY0", "screen"), the connector on Wayland
    /// ("DP-1", "Meta-0"). A display channel follows its monitor by this name.
    public var name: String
    /// Position and size: root-window pixels on X11, the compositor's logical coordinates on
    /// Wayland (a scaled monitor's pictures may have more pixels than that).
    public var x: Int, y: Int, width: Int, height: Int
    public var isPrimary: Bool

    public init(index: Int, name: String, x: Int, y: Int, width: Int, height: Int, isPrimary: Bool) {
        self.index = index
        self.name = name
        self.x = x
        self.y = y
        self.width = width
        self.height = height
        self.isPrimary = isPrimary
    }

    /// The monitor's rectangle in the desktop's coordinates.
    public var rect: PixelRect { PixelRect(x: x, y: y, width: width, height: height) }
}
