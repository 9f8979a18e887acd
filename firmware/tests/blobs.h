/* Builds plan + dataset blobs in C, as the host planner would, for the tests. */
#ifndef BLOBS_H
#define BLOBS_H

#include <stdint.h>
#include "plan.h"

typedef struct {
    uint8_t op, flags, k, stride;
    uint16_t in[3], out[3]; /* h, w, c */
    uint16_t pad_top, pad_left;
    const float *w, *b; /* initial values; b NULL = no bias unless trained */
    const uint16_t *ch; /* sparse update: output channels whose weights train (n_ch of them), else NULL */
    uint16_t n_ch;
    uint8_t kw; /* kernel width (0 = k) */
} spec_t;

typedef struct {
    uint32_t n_train, n_eval;
    uint16_t h, w, c, n_classes;
    float scale, offset;
    const uint8_t *xt, *yt, *xe, *ye;
} dspec_t;

typedef struct {
    uint32_t plan_bytes, data_off, data_bytes, arena_need;
    uint32_t w_ram[PLAN_MAX_LAYERS], b_ram[PLAN_MAX_LAYERS];
} built_t;

/* Writes the plan at win[0] and the dataset after it; window device address win_addr. */
void build_blobs(uint8_t *win, uint32_t win_addr, const spec_t *L, uint32_t n, uint16_t n_classes,
                 uint16_t first_bwd, const dspec_t *d, built_t *out);
/* Recomputes the CRC field of a blob after a test edited it. */
void blob_fix_crc(uint8_t *blob);

#endif

/* Shared fixture: MLP in_n -> hid (ReLU) -> n_cls on a synthetic, learnable dataset (prototype + noise). */
#define FX_WIN_ADDR 0x00020000u
#define FX_WIN_BYTES (256u * 1024u)
#define FX_ARENA_BYTES (64u * 1024u)
extern uint8_t *const fx_win;
extern uint8_t *const fx_arena;
extern float fx_w0[], fx_b0[], fx_w2[], fx_b2[];
void fx_mlp(built_t *b, uint32_t in_n, uint32_t hid, uint32_t n_cls, uint16_t first_bwd, uint32_t n_train);
/* the same with layer 0's weights trained only on the n_ch listed output channels (first_bwd 0) */
void fx_mlp_sparse(built_t *b, uint32_t in_n, uint32_t hid, uint32_t n_cls, uint32_t n_train, const uint16_t *ch,
                   uint16_t n_ch);
mem_window_t fx_window(void);
