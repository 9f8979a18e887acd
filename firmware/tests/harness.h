/* A minimal test harness: tests register themselves in a table, CHECK records failures without stopping. */
#ifndef HARNESS_H
#define HARNESS_H

#include <stdint.h>

typedef void (*test_fn)(void);

void th_check(int ok, const char *file, int line, const char *what);
void th_check_near(double got, double want, double tol, const char *file, int line, const char *what);

#define CHECK(c) th_check((c) != 0, __FILE__, __LINE__, #c)
/* |got - want| <= tol * max(1, |want|) */
#define CHECK_NEAR(got, want, tol) th_check_near((got), (want), (tol), __FILE__, __LINE__, #got " ~ " #want)

typedef struct {
    const char *name;
    test_fn fn;
} test_case_t;

/* deterministic random numbers for tests */
uint32_t th_rand(void);
float th_uniform(float lo, float hi);
void th_fill(float *v, uint32_t n, float lo, float hi);
/* max |a - b| / max(1, max |b|) */
double th_max_rel(const float *a, const float *b, uint32_t n);

/* the runner's output (stdout on the host, semihosting on a twin) */
void th_out(const char *s);
/* runs every case of the suites, printing ok/FAIL per case and "N passed, M failed" last; returns M */
int th_run(const test_case_t *const *suites, unsigned n_suites);

extern const test_case_t ops_tests[], proto_tests[], plan_tests[], trainer_tests[], qops_tests[], qplan_tests[],
    qtrain_tests[], qparams_tests[];

#endif
