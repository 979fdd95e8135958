// Linux calls Swift cannot import directly (variadic C functions).
#ifndef CLINUXSHIMS_H
#define CLINUXSHIMS_H

/// prctl(PR_SET_THP_DISABLE, 1): no transparent huge pages for this process.
/// Returns 0 on success, -1 with errno set.
int clinux_disable_transparent_huge_pages(void);

#endif
