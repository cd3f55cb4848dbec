/* bnn_pool.h -- bnnlab's own persistent thread pool (PRIVATE; see ext/README.md, "Threads").
 *
 * Why not a plain OpenMP parallel region: bnnlab runs in the same process as torch, on
 * machines where other processes compete for the cores.  An OpenMP region splits the work
 * statically and ends with a barrier, so the caller waits for the slowest thread; when a
 * worker is not scheduled for a few milliseconds (torch's spinning OpenMP workers, another
 * process), a 1 ms kernel takes 10-20 ms (measured: 2 threads 13x slower than 1).
 *
 * This pool never waits for a thread that has not started working:
 *   - a job is split into nchunks chunks (deterministic work units; the result never
 *     depends on who computes which chunk);
 *   - the caller publishes the job, wakes sleeping workers, and claims chunks itself
 *     with a compare-and-swap on one 64-bit word  gen:32 | nchunks:16 | next:16;
 *   - workers that wake up in time claim chunks the same way; a late worker finds the
 *     generation changed (or nothing left) and goes back to waiting;
 *   - the caller only waits for chunks that were claimed and are still running.
 * So a busy machine degrades to single-threaded speed instead of stalling.
 *
 * One case remains: a worker descheduled *while running* a chunk (the OS gave its core to
 * another process).  The caller must wait for that chunk (its output buffers are live).
 * Adaptive back-off: when the caller spent more than a quarter of a job (and > 200 us)
 * waiting for others, the pool runs jobs on the caller alone for the next
 * BNN_POOL_BACKOFF_NS, then tries threads again.  On an idle machine this never triggers.
 *
 * Waiting: idle workers spin about BNN_POOL_SPIN_NS, then sleep on a condition variable
 * (passive), so they do not steal cores from torch between kernels.  One job at a time:
 * a second concurrent caller (kernels run without the GIL) computes its job alone.
 * After fork() the child starts with no workers.
 */
#ifndef BNN_POOL_H
#define BNN_POOL_H

#include <stdint.h>
#if !defined(_WIN32)
#  define BNN_HAVE_POOL 1
#  include <pthread.h>
#  include <sched.h>
#  include <stdatomic.h>
#  include <time.h>
#else
#  define BNN_HAVE_POOL 0
#endif

typedef void (*bnn_chunk_fn)(void *ctx, int chunk, int nchunks);

#define BNN_POOL_MAX_WORKERS 255
#define BNN_POOL_MAX_CHUNKS 0xffff

static int bnn_pool_spin_ns = 50000;     /* idle worker: spin this long before sleeping  */
#define BNN_POOL_BACKOFF_NS 100000000    /* 100 ms single-threaded after a stalled job       */
static int64_t bnn_pool_backoff_until = 0;
static int bnn_pool_backoff_enabled = 1;
static int64_t bnn_pool_stalls = 0;      /* jobs that triggered a back-off                 */

#if BNN_HAVE_POOL

static inline void bnn_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int64_t bnn_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct {
    _Atomic uint64_t state;          /* gen:32 | nchunks:16 | next:16                      */
    _Atomic int done;                /* chunks finished in the current job                 */
    _Atomic int max_workers;         /* workers with index >= this skip the job            */
    bnn_chunk_fn fn;                 /* valid while the current job has unfinished chunks  */
    void *ctx;
    pthread_mutex_t mu;              /* sleep / wake                                       */
    pthread_cond_t cv;
    _Atomic unsigned wake_seq;
    _Atomic int sleepers;
    pthread_mutex_t submit_mu;       /* one job at a time; also guards nworkers            */
    int nworkers;
    int atfork_done;
} bnn_pool_t;

static bnn_pool_t bnn_pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .cv = PTHREAD_COND_INITIALIZER,
    .submit_mu = PTHREAD_MUTEX_INITIALIZER,
};

