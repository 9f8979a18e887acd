/* Host runner: every registered suite, compiled with ASan and UBSan; prints "N passed, M failed" last and exits
 * non-zero on any failure. */
#include <stdio.h>
#include "harness.h"

void th_out(const char *s)
{
    fputs(s, stdout);
}

int main(void)
{
    static const test_case_t *const suites[] = {ops_tests, proto_tests, plan_tests, trainer_tests,
                                                qops_tests, qplan_tests, qtrain_tests, qparams_tests};
    return th_run(suites, sizeof suites / sizeof suites[0]) ? 1 : 0;
}
