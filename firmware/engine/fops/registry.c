/* The fp32 op kinds by op code: the one table an added op needs a line in. */
#include "fops.h"

extern const fop_kind_t fk_dense, fk_conv2d, fk_relu, fk_maxpool, fk_dwconv2d, fk_gavgpool, fk_add;

const fop_kind_t *const fop_kinds[OP_COUNT] = {
    [OP_DENSE] = &fk_dense,
    [OP_CONV2D] = &fk_conv2d,
    [OP_RELU] = &fk_relu,
    [OP_MAXPOOL] = &fk_maxpool,
    [OP_DWCONV2D] = &fk_dwconv2d,
    [OP_GAVGPOOL] = &fk_gavgpool,
    [OP_ADD] = &fk_add,
};

uint32_t fop_no_params(const layer_t *L)
{
    (void)L;
    return 0;
}
