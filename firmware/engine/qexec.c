/* Int8 graph execution: one kernel call per op, RESHAPE is an alias (no data movement); then the evaluation run.
 * Per-op ticks cover the kernel only; OUTPUT streaming happens between ops, outside the timed windows, so the
 * counts are those of inference. Memory is measured as in the fp32 trainer: painted arena and stack. */
#include <string.h>
#include "qexec.h"
#include "qops.h"
#include "memmeter.h"
#include "msg.h"
#include "trainer.h"
#include "wire.h"
#include "ops/fmath.h"

void qexec_op(const qnode_t *n)
{
    if (qnode_kind(n)->forward) /* RESHAPE has none: its output aliases its input */
        qnode_kind(n)->forward(n);
}

void qexec_forward(const qplan_t *p, uint64_t *op_ticks, qexec_hook_fn hook, void *ctx)
{
    for (uint32_t i = 0; i < p->n_ops; i++) {
        uint64_t t = port_ticks();
        qexec_op(&p->node[i]);
        if (op_ticks)
            op_ticks[i] += port_ticks() - t;
        if (hook)
            hook(p, i, ctx);
    }
}

void qexec_load_sample(const qplan_t *p, const uint8_t *x)
{
    uint32_t n = p->data.sample_bytes;
    if (p->data.dtype == QDS_I8) {
        memcpy(p->input, x, n);
        return;
    }
    for (uint32_t j = 0; j < n; j++) {
        int32_t v = (int32_t)x[j] + p->data.shift;
        p->input[j] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
    }
}

uint32_t qexec_argmax(const qplan_t *p)
{
    uint32_t best = 0;
    for (uint32_t j = 1; j < p->n_classes; j++)
        if (p->output[j] > p->output[best])
            best = j;
    return best;
}

/* ---- the evaluation run ----------------------------------------------------------------------------------- */

typedef struct {
    uint32_t sample;
    uint8_t phase;
    uint64_t op_ticks[QPLAN_MAX_OPS];
} qrun_t;

static qrun_t run; /* static: keeps the stack high-water mark about inference */

static void send_tensor(const qrun_t *r, uint8_t op, const int8_t *v, uint32_t n)
{
    for (uint32_t off = 0; off < n; off += QEXEC_OUT_CHUNK) {
        uint32_t cnt = n - off < QEXEC_OUT_CHUNK ? n - off : QEXEC_OUT_CHUNK;
        msg_begin(MSG_OUTPUT);
        msg_u32(r->sample);
        msg_u8(op);
        msg_u8(r->phase);
        msg_u16(0);
        msg_u32(n);
        msg_u32(off);
        msg_u16((uint16_t)cnt);
        msg_u16(0);
        msg_bytes(v + off, cnt);
        msg_send();
    }
}

static void stream_op(const qplan_t *p, uint32_t i, void *ctx)
{
    send_tensor((const qrun_t *)ctx, (uint8_t)i, p->node[i].y, p->node[i].n_out);
}




/* the mean squared error of the dequantised output against the dequantised input (an autoencoder's loss) */
static float recon_loss(const qplan_t *p)
{
    float sum = 0.0f;
    for (uint32_t j = 0; j < p->n_input; j++) {
        float d = (float)(p->output[j] - p->out_zp) * p->out_scale - (float)(p->input[j] - p->in_zp) * p->in_scale;
        sum += d * d;
    }
    return sum / (float)p->n_input;
}

/* -ln p(label), p the dequantised output read as a probability (graphs ending in SOFTMAX); the reconstruction
 * error for a plan training with that loss */
float qexec_sample_loss(const qplan_t *p, uint32_t label)
{
    float prob;
    if (p->train && p->loss == QLOSS_RECONSTRUCTION)
        return recon_loss(p);
    prob = (float)(p->output[label] - p->out_zp) * p->out_scale;
    return -fm_log(prob > 1.0f / 512.0f ? prob : 1.0f / 512.0f);
}

int qexec_run(const qplan_t *p, const qstart_t *a, const port_info_t *info, int (*poll)(void))
{
    msg_eval_t e = {0, p->data.n_eval, 0, 0.0f, 0};
    msg_summary_t s = {0, 0, 0.0f, 0, 0, info->static_bytes, 0, 0};
    uint64_t beat = port_ticks();
    memset(&run, 0, sizeof run);
    mem_repaint(info);
    if (a->eval_samples && a->eval_samples < e.n)
        e.n = a->eval_samples;
    for (uint32_t k = 0; k < e.n; k++) {
        uint32_t label = p->data.y_eval[k];
        int stream = a->out_samples == 0xFFFFu || k < a->out_samples;
        uint64_t t;
        if (poll && poll()) {
            s.status = 1;
            e.n = k;
            break;
        }
        msg_beat(&beat); /* outside the timed windows */
        t = port_ticks();
        run.sample = k;
        qexec_load_sample(p, p->data.x_eval + k * p->data.sample_bytes);
        e.ticks += port_ticks() - t;
        qexec_forward(p, run.op_ticks, stream && (a->out_flags & QEXEC_OUT_ALL_OPS) ? stream_op : NULL, &run);
        e.correct += qexec_argmax(p) == label;
        e.loss_sum += qexec_sample_loss(p, label);
        if (stream && !(a->out_flags & QEXEC_OUT_ALL_OPS))
            send_tensor(&run, QEXEC_OUT_GRAPH, p->output, p->n_classes);
    }
    for (uint32_t i = 0; i < p->n_ops; i++)
        e.ticks += run.op_ticks[i];
    msg_eval(&e);
    msg_layers_begin(p->n_ops < 32u ? p->n_ops : 32u); /* evaluation only: forward ticks per op */
    for (uint32_t i = 0; i < p->n_ops && i < 32u; i++) {
        const uint64_t ticks[3] = {run.op_ticks[i], 0, 0};
        msg_layer(i, (uint8_t)(0x80u | p->node[i].op), ticks);
    }
    msg_send();
    s.stack_hwm = mem_stack_hwm(info);
    s.arena_peak = mem_arena_peak(info, p->arena_need);
    s.sram_peak = info->static_bytes + s.stack_hwm + s.arena_peak;
    s.ticks_train = e.ticks;
    msg_summary(&s);
    return s.status;
}
