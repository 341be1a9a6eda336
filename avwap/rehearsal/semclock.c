/* sem_clockwait / sem_timedwait for the rehearsal's libfaketime (Debian 12: 0.9.10).
 *
 * CPython >= 3.11 waits on locks with a timeout (threading.Event.wait, Condition.wait, Lock.acquire,
 * queue.get) through sem_clockwait(CLOCK_MONOTONIC, absolute deadline). libfaketime 0.9.10 does not
 * wrap sem_clockwait, so the deadline is a warped time the kernel never reaches and the wait never
 * times out; its sem_timedwait multiplies the remaining time by the speed-up instead of dividing.
 * Here both compute the remaining WARPED time from libfaketime's clock_gettime, divide it by the
 * speed-up read from the spec file (FAKETIME_TIMESTAMP_FILE, "... x<speed>"), and wait that long in
 * real time with glibc's own sem_timedwait. Preloaded before libfaketime. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int (*glibc_timedwait)(sem_t *, const struct timespec *);

static double speed(void) {
    const char *path = getenv("FAKETIME_TIMESTAMP_FILE");
    char line[256] = {0};
    double s = 1.0;
    if (path) {
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(line, sizeof line, f)) {
                char *x = strrchr(line, 'x');
                if (x && atof(x + 1) > 0) s = atof(x + 1);
            }
            fclose(f);
        }
    }
    return s;
}

static int wait_real(sem_t *sem, clockid_t clockid, const struct timespec *abstime) {
    if (!glibc_timedwait) {
        void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
        glibc_timedwait = (int (*)(sem_t *, const struct timespec *))dlsym(libc, "sem_timedwait");
        if (!glibc_timedwait) { errno = ENOSYS; return -1; }
    }
    struct timespec now, real, deadline;
    clock_gettime(clockid, &now); /* libfaketime's: warped */
    syscall(SYS_clock_gettime, CLOCK_REALTIME, &real); /* the kernel's: real */
    long long ns = (long long)(abstime->tv_sec - now.tv_sec) * 1000000000LL + (abstime->tv_nsec - now.tv_nsec);
    if (ns < 0) ns = 0;
    ns = (long long)(ns / speed());
    long long total = (long long)real.tv_nsec + ns % 1000000000LL;
    deadline.tv_sec = real.tv_sec + ns / 1000000000LL + total / 1000000000LL;
    deadline.tv_nsec = total % 1000000000LL;
    return glibc_timedwait(sem, &deadline);
}

int sem_clockwait(sem_t *sem, clockid_t clockid, const struct timespec *abstime) {
    return wait_real(sem, clockid, abstime);
}

int sem_timedwait(sem_t *sem, const struct timespec *abstime) {
    return wait_real(sem, CLOCK_REALTIME, abstime);
}
