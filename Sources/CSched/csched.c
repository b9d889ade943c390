#if defined(__linux__)
#define _GNU_SOURCE
#endif
#include "csched.h"

#if defined(__linux__)
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

// struct sched_attr of sched_setattr(2) (include/uapi/linux/sched/types.h), the first 56 bytes.
struct certrot_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
    uint32_t sched_util_min;
    uint32_t sched_util_max;
};


static int get_attr(int tid, struct certrot_sched_attr *attr) {
#if defined(SYS_sched_getattr)
    memset(attr, 0, sizeof *attr);
    if (syscall(SYS_sched_getattr, tid, attr, (unsigned int)sizeof *attr, 0) != 0) return errno;
    return 0;
#else
    (void)attr;
    return ENOSYS;
#endif
}

int certrot_set_thread_slice(uint64_t slice_ns) { return certrot_set_task_slice(0, slice_ns); }

int certrot_set_task_slice(int tid, uint64_t slice_ns) {
#if defined(SYS_sched_setattr)
    struct certrot_sched_attr attr;
    int error = get_attr(tid, &attr);
    if (error != 0) return error;
    // SCHED_OTHER only: a real-time or deadline thread is left as it is.
    if (attr.sched_policy != 0) return EPERM;
    attr.size = sizeof attr;
    attr.sched_flags = 0;
    attr.sched_runtime = slice_ns;
    attr.sched_deadline = 0;
    attr.sched_period = 0;
    if (syscall(SYS_sched_setattr, tid, &attr, 0) != 0) return errno;
    return 0;
#else
    (void)tid;
    (void)slice_ns;
    return ENOSYS;
#endif
}

int64_t certrot_thread_slice(void) {
    struct certrot_sched_attr attr;
    int error = get_attr(0, &attr);
    if (error != 0) return -(int64_t)error;
    return (int64_t)attr.sched_runtime;
}

#else
#include <errno.h>
int certrot_set_thread_slice(uint64_t slice_ns) {
    (void)slice_ns;
    return ENOSYS;
}
int certrot_set_task_slice(int tid, uint64_t slice_ns) {
    (void)tid;
    (void)slice_ns;
    return ENOSYS;
}
int64_t certrot_thread_slice(void) { return -ENOSYS; }
#endif
