/* The int8 op kinds by op code: the one table an added op needs a line in. */
#include "qops.h"
#include "formats.h"

extern const qop_kind_t qk_conv_2d, qk_depthwise_conv_2d, qk_fully_connected, qk_average_pool_2d, qk_mean, qk_add,
    qk_reshape, qk_softmax, qk_max_pool_2d;

const qop_kind_t *const qop_kinds[QOP_COUNT] = {
    [QOP_CONV_2D] = &qk_conv_2d,
    [QOP_DEPTHWISE_CONV_2D] = &qk_depthwise_conv_2d,
    [QOP_FULLY_CONNECTED] = &qk_fully_connected,
    [QOP_AVERAGE_POOL_2D] = &qk_average_pool_2d,
    [QOP_MEAN] = &qk_mean,
    [QOP_ADD] = &qk_add,
    [QOP_RESHAPE] = &qk_reshape,
    [QOP_SOFTMAX] = &qk_softmax,
    [QOP_MAX_POOL_2D] = &qk_max_pool_2d,
};

const qop_kind_t *qop_kind(uint8_t op)
{
    return op < QOP_COUNT ? qop_kinds[op] : NULL;
}
