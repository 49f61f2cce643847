/* A thread pool in C for the kernels' own splits (kernels/native.py, SOURCES; called from
 * backends/native_calls.py).
 *
 * The kernels take a range [start, stop) of work items and are split over threads as a
 * few contiguous parts. Handing a part to a Python thread pool costs ~30-60 us a call (the
 * queue, the future, waking a sleeping thread, taking the GIL back): more than a small
 * layer's whole work, so small calls used to run on one core. Here the caller publishes a
 * job once, the workers (started on first use, kept) wait for it spinning for a while
 * (POOL_SPIN_NS) before they sleep on a condition variable, and every thread runs whole
 * parts of it: a hand-off to a spinning worker costs about a microsecond.
 *
 * A job is a kernel entry point with only integer-class arguments (pointers, int64, int),
 * called with its `start`/`stop` slots set to each part's range. The parts are exactly
 * those of backends/host_threads.split, so the kernels' bits (which never depend on the
 * split) are the same as on any other path. One caller at a time: a second caller
 * (another Python thread) runs its whole range itself rather than wait.
 *
 * The claim word packs (job generation, parts, next part) into one atomic, so a worker
 * that wakes late can never take a part of a newer job with an older job's arguments: it
 * claims with a compare-exchange that fails once the generation moved.
 */
#if defined(V_ISA)
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define POOL_MAX_ARGS 16
#define POOL_MAX_THREADS 64
#define POOL_SPIN_NS 200000   /* a worker spins this long after its last job before it sleeps */

typedef i64 (*pool_fn_t)(i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);

typedef struct {
    void *fn;
    i64 args[POOL_MAX_ARGS];
    int start_slot, stop_slot, returns_int;
    i64 extent;
} pool_job_t;

static struct {
    pthread_mutex_t caller;          /* held by the one thread running a job */
    pthread_mutex_t sleep_lock;
    pthread_cond_t wake;
    pthread_once_t once;
    int workers;                     /* started (under `caller`) */
    pool_job_t job;                  /* written by the caller before it publishes `claim` */
    _Atomic uint64_t claim;          /* generation << 32 | parts << 16 | next part */
    _Atomic int done;                /* parts finished of the current job */
    _Atomic i64 rc;                  /* the first nonzero return of the current job's parts */
    _Atomic int sleepers;
    _Atomic int spinning;            /* workers spinning for a job */
    _Atomic uint32_t nap, rouse;     /* bumped by pool_quiesce and pool_warm */
} pool = {.caller = PTHREAD_MUTEX_INITIALIZER, .sleep_lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
        .once = PTHREAD_ONCE_INIT};

static inline void pool_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static i64 pool_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (i64)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Part `index` of `parts` of [0, extent): sizes differ by at most one, the larger first. */
static void pool_part(i64 extent, i64 parts, i64 index, i64 *start, i64 *stop)
{
    i64 base = extent / parts, extra = extent % parts;
    *start = index * base + (index < extra ? index : extra);
    *stop = *start + base + (index < extra);
}

static i64 pool_call(const pool_job_t *job, i64 start, i64 stop)
{
    i64 a[POOL_MAX_ARGS];
    memcpy(a, job->args, sizeof a);
    a[job->start_slot] = start;
    a[job->stop_slot] = stop;
    /* Every argument is of the integer class, so under the SysV x86-64 (and AAPCS64) calling
     * convention the callee finds its own arguments where these are put, and the unused
     * trailing ones are ignored (the caller owns the stack they occupy). */
    i64 r = ((pool_fn_t)job->fn)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11],
                                 a[12], a[13], a[14], a[15]);
    return job->returns_int ? (i64)(int)r : 0;
}

