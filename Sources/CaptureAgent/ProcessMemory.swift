import LinuxSupport

/// How a process that records all day uses memory; the first thing `record` and the daemon do.
enum ProcessMemory {
    /// Buffers of a megabyte or more (frame pools, x264's planes and lookahead, chunk buffers)
    /// come and go with every session. glibc serves allocations above its mmap threshold with
    /// their own mappings, which free() returns to the kernel, but it raises that threshold to the
    /// size of every such block freed (up to 32 MB), so from the second session on the same
    /// buffers come from the heap, where freed memory stays resident and fragments: a daemon
    /// grew by 6-10 MB per session (valgrind: nothing leaked, nothing left reachable). A fixed
    /// threshold keeps them in mappings of their own. The hot paths allocate nothing, so this
    /// costs no per-frame system calls.
    static let mmapThreshold = 128 * 1024

    static func configure() {
        // Transparent huge pages round every large buffer (frames, x264's planes) up to 2 MB
        // pages: ~10 MB of resident memory for nothing in a process meant to run all day.
        ProcessMemoryControl.disableTransparentHugePages()
        ProcessMemoryControl.setMmapThreshold(bytes: mmapThreshold)
    }
}
