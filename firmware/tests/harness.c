/* The test harness shared by the host runner (test_main.c) and the twin runner (twin_main.c): checks, deterministic
 * random numbers and the loop over suites. Output goes through th_out, which each runner provides (stdout on the
 * host, semihosting on a twin). */
#include <math.h>
#include <stdio.h>
#include "harness.h"

static int failures_in_test;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));


void th_check(int ok, const char *file, int line, const char *what)
{
    if (ok)
        return;
    if (failures_in_test++ < 5)
        say("    FAIL %s:%d: %s\n", file, line, what);
}

void th_check_near(double got, double want, double tol, const char *file, int line, const char *what)
{
    double scale = fabs(want) > 1.0 ? fabs(want) : 1.0;
    if (fabs(got - want) <= tol * scale)
        return;
    if (failures_in_test++ < 5)
        say("    FAIL %s:%d: %s (got %.9g, want %.9g)\n", file, line, what, got, want);
}

static uint32_t rng_state = 0x12345678u;

uint32_t th_rand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

float th_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)(th_rand() >> 8) / 16777216.0f;
}

void th_fill(float *v, uint32_t n, float lo, float hi)
{
    for (uint32_t j = 0; j < n; j++)
        v[j] = th_uniform(lo, hi);
}

double th_max_rel(const float *a, const float *b, uint32_t n)
{
    double worst = 0.0, scale = 1.0;
    for (uint32_t j = 0; j < n; j++)
        if (fabs(b[j]) > scale)
            scale = fabs(b[j]);
    for (uint32_t j = 0; j < n; j++)
        if (fabs((double)a[j] - b[j]) > worst)
            worst = fabs((double)a[j] - b[j]);
    return worst / scale;
}


#include <stdarg.h>

static void say(const char *fmt, ...)
{
    char line[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    th_out(line);
}

int th_run(const test_case_t *const *suites, unsigned n_suites)
{
    int passed = 0, failed = 0;
    for (unsigned s = 0; s < n_suites; s++)
        for (const test_case_t *t = suites[s]; t->name; t++) {
            failures_in_test = 0;
            t->fn();
            if (failures_in_test) {
                say("FAIL %s (%d checks)\n", t->name, failures_in_test);
                failed++;
            } else {
                say("ok   %s\n", t->name);
                passed++;
            }
        }
    say("%d passed, %d failed\n", passed, failed);
    return failed;
}
