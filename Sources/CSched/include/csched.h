#ifndef CERTROT_CSCHED_H
#define CERTROT_CSCHED_H

#include <stdint.h>

/// Asks the kernel for a scheduling slice of `slice_ns` nanoseconds for the calling thread, keeping its policy
/// (SCHED_OTHER) and nice value: sched_setattr(2) with sched_runtime, which Linux 6.6+ (EEVDF) reads as the
/// thread's requested slice. A shorter slice gives the thread an earlier virtual deadline when it wakes, so it
/// waits less for a core that other runnable threads hold. Unprivileged for one's own threads.
/// Returns 0, or the errno (ENOSYS where the call does not exist, EINVAL where the kernel has no custom slices).
int certrot_set_thread_slice(uint64_t slice_ns);

/// The same for thread `tid` (any process's: needs CAP_SYS_NICE for another user's); 0 is the calling thread.
int certrot_set_task_slice(int tid, uint64_t slice_ns);

/// The calling thread's requested slice in nanoseconds (sched_getattr(2)'s sched_runtime), or -errno.
int64_t certrot_thread_slice(void);

#endif
