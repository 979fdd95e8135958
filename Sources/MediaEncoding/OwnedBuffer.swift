/// Memory of our own that C code reads or writes through a pointer (picture planes,
/// x264's picture structs, macroblock hints, swscale's argument arrays): allocated
/// once, freed with its owner, so an initializer that throws halfway leaks none of it.
/// Elements are plain values (BitwiseCopyable): nothing to deinitialize.
struct OwnedBuffer<Element: BitwiseCopyable>: ~Copyable {
    let pointer: UnsafeMutablePointer<Element>

    init(count: Int, repeating value: Element, alignment: Int = MemoryLayout<Element>.alignment) {
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * MemoryLayout<Element>.stride,
                                                     alignment: max(alignment, MemoryLayout<Element>.alignment))
        pointer = bytes.initializeMemory(as: Element.self, repeating: value, count: count)
    }

    deinit {
        UnsafeMutableRawPointer(pointer).deallocate()
    }
}
