/*
 * Device code of the fused AxialAttention kernel, included by axialAttentionKernel.cu (and by
 * the CPU emulation test, tests/native/kernel_emulator.cpp, which runs this very code on host
 * threads). Expects __half, its conversions and the CUDA builtins to be declared by the includer.
 */
#ifndef AXIAL_ATTENTION_DEVICE_CUH
#define AXIAL_ATTENTION_DEVICE_CUH

#include "axialAttentionCommon.h"

namespace axial_attention {
namespace {

constexpr float kLog2e = 1.4426950408889634f;

template <typename T>
__device__ __forceinline__ float loadFloat(const T* p);
template <>
__device__ __forceinline__ float loadFloat<float>(const float* p) {
    return __ldg(p);
}
template <>
__device__ __forceinline__ float loadFloat<__half>(const __half* p) {
    return __half2float(__ldg(p));
}

template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v) {
    return v;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v) {
    return __float2half_rn(v);
}

__device__ __forceinline__ int clampInt(int v, int lo, int hi) { return min(max(v, lo), hi); }

/* Everything one launch needs, passed by value. */
struct KernelArgs {
    const void* qkv;
    void* y;
    const float* rel_q;
    const float* rel_k;
    const float* rel_v;
    const float* logit_scale;
    const float* out_bias;
    int batch_offset;  /* first image of this launch (the batch goes in chunks of gridDim.y) */
    int width;
    int plane;         /* height * width */
    int along_width;   /* 1: axis 3 */
    int heads;
    int key_depth;
    int value_depth;
    int length;
    int lines;
    int radius;
    int table_length;
    int tile_lines;
    int tile_queries;
    int key_chunk;
    int query_tiles;
    int tables_in_shared;
    int table_slots;
};

/* The kernel's arguments for checked params and their plan. */
inline KernelArgs kernelArgs(const AxialAttentionParams& params, const Plan& plan, const void* qkv,
                             const AxialAttentionTables& tables, void* y) {
    KernelArgs args{};
    args.qkv = qkv;
    args.y = y;
    args.rel_q = tables.rel_q;
    args.rel_k = tables.rel_k;
    args.rel_v = tables.rel_v;
    args.logit_scale = tables.logit_scale;
    args.out_bias = tables.out_bias;
    args.width = params.width;
    args.plane = params.height * params.width;
    args.along_width = params.axis == 3 ? 1 : 0;
    args.heads = params.num_heads;
    args.key_depth = params.key_depth;
    args.value_depth = params.value_depth;
    args.length = plan.length;
    args.lines = plan.lines;
    args.radius = plan.radius;
    args.table_length = params.table_length;
    args.tile_lines = plan.tile_lines;
    args.tile_queries = plan.tile_queries;
    args.key_chunk = plan.key_chunk;
    args.query_tiles = plan.query_tiles;
    args.tables_in_shared = plan.tables_in_shared;
    args.table_slots = plan.table_slots;
    return args;
}

/* Shared-memory slot of key kk (0-based in the chunk) of tile line o. Along the width, with two
 * queries a thread, lanes read every other key at a step: even and odd keys go to separate halves
 * so that those reads are consecutive words (conflict-free). */
template <int Q>
__device__ __forceinline__ int keySlot(int kk, int o, int along_width, int TO, int TK) {
    if (!along_width) return kk * TO + o;
    if (Q == 2) return o * TK + (kk & 1) * ((TK + 1) / 2) + (kk >> 1);
    return o * TK + kk;
}

/* One online-softmax step of one query: rescale when the maximum grows, then accumulate. */
template <int DV>
__device__ __forceinline__ void softmaxStep(float logit, float& running_max, float& running_sum,
                                            float (&acc)[DV]) {
    if (logit > running_max) {
        const float correction = exp2f(running_max - logit);
        running_sum *= correction;
#pragma unroll
        for (int c = 0; c < DV; ++c) acc[c] *= correction;
        running_max = logit;
    }
}

/* DQ, DV: the exact depths (EXACT) or their maxima; loops run to the compile-time bound and
 * skip channels past the runtime depth, so the register arrays stay in registers either way.
 * Q: consecutive queries per thread (1 or 2; 2 only for exact depths). With 2, each step of the
 * offset d = key - query loads one key and one table column for both queries: the key of the
 * second query at d is the key of the first at d + 1, carried in registers. */
template <typename T, int DQ, int DV, bool EXACT, int THREADS, int Q>
__global__ void __launch_bounds__(THREADS) axialAttentionKernel(const KernelArgs a) {
    static_assert(Q == 1 || (Q == 2 && EXACT), "two queries a thread need exact depths");
    extern __shared__ float shared[];
    const int dq = EXACT ? DQ : a.key_depth;
    const int dv = EXACT ? DV : a.value_depth;
    const int TO = a.tile_lines;
    const int TQ = a.tile_queries;
    const int TK = a.key_chunk;
    const int groups = TQ / Q; /* threads along the queries of a line */

    /* Block -> (head, query tile, line tile); blockIdx.y -> image. */
    int block = blockIdx.x;
    const int g = block % a.heads;
    block /= a.heads;
    const int query_tile = block % a.query_tiles;
    const int line_tile = block / a.query_tiles;
    const int n = a.batch_offset + static_cast<int>(blockIdx.y);

    /* Thread -> (line o, queries i .. i + Q - 1), lanes along the contiguous direction. */
    const int tid = static_cast<int>(threadIdx.x);
    const int o = a.along_width ? tid / groups : tid % TO;
    const int qi = a.along_width ? tid % groups : tid / TO;
    const int line0 = line_tile * TO;
    const int i0 = query_tile * TQ;
    const int line = line0 + o;
    const int i = i0 + qi * Q;
    bool active[Q];
#pragma unroll
    for (int u = 0; u < Q; ++u) active[u] = line < a.lines && i + u < a.length;

    const int position_stride = a.along_width ? 1 : a.width;
    const int line_stride = a.along_width ? a.width : 1;
    const long long plane = a.plane;
    const long long channels = static_cast<long long>(a.heads) * (2 * a.key_depth + a.value_depth);
    const T* image = static_cast<const T*>(a.qkv) + n * channels * plane;
    const T* q_rows = image + static_cast<long long>(g) * a.key_depth * plane;
    const T* k_rows = image + (static_cast<long long>(a.heads) + g) * a.key_depth * plane;
    const T* v_rows = image + (2LL * a.heads * a.key_depth +
                               static_cast<long long>(g) * a.value_depth) * plane;
    const int my_offset = active[0] ? i * position_stride + line * line_stride : 0;

    float q[Q][DQ];
#pragma unroll
    for (int u = 0; u < Q; ++u) {
#pragma unroll
        for (int c = 0; c < DQ; ++c)
            q[u][c] = (c < dq && active[u])
                          ? loadFloat(q_rows + c * plane + my_offset + u * position_stride)
                          : 0.0f;
    }

    const int slots = TO * TK;
    float* s_kv = shared;                                           /* [dq + dv][slots] */
    float* s_tab = shared + (a.key_depth + a.value_depth) * slots;  /* [2 dq + dv][columns] */
    const int half_table = (a.table_length - 1) / 2;
    const int last_column = a.table_length - 1;
    const long long table_rows = static_cast<long long>(g) * a.key_depth * a.table_length;
    const float* g_rel_q = a.rel_q + table_rows;
    const float* g_rel_k = a.rel_k + table_rows;
    const float* g_rel_v = a.rel_v + static_cast<long long>(g) * a.value_depth * a.table_length;

    /* Logits in base 2: exp2(log2(e) * l) = exp(l). */
    const float qk_scale = __ldg(a.logit_scale + g) * kLog2e;
    float running_max[Q];
    float running_sum[Q];
    float acc[Q][DV];
#pragma unroll
    for (int u = 0; u < Q; ++u) {
        running_max[u] = -INFINITY;
        running_sum[u] = 0.0f;
#pragma unroll
        for (int c = 0; c < DV; ++c) acc[u][c] = 0.0f;
    }

    const int r = a.radius;
    const int i_last = min(a.length, i0 + TQ) - 1;
    const int k_first = max(0, i0 - r);
    const int k_last = min(a.length - 1, i_last + r);

    for (int k0 = k_first; k0 <= k_last; k0 += TK) {
        const int k1 = min(k_last, k0 + TK - 1);
        const int keys = k1 - k0 + 1;
        __syncthreads(); /* the previous chunk is consumed */

        /* Stage keys and values: element e -> (channel, key, line), the contiguous global
         * direction fastest so that a warp's loads coalesce. */
        const int per_channel = keys * TO;
        const int staged = (a.key_depth + a.value_depth) * per_channel;
        for (int e = tid; e < staged; e += THREADS) {
            const int c = e / per_channel;
            const int rest = e - c * per_channel;
            const int kk = a.along_width ? rest % keys : rest / TO;
            const int oo = a.along_width ? rest / keys : rest % TO;
            if (line0 + oo >= a.lines) continue;
            const T* row = c < a.key_depth ? k_rows + c * plane
                                           : v_rows + (c - a.key_depth) * plane;
            s_kv[c * slots + keySlot<Q>(kk, oo, a.along_width, TO, TK)] =
                loadFloat(row + (k0 + kk) * position_stride + (line0 + oo) * line_stride);
        }

        /* Table columns of the offsets key - query this chunk can pair (clamped to the table). */
        const float* t_q = g_rel_q;
        const float* t_k = g_rel_k;
        const float* t_v = g_rel_v;
        int column0 = 0;
        int column_stride = a.table_length;
        if (a.tables_in_shared) {
            const int d_lo = max(-r, k0 - i_last);
            const int d_hi = min(r, k1 - i0);
            column0 = clampInt(d_lo + half_table, 0, last_column);
            const int columns = clampInt(d_hi + half_table, 0, last_column) - column0 + 1;
            const int rows = 2 * a.key_depth + a.value_depth;
            for (int e = tid; e < rows * columns; e += THREADS) {
                const int c = e / columns;
                const int t = e - c * columns;
                const float* src = c < a.key_depth ? g_rel_q + c * a.table_length
                                   : c < 2 * a.key_depth
                                       ? g_rel_k + (c - a.key_depth) * a.table_length
                                       : g_rel_v + (c - 2 * a.key_depth) * a.table_length;
                s_tab[c * columns + t] = __ldg(src + column0 + t);
            }
            t_q = s_tab;
            t_k = s_tab + a.key_depth * columns;
            t_v = s_tab + 2 * a.key_depth * columns;
            column_stride = columns;
        }
        __syncthreads();

        if constexpr (Q == 1) {
            if (active[0]) {
                const int j_lo = max(k0, i - r);
                const int j_hi = min(k1, i + r);
                const int slot_step = a.along_width ? 1 : TO;
                int slot = keySlot<1>(j_lo - k0, o, a.along_width, TO, TK);
                for (int j = j_lo; j <= j_hi; ++j, slot += slot_step) {
                    const int t = clampInt(j - i + half_table, 0, last_column) - column0;
                    float dot = 0.0f;
                    float rel = 0.0f;
#pragma unroll
                    for (int c = 0; c < DQ; ++c) {
                        if (c < dq) {
                            const float k = s_kv[c * slots + slot];
                            dot = fmaf(q[0][c], k, dot);
                            rel = fmaf(q[0][c], t_q[c * column_stride + t], rel);
                            rel = fmaf(k, t_k[c * column_stride + t], rel);
                        }
                    }
                    const float logit = fmaf(qk_scale, dot, kLog2e * rel);
                    softmaxStep<DV>(logit, running_max[0], running_sum[0], acc[0]);
                    const float p = exp2f(logit - running_max[0]);
                    running_sum[0] += p;
                    const float* v = s_kv + dq * slots + slot;
#pragma unroll
                    for (int c = 0; c < DV; ++c) {
                        if (c < dv)
                            acc[0][c] = fmaf(p, v[c * slots] + t_v[c * column_stride + t],
                                             acc[0][c]);
                    }
                }
            }
        } else {
            /* Two queries i, i + 1; key of query u at offset d: j = i + u + d. */
            if (active[0]) {
                const int i_hi = active[1] ? i + 1 : i;
                const int d_lo = max(-r, k0 - i_hi);
                const int d_hi = min(r, k1 - i);
                float key[2][DQ];
                float value[2][DV];
                {   /* query 0's key at d_lo, loaded as "query 1's key at d_lo - 1" would be */
                    const int j = i + d_lo;
                    const bool inside = j >= k0 && j <= k1;
                    const int slot = keySlot<2>(inside ? j - k0 : 0, o, a.along_width, TO, TK);
#pragma unroll
                    for (int c = 0; c < DQ; ++c) key[1][c] = inside ? s_kv[c * slots + slot] : 0.f;
#pragma unroll
                    for (int c = 0; c < DV; ++c)
                        value[1][c] = inside ? s_kv[(DQ + c) * slots + slot] : 0.0f;
                }
                for (int d = d_lo; d <= d_hi; ++d) {
#pragma unroll
                    for (int c = 0; c < DQ; ++c) key[0][c] = key[1][c];
#pragma unroll
                    for (int c = 0; c < DV; ++c) value[0][c] = value[1][c];
                    /* Loaded even when query 1 lies past the line: query 0 needs it next. */
                    const int j1 = i + 1 + d;
                    const bool loaded1 = j1 >= k0 && j1 <= k1;
                    if (loaded1) {
                        const int slot = keySlot<2>(j1 - k0, o, a.along_width, TO, TK);
#pragma unroll
                        for (int c = 0; c < DQ; ++c) key[1][c] = s_kv[c * slots + slot];
#pragma unroll
                        for (int c = 0; c < DV; ++c) value[1][c] = s_kv[(DQ + c) * slots + slot];
                    }
                    const int t = clampInt(d + half_table, 0, last_column) - column0;
                    float tq[DQ], tk[DQ], tv[DV];
#pragma unroll
                    for (int c = 0; c < DQ; ++c) {
                        tq[c] = t_q[c * column_stride + t];
                        tk[c] = t_k[c * column_stride + t];
                    }
#pragma unroll
                    for (int c = 0; c < DV; ++c) tv[c] = t_v[c * column_stride + t];
                    const int j0 = i + d;
                    const bool inside[2] = {j0 >= k0 && j0 <= k1, active[1] && loaded1};
#pragma unroll
                    for (int u = 0; u < 2; ++u) {
                        if (!inside[u]) continue;
                        float dot = 0.0f;
                        float rel = 0.0f;
#pragma unroll
                        for (int c = 0; c < DQ; ++c) {
                            dot = fmaf(q[u][c], key[u][c], dot);
                            rel = fmaf(q[u][c], tq[c], rel);
                            rel = fmaf(key[u][c], tk[c], rel);
                        }
                        const float logit = fmaf(qk_scale, dot, kLog2e * rel);
                        softmaxStep<DV>(logit, running_max[u], running_sum[u], acc[u]);
                        const float p = exp2f(logit - running_max[u]);
                        running_sum[u] += p;
#pragma unroll
                        for (int c = 0; c < DV; ++c)
                            acc[u][c] = fmaf(p, value[u][c] + tv[c], acc[u][c]);
                    }
                }
            }
        }
    }

    const float* bias = a.out_bias + static_cast<long long>(g) * a.value_depth;
#pragma unroll
    for (int u = 0; u < Q; ++u) {
        if (!active[u]) continue;
        /* Every query attends at least to itself, so running_sum >= 1. */
        const float inverse = 1.0f / running_sum[u];
        T* out = static_cast<T*>(a.y) +
                 (n * static_cast<long long>(a.heads) + g) * a.value_depth * plane + my_offset +
                 u * position_stride;
#pragma unroll
        for (int c = 0; c < DV; ++c) {
            if (c < dv) out[c * plane] = fromFloat<T>(fmaf(acc[u][c], inverse, __ldg(bias + c)));
        }
    }
}

}  // namespace
}  // namespace axial_attention

#endif /* AXIAL_ATTENTION_DEVICE_CUH */