/* Claim and run parts of generation `gen` until none is left. */
static void pool_work(uint32_t gen)
{
    for (;;) {
        uint64_t v = atomic_load_explicit(&pool.claim, memory_order_acquire);
        uint32_t parts = (uint32_t)(v >> 16) & 0xFFFF, next = (uint32_t)v & 0xFFFF;
        if ((uint32_t)(v >> 32) != gen || next >= parts) return;
        if (!atomic_compare_exchange_weak_explicit(&pool.claim, &v, v + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        i64 start, stop;
        pool_part(pool.job.extent, parts, next, &start, &stop);
        i64 r = pool_call(&pool.job, start, stop);
        if (r) {
            i64 zero = 0;
            atomic_compare_exchange_strong(&pool.rc, &zero, r);
        }
        atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
    }
}

/* arg: the generation before the job the worker is started for, so that it takes part in it.
 * A worker spins for the next job until POOL_SPIN_NS have passed or pool_quiesce() is called,
 * then sleeps until a job or pool_warm() comes. */
static void *pool_worker(void *arg)
{
    uint32_t seen = (uint32_t)(uintptr_t)arg;
    for (;;) {
        i64 t0 = pool_now_ns();
        uint32_t gen, nap = atomic_load(&pool.nap), rouse = atomic_load(&pool.rouse);
        int sleep = 0;
        atomic_fetch_add(&pool.spinning, 1);
        for (unsigned spins = 1;; spins++) {
            gen = (uint32_t)(atomic_load_explicit(&pool.claim, memory_order_acquire) >> 32);
            if (gen != seen) break;
            /* Yield, not just pause: a worker woken onto the caller's core (or onto a core a
             * BLAS thread needs) must not hold it while it waits. */
            if (spins & 7) pool_relax(); else sched_yield();
            if ((spins & 63) == 0 && (pool_now_ns() - t0 > POOL_SPIN_NS || atomic_load(&pool.nap) != nap)) {
                sleep = 1;
                break;
            }
        }
        atomic_fetch_sub(&pool.spinning, 1);
        if (sleep) {
            pthread_mutex_lock(&pool.sleep_lock);
            atomic_fetch_add(&pool.sleepers, 1);  /* seq_cst: the caller reads it after publishing */
            while ((gen = (uint32_t)(atomic_load(&pool.claim) >> 32)) == seen && atomic_load(&pool.rouse) == rouse)
                pthread_cond_wait(&pool.wake, &pool.sleep_lock);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.sleep_lock);
            if (gen == seen) continue;  /* roused without a job: spin again */
        }
        seen = gen;
        pool_work(gen);
    }
    return NULL;
}

static void pool_wake_sleepers(void)
{
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.sleep_lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.sleep_lock);
    }
}

/* Send spinning workers to sleep now (the bench, before it times another library's call,
 * which should not share a core with them). */
void pool_quiesce(void) { atomic_fetch_add(&pool.nap, 1); }

/* Wake sleeping workers and wait (at most 2 ms) until every one spins: the state a run of
 * kernel calls keeps them in (the bench, before it times an engine call). */
void pool_warm(void)
{
    atomic_fetch_add(&pool.rouse, 1);
    pool_wake_sleepers();
    i64 t0 = pool_now_ns();
    while (atomic_load(&pool.spinning) < pool.workers && pool_now_ns() - t0 < 2000000) pool_relax();
}

/* In a forked child only the forking thread exists: forget the workers (and any lock a
 * parent's thread held at the fork). */
static void pool_after_fork_child(void)
{
    pthread_mutex_init(&pool.caller, NULL);
    pthread_mutex_init(&pool.sleep_lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pool.workers = 0;
    atomic_store(&pool.sleepers, 0);
    atomic_store(&pool.spinning, 0);
}

static void pool_register_fork(void) { pthread_atfork(NULL, NULL, pool_after_fork_child); }

/* Run fn over [0, extent) cut into `parts` parts (at most POOL_MAX_THREADS, each a call with
 * args[start_slot] and args[stop_slot] set to its range) on this thread and up to parts - 1
 * workers. nargs <= POOL_MAX_ARGS. Returns the first nonzero int a part returned (when
 * returns_int), else 0. */
i64 pool_run(void *fn, const i64 *args, i64 nargs, i64 start_slot, i64 stop_slot, i64 returns_int, i64 extent,
             i64 parts)
{
    pool_job_t job = {fn, {0}, (int)start_slot, (int)stop_slot, (int)returns_int, extent};
    memcpy(job.args, args, (size_t)nargs * sizeof(i64));
    if (parts > extent) parts = extent;
    if (parts > POOL_MAX_THREADS) parts = POOL_MAX_THREADS;
    if (parts <= 1 || pthread_mutex_trylock(&pool.caller) != 0)
        return extent > 0 ? pool_call(&job, 0, extent) : 0;
    pthread_once(&pool.once, pool_register_fork);
    uint32_t gen = (uint32_t)(atomic_load(&pool.claim) >> 32) + 1;
    while (pool.workers < parts - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&t, &attr, pool_worker, (void *)(uintptr_t)(gen - 1));
        pthread_attr_destroy(&attr);
        if (failed) break;  /* fewer workers: this thread claims the parts they would have */
        pool.workers++;
    }
    pool.job = job;
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.rc, 0, memory_order_relaxed);
    atomic_store(&pool.claim, (uint64_t)gen << 32 | (uint64_t)parts << 16);  /* seq_cst: publishes job */
    pool_wake_sleepers();
    pool_work(gen);
    while (atomic_load_explicit(&pool.done, memory_order_acquire) < parts) pool_relax();
    i64 rc = atomic_load(&pool.rc);
    pthread_mutex_unlock(&pool.caller);
    return rc;
}

/* Workers started so far, and those spinning for a job now (for tests). */
i64 pool_workers(void) { return pool.workers; }
i64 pool_spinning(void) { return atomic_load(&pool.spinning); }

#endif  /* V_ISA */
