internal import CLinuxShims
#if canImport(Glibc)
import Glibc
#endif

/// The Linux calls the daemon, the control client and the endpoint need that Swift cannot
/// import directly (variadic C functions, `_GNU_SOURCE` declarations): the one Swift wrapper
/// of CLinuxShims for the modules above the wrappers, which never call C themselves.

/// How the process uses memory.
public enum ProcessMemoryControl {
    /// prctl(PR_SET_THP_DISABLE): no transparent huge pages for this process (they round
    /// every large buffer up to 2 MB). False if the kernel refused.
    @discardableResult
    public static func disableTransparentHugePages() -> Bool { clinux_disable_transparent_huge_pages() == 0 }

    /// Fixes glibc's mmap threshold (mallopt M_MMAP_THRESHOLD), which also stops its dynamic
    /// adjustment: blocks of `bytes` or more get mappings of their own, returned on free.
    @discardableResult
    public static func setMmapThreshold(bytes: Int) -> Bool { clinux_set_mmap_threshold(Int32(clamping: bytes)) == 1 }

    /// malloc_trim(0): hands the free pages of every arena back to the kernel.
    public static func releaseFreeHeap() { clinux_release_free_heap() }
}

/// AF_UNIX socket calls.
public enum UnixSocketCalls {
    /// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC: the new descriptor, or -1 with errno set.
    public static func acceptNonBlocking(_ listener: Int32) -> Int32 { clinux_accept_nonblocking(listener) }

    /// The peer of a connected AF_UNIX socket (SO_PEERCRED); nil with errno set on failure.
    public static func peerCredentials(_ fd: Int32) -> (uid: UInt32, pid: Int32)? {
        var uid: Glibc.uid_t = 0
        var pid: Glibc.pid_t = 0
        guard clinux_peer_credentials(fd, &uid, &pid) == 0 else { return nil }
        return (UInt32(uid), Int32(pid))
    }
}
