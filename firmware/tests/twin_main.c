/* Twin runner: the kernel suites (fp32 ops, int8 forward, int8 backward and update) built for a board's core and run
 * on its QEMU twin, so the DSP, VFP and saturation paths the host build never compiles (SMLAD, VLDM blocks, SSAT)
 * are checked against their plain reference kernels on the instruction set that runs them. Start-up, output and
 * exit: twin_start.c. */
#include "harness.h"

int main(void)
{
    static const test_case_t *const suites[] = {ops_tests, qops_tests, qtrain_tests};
    return th_run(suites, sizeof suites / sizeof suites[0]);
}
