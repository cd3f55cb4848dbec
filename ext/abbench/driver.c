/* abbench/driver.c -- in-process A/B of kernel builds (lib.c): thread CPU time, the builds and
 * pieces alternated (order reversed every round), 31 rounds, median and 10th percentile.
 *
 *   cc -O2 ext/abbench/driver.c -o abdrv -ldl
 *   ./abdrv C HW B VARIANT PIECES ./ab_old.so ./ab_new.so      e.g.  ./abdrv 64 56 1 1 013 ...
 *
 * PIECES: digits of ab_run's k.  MAC/cycle figures elsewhere use 2.55 GHz (this VM's clock). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
static int64_t tns(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
static int cmp(const void *a, const void *b) { int64_t x = *(int64_t *)a, y = *(int64_t *)b; return (x > y) - (x < y); }
/* usage: abdrv C HW B variant ks(e.g. 134) lib1.so lib2.so ... */
int main(int argc, char **argv) {
    int C = atoi(argv[1]), HW = atoi(argv[2]), B = atoi(argv[3]), var = atoi(argv[4]);
    const char *ks = argv[5]; int nl = argc - 6, nk = 0; int kk[8];
    for (const char *p = ks; *p; p++) kk[nk++] = *p - '0';
    void (*run[8])(int); uint64_t (*chk[8])(void);
    for (int l = 0; l < nl; l++) {
        void *h = dlopen(argv[6 + l], RTLD_NOW | RTLD_LOCAL);
        if (!h) { printf("%s\n", dlerror()); return 1; }
        void (*setup)(int, int, int, int) = dlsym(h, "ab_setup");
        setup(C, HW, B, var); run[l] = dlsym(h, "ab_run"); chk[l] = dlsym(h, "ab_check");
    }
    enum { R = 31 };
    static int64_t t[8][8][R];
    int reps = B == 1 ? 10 : 1;
    for (int r = 0; r < R; r++)
        for (int i0 = 0; i0 < nl * nk; i0++) {
            int i = r & 1 ? nl * nk - 1 - i0 : i0, l = i % nl, k = kk[i / nl];
            run[l](k);
            int64_t t0 = tns();
            for (int q = 0; q < reps; q++) run[l](k);
            t[l][k][r] = (tns() - t0) / reps;
        }
    for (int l = 0; l < nl; l++) { for (int k = 0; k < nk; k++) run[l](kk[k]); printf("lib %d %s check %016llx\n", l, argv[6 + l], (unsigned long long)chk[l]()); }
    const char *names[] = {"pack", "conv nchw", "conv nhwc", "conv bits", "pack+conv"};
    for (int k0 = 0; k0 < nk; k0++) { int k = kk[k0];
        printf("%-10s", names[k]);
        for (int l = 0; l < nl; l++) { qsort(t[l][k], R, 8, cmp); printf("  %7.1f us (p10 %7.1f)", t[l][k][R / 2] / 1e3, t[l][k][R / 10] / 1e3); }
        printf("\n"); }
    FILE *f = fopen("/proc/loadavg", "r"); char buf[64]; if (f && fgets(buf, 64, f)) printf("load %s", buf);
    return 0;
}
