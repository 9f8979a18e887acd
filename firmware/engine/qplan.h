/* Int8 plan blobs "TQPL" v1 (docs/qplan-format.md): validation and resolution into ready-to-run op records. */
#ifndef QPLAN_H
#define QPLAN_H

#include <stdint.h>
#include "formats.h"
#include "plan.h"
#include "ops/qop.h"
#include "ops/qgrad.h"

#define QPLAN_MAGIC 0x4C505154u /* "TQPL" */
#define QPLAN_HEADER TQPL_H_SIZE
#define QPLAN_TENSOR TQPL_T_SIZE
#define QPLAN_OP TQPL_O_SIZE
#define QPLAN_MAX_OPS 64u
#define QPLAN_MAX_TENSORS 512u
#define QPLAN_NONE16 0xFFFFu
#define QPLAN_TRAIN_HEADER TQPL_TH_SIZE
#define QPLAN_TRAIN_RECORD TQPL_TR_SIZE
/* sparse update recomputes the listed channels of a CONV_2D this many at a time (fwd_tmp holds their planes) */
#define QSPARSE_GROUP 4u
#define QTRAIN_MAX_TENSORS 78u /* trained weight and bias tensors: one GSTAT message carries their statistics */
#define QTRAIN_GSTAT_SLOT 16u  /* arena bytes of one tensor's gradient statistics (qtrain.c) */

enum {
    QOP_CONV_2D = 1, QOP_DEPTHWISE_CONV_2D = 2, QOP_FULLY_CONNECTED = 3, QOP_AVERAGE_POOL_2D = 4, QOP_MEAN = 5,
    QOP_ADD = 6, QOP_RESHAPE = 7, QOP_SOFTMAX = 8, QOP_MAX_POOL_2D = 9, QOP_COUNT
};
enum { QT_ACTIVATION = 1, QT_CONST_I8 = 2, QT_CONST_I32 = 3 };
enum { QDS_U8 = 0, QDS_I8 = 1 };
/* training record flags; QTF_MERGE: a residual branch starts at this op, its input gradient adds the skip's */
enum { QTF_TRAIN_W = 1, QTF_TRAIN_B = 2, QTF_NEED_DX = 4, QTF_MASK = 8, QTF_MERGE = 16 }; /* dataset sample dtype (docs/plan-format.md, dataset header byte 44) */

typedef struct qop_kind qop_kind_t; /* qops.h */

typedef struct {
    uint8_t op;
    const int8_t *x, *x2, *w; /* inputs (x2: second ADD input), weights */
    int8_t *y;                /* output (RESHAPE: == x) */
    uint32_t n_out, macs;
    union {
        qconv_t conv;
        qfc_t fc;
        qpool_t pool;
        qmean_t mean;
        qadd_t add;
        qsoftmax_t softmax;
    } k;
} qnode_t;

/* One op of the backward path, resolved from its training record (docs/qplan-format.md, "Training section"). */
typedef struct {
    uint8_t flags;                 /* QTF_* */
    uint8_t h_down;                /* bits h gives up so its int32 accumulators cannot overflow (0..7) */
    uint16_t n_sel;                /* trained weight rows listed in sel (0: all rows when QTF_TRAIN_W) */
    const uint16_t *sel;
    uint32_t out_c, row, n_in;     /* output channels, weights per channel, input elements */
    int8_t *w_ram;                 /* int8 weight codes (all rows, or the n_sel listed rows, compact) */
    uint32_t w_stride;             /* 0: rows as above; else (depthwise) the whole tensor in its own layout, weight k
                                    * of channel o at w_ram[k·w_stride + o], even when only listed channels train */
    uint16_t *w_res;               /* their Q16 residuals, offset by 2^15 (qgrad.h) */
    int32_t *b_ram, *eff;          /* int32 bias codes; bias - zp_in * sum(w) kept in step with both */
    int16_t *b_res;
    int8_t *dout, *din;            /* int8 gradient of the output / of the input (QTF_NEED_DX) */
    int16_t *h;                    /* scratch: channel-scaled output gradient (n_out values) */
    int32_t *acc;                  /* scratch: input-gradient or one channel's weight-gradient accumulators */
    int8_t *fwd_tmp;               /* sparse conv: the output planes of up to QSPARSE_GROUP listed channels,
                                      recomputed from the arena rows, [plane][min(n_sel, QSPARSE_GROUP)] */
    const int32_t *m;              /* out_c Q15 factors s_W[o] / max s_W */
    const int32_t *upd;            /* (multiplier, shift) per channel: out_c for weights, then out_c for biases */
    const int8_t *w_flash;
    const int32_t *b_flash, *eff_flash;
    qrows_t rows;                  /* how the kernels read the weight rows */
    int8_t *skip;                  /* ADD: where its skip input's gradient goes (NULL: not needed); QTF_MERGE: read
                                    * from there. Layout: int32 exponent, then the int8 codes */
    const int32_t *merge;          /* QTF_MERGE: (mult, shift) of c_skip / c, the skip's constant over the path's */
} qtop_t;

