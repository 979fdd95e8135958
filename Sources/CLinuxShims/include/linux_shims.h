// Linux calls Swift cannot import directly (variadic C functions, or
// declarations glibc only exposes under _GNU_SOURCE).
#ifndef CLINUXSHIMS_H
#define CLINUXSHIMS_H

#include <sys/types.h>

/// prctl(PR_SET_THP_DISABLE, 1): no transparent huge pages for this process.
/// Returns 0 on success, -1 with errno set.
int clinux_disable_transparent_huge_pages(void);

/// Fixes glibc's mmap threshold at `bytes` (mallopt M_MMAP_THRESHOLD), which also turns off
/// its dynamic adjustment. Returns 1 on success, 0 on failure.
int clinux_set_mmap_threshold(int bytes);

/// malloc_trim(0): hands the free pages of every malloc arena back to the kernel.
void clinux_release_free_heap(void);

/// accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC).
int clinux_accept_nonblocking(int fd);

/// SO_PEERCRED of a connected AF_UNIX socket. Returns 0 and fills uid/pid,
/// or -1 with errno set.
int clinux_peer_credentials(int fd, uid_t *uid, pid_t *pid);

/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK): a counter a poll() can wait on.
/// Returns the fd, or -1 with errno set.
int clinux_eventfd_nonblocking(void);

/// Names the calling thread (at most 15 bytes are kept), as shown by top -H,
/// perf and /proc/<pid>/task/<tid>/comm.
void clinux_set_thread_name(const char *name);

#endif
