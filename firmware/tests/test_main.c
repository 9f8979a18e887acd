/* Runs every registered test; prints "N passed, M failed" last and exits non-zero on any failure. */
#include <math.h>
#include <stdio.h>
#include "harness.h"

static int failures_in_test;

void th_check(int ok, const char *file, int line, const char *what)
{
    if (ok)
        return;
    if (failures_in_test++ < 5)
        printf("    FAIL %s:%d: %s\n", file, line, what);
}

void th_check_near(double got, double want, double tol, const char *file, int line, const char *what)
{
    double scale = fabs(want) > 1.0 ? fabs(want) : 1.0;
    if (fabs(got - want) <= tol * scale)
        return;
    if (failures_in_test++ < 5)
        printf("    FAIL %s:%d: %s (got %.9g, want %.9g)\n", file, line, what, got, want);
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

int main(void)
{
    const test_case_t *suites[] = {ops_tests, proto_tests, plan_tests, trainer_tests, qops_tests, qplan_tests, qtrain_tests};
    int passed = 0, failed = 0;
    for (unsigned s = 0; s < sizeof suites / sizeof suites[0]; s++)
        for (const test_case_t *t = suites[s]; t->name; t++) {
            failures_in_test = 0;
            t->fn();
            if (failures_in_test) {
                printf("FAIL %s (%d checks)\n", t->name, failures_in_test);
                failed++;
            } else {
                printf("ok   %s\n", t->name);
                passed++;
            }
        }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