/* Claim and run chunks of generation gen until none is left. */
static void bnn_pool_claim(uint32_t gen) {
    for (;;) {
        uint64_t s = atomic_load_explicit(&bnn_pool.state, memory_order_acquire);
        if ((uint32_t)(s >> 32) != gen) return;
        const int n = (int)((s >> 16) & 0xffff), c = (int)(s & 0xffff);
        if (c >= n) return;
        if (atomic_compare_exchange_weak_explicit(&bnn_pool.state, &s, s + 1,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            /* job gen cannot finish before this chunk does: fn/ctx are still its own */
            bnn_pool.fn(bnn_pool.ctx, c, n);
            atomic_fetch_add_explicit(&bnn_pool.done, 1, memory_order_release);
        }
    }
}

static void *bnn_pool_worker(void *arg) {
    const int idx = (int)(intptr_t)arg;
    uint32_t seen = (uint32_t)(atomic_load(&bnn_pool.state) >> 32);
    for (;;) {
        /* wait for a new generation: spin a little, then sleep */
        const int64_t t0 = bnn_now_ns();
        int spins = 0;
        while ((uint32_t)(atomic_load(&bnn_pool.state) >> 32) == seen) {
            bnn_cpu_relax();
            if (++spins < 64) continue;
            spins = 0;
            if (bnn_now_ns() - t0 < bnn_pool_spin_ns) continue;
            pthread_mutex_lock(&bnn_pool.mu);
            atomic_fetch_add(&bnn_pool.sleepers, 1);
            const unsigned ws = atomic_load(&bnn_pool.wake_seq);
            while ((uint32_t)(atomic_load(&bnn_pool.state) >> 32) == seen &&
                   atomic_load(&bnn_pool.wake_seq) == ws)
                pthread_cond_wait(&bnn_pool.cv, &bnn_pool.mu);
            atomic_fetch_sub(&bnn_pool.sleepers, 1);
            pthread_mutex_unlock(&bnn_pool.mu);
        }
        seen = (uint32_t)(atomic_load(&bnn_pool.state) >> 32);
        if (idx < atomic_load(&bnn_pool.max_workers)) bnn_pool_claim(seen);
    }
    return NULL;
}

static void bnn_pool_atfork_child(void) {
    /* the child has no workers; reset the synchronisation objects */
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    bnn_pool.mu = m;
    bnn_pool.submit_mu = m;
    bnn_pool.cv = c;
    atomic_store(&bnn_pool.sleepers, 0);
    bnn_pool.nworkers = 0;
}

/* Start workers until there are `want` (called with submit_mu held). */
static void bnn_pool_grow(int want) {
    if (want > BNN_POOL_MAX_WORKERS) want = BNN_POOL_MAX_WORKERS;
    if (!bnn_pool.atfork_done) {
        pthread_atfork(NULL, NULL, bnn_pool_atfork_child);
        bnn_pool.atfork_done = 1;
    }
    while (bnn_pool.nworkers < want) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int rc = pthread_create(&th, &attr, bnn_pool_worker, (void *)(intptr_t)bnn_pool.nworkers);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;                 /* run with the workers we have */
        bnn_pool.nworkers++;
    }
}

/* Run fn(ctx, c, nchunks) for every c in [0, nchunks), with up to nthreads threads (the
 * caller included).  Returns when every chunk has finished. */
static void bnn_pool_run(bnn_chunk_fn fn, void *ctx, int nchunks, int nthreads) {
    if (nchunks > BNN_POOL_MAX_CHUNKS) nchunks = BNN_POOL_MAX_CHUNKS;  /* callers stay below */
    if (nthreads <= 1 || nchunks <= 1 || pthread_mutex_trylock(&bnn_pool.submit_mu) != 0) {
        for (int c = 0; c < nchunks; c++) fn(ctx, c, nchunks);
        return;
    }
    const int64_t t_start = bnn_now_ns();
    if (t_start < bnn_pool_backoff_until) {          /* recently stalled: run alone */
        pthread_mutex_unlock(&bnn_pool.submit_mu);
        for (int c = 0; c < nchunks; c++) fn(ctx, c, nchunks);
        return;
    }
    bnn_pool_grow(nthreads - 1);
    bnn_pool.fn = fn;
    bnn_pool.ctx = ctx;
    atomic_store(&bnn_pool.done, 0);
    atomic_store(&bnn_pool.max_workers, nthreads - 1);
    const uint32_t gen = (uint32_t)(atomic_load(&bnn_pool.state) >> 32) + 1u;
    atomic_store(&bnn_pool.state, ((uint64_t)gen << 32) | ((uint64_t)nchunks << 16));
    if (atomic_load(&bnn_pool.sleepers) > 0) {
        pthread_mutex_lock(&bnn_pool.mu);
        atomic_fetch_add(&bnn_pool.wake_seq, 1u);
        pthread_cond_broadcast(&bnn_pool.cv);
        pthread_mutex_unlock(&bnn_pool.mu);
    }
    bnn_pool_claim(gen);
    /* wait only for chunks that other threads claimed and are still running */
    const int64_t t0 = bnn_now_ns();
    int spins = 0, waited = 0;
    while (atomic_load_explicit(&bnn_pool.done, memory_order_acquire) < nchunks) {
        bnn_cpu_relax();
        if (++spins >= 64) {
            spins = 0;
            waited = 1;
            if (bnn_now_ns() - t0 > 20000) sched_yield();   /* let a preempted worker run */
        }
    }
    if (waited && bnn_pool_backoff_enabled) {
        const int64_t t1 = bnn_now_ns();
        if (t1 - t0 > 200000 && 4 * (t1 - t0) > t1 - t_start) {
            bnn_pool_backoff_until = t1 + BNN_POOL_BACKOFF_NS;
            bnn_pool_stalls++;
        }
    }
    pthread_mutex_unlock(&bnn_pool.submit_mu);
}

static int bnn_pool_size(void) { return bnn_pool.nworkers; }
static void bnn_pool_reset_backoff(void) { bnn_pool_backoff_until = 0; }

#else  /* no pthreads: run serially */

static void bnn_pool_run(bnn_chunk_fn fn, void *ctx, int nchunks, int nthreads) {
    (void)nthreads;
    for (int c = 0; c < nchunks; c++) fn(ctx, c, nchunks);
}
static int bnn_pool_size(void) { return 0; }
static void bnn_pool_reset_backoff(void) { bnn_pool_backoff_until = 0; }

#endif /* BNN_HAVE_POOL */
#endif /* BNN_POOL_H */
