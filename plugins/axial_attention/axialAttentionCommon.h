/*
 * Internal declarations shared by the C ABI (axialAttentionApi.cpp, host only) and the CUDA
 * kernels (axialAttentionKernel.cu): the launch plan, which both sides compute the same way, so
 * that argument checking needs no CUDA call and the kernels trust what they are given.
 */
#ifndef AXIAL_ATTENTION_COMMON_H
#define AXIAL_ATTENTION_COMMON_H

#include <stdint.h>

#include "axialAttentionKernel.h"

namespace axial_attention {

/* Kernel variants: exact depths templated for the zoo's shapes (value depth = 2 x key depth),
 * and one generic variant for any key depth <= 64 and value depth <= 128 (runtime loop bounds
 * under compile-time maxima, so its arrays stay in registers). Threads per block shrink with the
 * depth because every thread keeps its queries and their accumulators in registers. */
struct Variant {
    int key_depth;    /* exact key depth, or the maximum for the generic variant */
    int value_depth;  /* exact value depth, or the maximum for the generic variant */
    int threads;      /* threads per block */
    bool exact;
    int queries;      /* consecutive queries per thread (2 halves the shared-memory reads) */
};

constexpr Variant kVariants[] = {
    {4, 8, 256, true, 2},    {8, 16, 256, true, 2},   {16, 32, 128, true, 1},
    {32, 64, 128, true, 1},  {64, 128, 64, false, 1},
};
constexpr int kNumVariants = sizeof(kVariants) / sizeof(kVariants[0]);
constexpr int kGenericVariant = kNumVariants - 1;

/* Shared memory per block: at most the 48 KiB every architecture grants without an opt-in. */
constexpr int kSharedMemoryBudget = 48 * 1024;
/* gridDim.y bound: the batch is launched in chunks of at most this many images. */
constexpr int kMaxGridY = 65535;

/* How one launch tiles the work. A block handles one (image, head), `tile_lines` lines and
 * `tile_queries` consecutive queries of each; keys are staged in shared memory in chunks of
 * `key_chunk` positions. */
struct Plan {
    int variant;
    int threads;
    int length;        /* L, positions along the attended axis */
    int lines;         /* positions along the other spatial axis */
    int radius;        /* max |key - query| attended, already clipped to L - 1 */
    int tile_lines;    /* TO */
    int tile_queries;  /* TQ */
    int key_chunk;     /* TK */
    int query_tiles;
    int line_tiles;
    int tables_in_shared;  /* 1: the block stages the tables' needed columns; 0: reads global */
    int table_slots;       /* columns staged per table row (0 when read from global memory) */
    int shared_bytes;
    int64_t grid_x;    /* heads * query_tiles * line_tiles */
};

inline int ceilDiv(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

inline int nextPowerOfTwo(int v) {
    int p = 1;
    while (p < v) p *= 2;
    return p;
}

inline int variantFor(int key_depth, int value_depth) {
    for (int v = 0; v < kNumVariants; ++v) {
        const Variant& variant = kVariants[v];
        if (variant.exact && variant.key_depth == key_depth && variant.value_depth == value_depth)
            return v;
    }
    const Variant& generic = kVariants[kGenericVariant];
    if (key_depth <= generic.key_depth && value_depth <= generic.value_depth)
        return kGenericVariant;
    return -1;
}

inline int sharedBytes(const AxialAttentionParams& p, const Plan& plan, int key_chunk,
                       int tables_in_shared) {
    int64_t floats = static_cast<int64_t>(p.key_depth + p.value_depth) * plan.tile_lines * key_chunk;
    if (tables_in_shared) {
        const int64_t columns =
            key_chunk + plan.tile_queries - 1 < 2LL * plan.radius + 1
                ? key_chunk + plan.tile_queries - 1
                : 2LL * plan.radius + 1;
        floats += static_cast<int64_t>(2 * p.key_depth + p.value_depth) * columns;
    }
    const int64_t bytes = floats * static_cast<int64_t>(sizeof(float));
    return bytes > (1LL << 30) ? (1 << 30) : static_cast<int>(bytes);
}

/* The largest key chunk in [1, key_range] whose shared memory fits the budget (0 if none). */
inline int largestChunk(const AxialAttentionParams& p, const Plan& plan, int key_range,
                        int tables_in_shared, int budget) {
    int lo = 0, hi = key_range;  /* invariant: lo fits (or is 0), hi + 1 does not */
    while (lo < hi) {
        const int mid = lo + (hi - lo + 1) / 2;
        if (sharedBytes(p, plan, mid, tables_in_shared) <= budget)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* The plan for params already checked for types, axis, shape, span and table (see
 * axial_attention_check). Returns SUCCESS or UNSUPPORTED. `shared_budget` is only lowered by the
 * CPU emulation test, to drive the chunked paths with small shapes. */
inline AxialAttentionStatus makePlan(const AxialAttentionParams& p, Plan* plan,
                                     int shared_budget = kSharedMemoryBudget) {
    Plan out{};
    out.variant = variantFor(p.key_depth, p.value_depth);
    if (out.variant < 0) return AXIAL_ATTENTION_ERROR_UNSUPPORTED;
    /* Table offsets (row * table_length + column) are 32-bit in the kernel. */
    const int64_t rows = 2LL * p.key_depth + p.value_depth;
    if (rows * p.table_length > 2147483647LL)
        return AXIAL_ATTENTION_ERROR_UNSUPPORTED;
    out.threads = kVariants[out.variant].threads;
    const bool along_width = p.axis == 3;
    out.length = along_width ? p.width : p.height;
    out.lines = along_width ? p.height : p.width;
    const int64_t radius = p.span == 0 ? out.length - 1 : (p.span - 1) / 2;
    out.radius = static_cast<int>(radius < out.length - 1 ? radius : out.length - 1);

    const int per_thread = kVariants[out.variant].queries;
    if (along_width) {
        /* A line is contiguous: lanes run along the queries of one line. */
        int groups = nextPowerOfTwo(ceilDiv(out.length, per_thread));
        groups = groups < 32 ? 32 : groups;
        groups = groups < out.threads ? groups : out.threads;
        out.tile_lines = out.threads / groups;
        out.tile_queries = groups * per_thread;
    } else {
        /* Consecutive positions of a line are `width` apart: lanes run across adjacent lines
         * (columns), so every global load of a key row is coalesced; 32 of them with two queries
         * a thread, so that a warp's shared-memory reads stay conflict-free. */
        const int lines = nextPowerOfTwo(out.lines);
        const int most = per_thread == 2 ? 32 : 16;
        out.tile_lines = lines < most ? lines : most;
        out.tile_queries = out.threads / out.tile_lines * per_thread;
    }
    out.query_tiles = ceilDiv(out.length, out.tile_queries);
    out.line_tiles = ceilDiv(out.lines, out.tile_lines);
    out.grid_x = static_cast<int64_t>(p.num_heads) * out.query_tiles * out.line_tiles;
    if (out.grid_x > 2147483647LL) return AXIAL_ATTENTION_ERROR_UNSUPPORTED;

    /* Keys one block can reach; stage them all at once when they fit, else in chunks (the
     * largest that fits). Tables go to shared memory too unless that leaves room for fewer than
     * 8 keys a chunk; then they are read from global memory (L1/L2). */
    const int64_t reach = static_cast<int64_t>(out.tile_queries) + 2LL * out.radius;
    const int key_range = static_cast<int>(reach < out.length ? reach : out.length);
    int tables_in_shared = 1;
    int chunk = largestChunk(p, out, key_range, 1, shared_budget);
    if (chunk < key_range && chunk < 8) {
        tables_in_shared = 0;
        chunk = largestChunk(p, out, key_range, 0, shared_budget);
    }
    if (chunk < 1) return AXIAL_ATTENTION_ERROR_UNSUPPORTED;
    out.key_chunk = chunk;
    out.tables_in_shared = tables_in_shared;
    if (tables_in_shared) {
        const int64_t columns = chunk + out.tile_queries - 1;
        out.table_slots =
            static_cast<int>(columns < 2LL * out.radius + 1 ? columns : 2LL * out.radius + 1);
    }
    out.shared_bytes = sharedBytes(p, out, chunk, tables_in_shared);
    if (out.shared_bytes > shared_budget) return AXIAL_ATTENTION_ERROR_UNSUPPORTED;
    *plan = out;
    return AXIAL_ATTENTION_SUCCESS;
}

/* Launches the kernel for checked params and non-null pointers. Returns 0 or the cudaError_t
 * value of the failed CUDA call (declared without CUDA types so host files need no CUDA header). */
int launchAxialAttention(const AxialAttentionParams& params, const Plan& plan, const void* qkv,
                         const AxialAttentionTables& tables, void* y, void* stream);

}  // namespace axial_attention

#endif /* AXIAL_ATTENTION_COMMON_H */
