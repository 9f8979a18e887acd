/* Int8 plan blobs "TQPL" v1 (docs/qplan-format.md): validation and resolution into ready-to-run op records. */
#ifndef QPLAN_H
#define QPLAN_H

#include <stdint.h>
#include "plan.h"
#include "ops/qop.h"

#define QPLAN_MAGIC 0x4C505154u /* "TQPL" */
#define QPLAN_HEADER 64u
#define QPLAN_TENSOR 32u
#define QPLAN_OP 64u
#define QPLAN_MAX_OPS 64u
#define QPLAN_MAX_TENSORS 512u
#define QPLAN_NONE16 0xFFFFu

enum {
    QOP_CONV_2D = 1, QOP_DEPTHWISE_CONV_2D = 2, QOP_FULLY_CONNECTED = 3, QOP_AVERAGE_POOL_2D = 4, QOP_MEAN = 5,
    QOP_ADD = 6, QOP_RESHAPE = 7, QOP_SOFTMAX = 8,
};
enum { QT_ACTIVATION = 1, QT_CONST_I8 = 2, QT_CONST_I32 = 3 };
enum { QDS_U8 = 0, QDS_I8 = 1 }; /* dataset sample dtype (docs/plan-format.md, dataset header byte 44) */

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
    int32_t out_zp;
    float out_scale;
    qnode_t node[QPLAN_MAX_OPS];
    qdataset_t data;
} qplan_t;

/* 1 when a readable TQPL magic sits at plan_addr */
int qplan_is_tqpl(const mem_window_t *flash, uint32_t plan_addr);

/* Validates the TQPL plan at plan_addr and the dataset it names (FAULT 2 naming the op index in arg0, 3, 4);
 * fills *p with pointers into the window and the arena. Returns 0 or -1 with *f set. Writes nothing to the arena. */
int qplan_load(qplan_t *p, const mem_window_t *flash, uint32_t plan_addr, uint8_t *arena, uint32_t arena_bytes,
               fault_t *f);

#endif
