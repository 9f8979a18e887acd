/* Softmax cross-entropy, written to stay accurate when the model is confident (the usual case when fine-tuning a
 * pretrained network): with e_j = exp(z_j - m), m = max z, own = e_label and other = sum of the rest,
 *   loss        = log(1 + other/own)          (not log(sum) - log(own), which cancels when own ~ sum)
 *   dz[label]   = -other/sum                  (not p_label - 1, which cancels when p_label ~ 1)
 *   dz[j]       = e_j/sum for j != label. */
#include "softmax_ce.h"
#include "fmath.h"

static uint32_t argmax(const float *z, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t j = 1; j < n; j++)
        if (z[j] > z[best])
            best = j;
    return best;
}

/* log(1 + r) for r >= 0: a short series where 1 + r would round away r's low bits. */
static float log1p_pos(float r)
{
    if (r < 1e-2f)
        return r * (1.0f - r * (0.5f - r * (1.0f / 3.0f - r * 0.25f)));
    return fm_log(1.0f + r);
}

float softmax_ce(const float *z, uint32_t n, uint32_t label, float *dz, uint32_t *pred)
{
    uint32_t top = argmax(z, n);
    float m = z[top], other = 0.0f, own = fm_exp(z[label] - m);
    if (pred)
        *pred = top;
    for (uint32_t j = 0; j < n; j++) {
        float e = j == label ? 0.0f : fm_exp(z[j] - m);
        if (dz)
            dz[j] = e;
        other += e;
    }
    float sum = own + other;
    if (dz) {
        float inv = 1.0f / sum;
        for (uint32_t j = 0; j < n; j++)
            dz[j] *= inv;
        dz[label] = -other * inv;
    }
    if (own < 1e-30f) /* other/own would overflow; here the cancellation cannot happen anyway */
        return fm_log(sum) - (z[label] - m);
    return log1p_pos(other / own);
}