typedef struct {
    uint32_t n_train, n_eval, sample_bytes;
    uint8_t dtype;
    int16_t shift; /* QDS_U8: int8 input = clamp(u8 + shift) */
    const uint8_t *x_train, *y_train, *x_eval, *y_eval;
} qdataset_t;

typedef struct {
    uint32_t plan_hash, arena_need;
    uint16_t n_ops, n_classes;
    int8_t *input;
    const int8_t *output;
    uint32_t n_input;
    int32_t in_zp, out_zp;
    float in_scale, out_scale;
    qnode_t *node;                 /* n_ops nodes, at the start of pool */
    qdataset_t data;
    /* training section (header flag bit 0): absent when train is 0 */
    uint8_t train;
    uint8_t loss;                  /* QLOSS_CROSS_ENTROPY or QLOSS_RECONSTRUCTION */
    uint16_t first_bwd;
    uint16_t bwd_top;              /* the highest op of the backward path: n_ops − 2 (SOFTMAX above), or n_ops − 1 */
    qrecon_t recon;                /* QLOSS_RECONSTRUCTION: the input codes rescaled to output codes */
    float lr;                      /* the learning rate the update multipliers were computed with */
    int8_t *dlogits;
    uint32_t n_trained;            /* trained weight and bias tensors */
    void *gstat;                   /* arena: n_trained slots of QTRAIN_GSTAT_SLOT bytes, a step's gradient statistics */
    qtop_t *top;                   /* op first_bwd + j, in pool after the nodes */
    /* the op tables share one pool, as big as 64 nodes and 16 backward records: a graph of fewer ops may train
     * through a longer backward path (qplan_load checks that nodes and records fit) */
    uint64_t pool[(QPLAN_MAX_OPS * sizeof(qnode_t) + 16u * sizeof(qtop_t) + 7u) / 8u];
} qplan_t;

/* bytes of the node table of n ops, rounded so the backward records after it stay aligned */
#define QPLAN_NODES_BYTES(n) (((uint32_t)(n) * (uint32_t)sizeof(qnode_t) + 7u) & ~7u)

/* what the host planner checks a plan against (bench/plan/int8.py: NODE_BYTES, BACKWARD_RECORD_BYTES,
 * TABLE_POOL_BYTES, MAX_TRAINED_TENSORS); tests/test_twin_kernels.py reads it from qplan.c compiled for each core */
extern const uint32_t qplan_tables[4];

/* 1 when a readable TQPL magic sits at plan_addr */
int qplan_is_tqpl(const mem_window_t *flash, uint32_t plan_addr);

/* Validates the TQPL plan at plan_addr and the dataset it names (FAULT 2 naming the op index in arg0, 3, 4);
 * fills *p with pointers into the window and the arena. Returns 0 or -1 with *f set. Writes nothing to the arena. */
int qplan_load(qplan_t *p, const mem_window_t *flash, uint32_t plan_addr, uint8_t *arena, uint32_t arena_bytes,
               fault_t *f);

#endif
