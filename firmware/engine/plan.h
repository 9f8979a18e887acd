/* Plan and dataset blobs v1 (docs/plan-format.md): validation and resolution into ready-to-run layer records. */
#ifndef PLAN_H
#define PLAN_H

#include <stdint.h>
#include "formats.h"
#include "ops/conv2d.h"

#define PLAN_MAGIC 0x4E4C5054u /* "TPLN" */
#define DATA_MAGIC 0x54534454u /* "TDST" */
#define PLAN_HEADER TPLN_H_SIZE
#define PLAN_RECORD TPLN_L_SIZE
#define DATA_HEADER TDST_H_SIZE
#define PLAN_MAX_LAYERS 32u
#define PLAN_NONE 0xFFFFFFFFu

enum { OP_DENSE = 1, OP_CONV2D = 2, OP_RELU = 3, OP_MAXPOOL = 4, OP_DWCONV2D = 5, OP_GAVGPOOL = 6, OP_ADD = 7, OP_COUNT };
/* LF_RELU / LF_RELU6: a fused activation on a layer with parameters (imported graphs: one record per TFLite op) */
/* LF_MERGE: a residual branch starts at this layer; after its backward, its din adds the skip gradient of the one
 * ADD whose skip (record field k) is this layer's input */
enum { LF_TRAIN_W = 1, LF_TRAIN_B = 2, LF_NEED_DX = 4, LF_PAD_SAME = 8, LF_RELU = 16, LF_RELU6 = 32, LF_MERGE = 64 };
#define LF_ACT (LF_RELU | LF_RELU6)
/* header flags: layer records may carry a channel list (sparse update); forward-only training (PEPITA, MEMPEPITA);
 * the reconstruction loss (an autoencoder: MSE of the output against the input, which the plan keeps to the loss) */
enum { PF_CHANNEL_LISTS = 1, PF_PEPITA = 2, PF_MEMPEPITA = 4, PF_RECON = 8 };
enum { FWD_NONE = 0, FWD_PEPITA = 1, FWD_MEMPEPITA = 2 };

typedef struct {
    uint8_t op, flags;     /* flags: need_dx cleared below first_bwd, where nothing runs backward */
    conv_shape_t s;        /* dense uses in_c / out_c only */
    uint32_t n_in, n_out;  /* activation element counts */
    const float *w, *b;    /* what the kernels read: arena copy or flash; b NULL = no bias */
    float *w_ram, *b_ram;  /* arena copies, NULL when used from flash */
    const float *w_init, *b_init; /* initial values in the blob; NULL = start from zero */
    float *in, *out, *dout, *din, *scratch; /* ADD: w is its skip input (layer s.k's input), scratch the skip
                                                gradient (NULL when nothing below needs it) */
    wsplit_t ws;           /* the rows the kernels read: ws.idx NULL = every row from w; sparse update: ws.idx lists
                              the output channels whose weights w_ram holds (compact, ws.n_sel rows of ws.row
                              floats), the others come from w_init in flash */
} layer_t;

typedef struct {
    uint32_t n_train, n_eval, sample_bytes;
    uint16_t h, w, c;
    float scale, offset;
    const uint8_t *x_train, *y_train, *x_eval, *y_eval;
} dataset_t;

typedef struct {
    uint32_t plan_hash, arena_need;
    uint16_t n_layers, n_classes, first_bwd;
    float *input, *dlogits;
    /* forward-only training (docs/plan-format.md, "Forward-only training"): the mode, the projection F's seed and
     * bound, and the two buffers (mod_n floats each) the modulated pass runs through */
    uint8_t fwd_mode;
    uint8_t recon;  /* PF_RECON: n_classes is the output size, equal to the input's */
    uint32_t f_seed, mod_n;
    float f_bound;
    float *mod_a, *mod_b;
    layer_t layer[PLAN_MAX_LAYERS];
    dataset_t data;
} plan_t;

typedef struct {
    uint32_t code;       /* FAULT_PLAN, FAULT_ARENA or FAULT_DATASET */
    uint32_t arg0, arg1; /* layer index / field value, or needed / available bytes for FAULT_ARENA */
    const char *text;
} fault_t;

/* Where blobs may live: device addresses [addr, addr + size), readable at host + (address - addr). */
typedef struct {
    uint32_t addr, size;
    uintptr_t host;
} mem_window_t;

/* Validates the plan at plan_addr and the dataset it names; fills *p with pointers into the window and the arena.
 * Returns 0, or -1 with *f describing the first problem found. Nothing is written to the arena. */
int plan_load(plan_t *p, const mem_window_t *flash, uint32_t plan_addr, uint8_t *arena, uint32_t arena_bytes,
              fault_t *f);

#endif
