#include <string.h>
#include "blobs.h"
#include "harness.h"

static uint32_t win_words[FX_WIN_BYTES / 4u];
static uint32_t arena_words[FX_ARENA_BYTES / 4u];
uint8_t *const fx_win = (uint8_t *)win_words;
uint8_t *const fx_arena = (uint8_t *)arena_words;
float fx_w0[64 * 64], fx_b0[64], fx_w2[64 * 16], fx_b2[16];
static uint8_t xt[400 * 64], yt[400], xe[100 * 64], ye[100];

mem_window_t fx_window(void)
{
    mem_window_t w = {FX_WIN_ADDR, FX_WIN_BYTES, (uintptr_t)fx_win};
    return w;
}

static void samples(uint8_t *x, uint8_t *y, uint32_t n, uint32_t in_n, uint32_t n_cls, const uint8_t *protos)
{
    for (uint32_t s = 0; s < n; s++) {
        y[s] = (uint8_t)(th_rand() % n_cls);
        for (uint32_t j = 0; j < in_n; j++) {
            int v = protos[y[s] * in_n + j] + (int)(th_rand() % 61) - 30;
            x[s * in_n + j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

static void build_mlp(built_t *b, uint32_t in_n, uint32_t hid, uint32_t n_cls, uint16_t first_bwd, uint32_t n_train,
                      const uint16_t *ch, uint16_t n_ch)
{
    static uint8_t protos[16 * 64];
    uint8_t fl0 = first_bwd == 0 ? (LF_TRAIN_W | LF_TRAIN_B) : 0;
    uint8_t fl1 = first_bwd <= 1 ? LF_NEED_DX : 0, fl2 = LF_TRAIN_W | LF_TRAIN_B | (first_bwd <= 1 ? LF_NEED_DX : 0);
    spec_t L[3] = {
        {OP_DENSE, fl0, 0, 0, {1, 1, (uint16_t)in_n}, {1, 1, (uint16_t)hid}, 0, 0, fx_w0, fx_b0, ch, n_ch, 0},
        {OP_RELU, fl1, 0, 0, {1, 1, (uint16_t)hid}, {1, 1, (uint16_t)hid}, 0, 0, NULL, NULL, NULL, 0, 0},
        {OP_DENSE, fl2, 0, 0, {1, 1, (uint16_t)hid}, {1, 1, (uint16_t)n_cls}, 0, 0, fx_w2, fx_b2, NULL, 0, 0},
    };
    dspec_t d = {n_train, 100, 1, 1, (uint16_t)in_n, (uint16_t)n_cls, 1.0f / 255.0f, -0.5f, xt, yt, xe, ye};
    th_fill(fx_w0, in_n * hid, -0.4f, 0.4f);
    th_fill(fx_b0, hid, -0.1f, 0.1f);
    th_fill(fx_w2, hid * n_cls, -0.4f, 0.4f);
    th_fill(fx_b2, n_cls, -0.1f, 0.1f);
    for (uint32_t j = 0; j < n_cls * in_n; j++)
        protos[j] = (uint8_t)th_rand();
    samples(xt, yt, n_train, in_n, n_cls, protos);
    samples(xe, ye, 100, in_n, n_cls, protos);
    memset(win_words, 0xFF, sizeof win_words);
    build_blobs(fx_win, FX_WIN_ADDR, L, 3, (uint16_t)n_cls, first_bwd, &d, b);
}

void fx_mlp(built_t *b, uint32_t in_n, uint32_t hid, uint32_t n_cls, uint16_t first_bwd, uint32_t n_train)
{
    build_mlp(b, in_n, hid, n_cls, first_bwd, n_train, NULL, 0);
}

void fx_mlp_sparse(built_t *b, uint32_t in_n, uint32_t hid, uint32_t n_cls, uint32_t n_train, const uint16_t *ch,
                   uint16_t n_ch)
{
    build_mlp(b, in_n, hid, n_cls, 0, n_train, ch, n_ch);
}
