/* MAX_POOL_2D: int8 max pool and its input gradient (to each window's first maximum, found again from the input);
 * its records parse as AVERAGE_POOL_2D's (qpool_parse, qpool_parse_train). */
#include "qops.h"
#include "ops/qgrad.h"
#include "ops/qop.h"

static void forward(const qnode_t *n)
{
    maxpool_i8(&n->k.pool, n->x, n->y);
}

static int32_t backward(const qnode_t *n, const qtop_t *t, int32_t e)
{
    maxpool_i8_input_grad(&n->k.pool, n->x, t->dout, t->acc);
    return e + qgrad_requant(t->acc, t->n_in, t->din);
}

const qop_kind_t qk_max_pool_2d = {"MAX_POOL_2D", qpool_parse, forward, qpool_parse_train, NULL, NULL, NULL,
                                   backward, NULL, 0, NULL, NULL, NULL};
