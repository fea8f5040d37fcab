/*
 * Fused AxialAttention kernel (operator contract: AxialAttention_PluginConfig.yaml).
 *
 * One pass per tile of lines: logits (q.k and both relative terms) -> online softmax -> weighted
 * sum of values and of the relative value table -> bias, all in float32 registers. No L x L
 * matrix ever reaches global memory.
 *
 * Work split: a block takes one (image, head), `tile_lines` lines and `tile_queries` consecutive
 * queries of each line; a thread takes one line and one query (two consecutive queries for the
 * thinnest depths) and keeps their q channels and Dv accumulators in registers. Keys and values of the block's reach (its queries' windows)
 * are staged in shared memory as float32, in chunks when they do not fit, together with the
 * columns of the three relative tables that the chunk's offsets need. Depths are thin (4..64), too
 * thin for tensor cores: everything runs on FP32 FMA units.
 *
 * Memory order: along the width (axis 3) a line is contiguous, so lanes run along the queries of
 * one line; along the height (axis 2) positions are `width` apart, so lanes run across adjacent
 * lines (columns) and every warp-wide global load of a row is contiguous. Shared-memory slots
 * follow the same order, so the reads of the inner loop are conflict-free, and the table columns
 * read at one step are the same for all lanes of a warp (a broadcast). The device code is in
 * axialAttentionDevice.cuh; this file instantiates and launches it.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "axialAttentionCommon.h"
#include "axialAttentionDevice.cuh"

namespace axial_attention {
namespace {

template <typename T, int V>
cudaError_t launchVariant(KernelArgs args, const Plan& plan, int batch, cudaStream_t stream) {
    constexpr Variant variant = kVariants[V];
    auto kernel = axialAttentionKernel<T, variant.key_depth, variant.value_depth, variant.exact,
                                       variant.threads, variant.queries>;
    for (int first = 0; first < batch; first += kMaxGridY) {
        const int images = batch - first < kMaxGridY ? batch - first : kMaxGridY;
        args.batch_offset = first;
        const dim3 grid(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(images));
        kernel<<<grid, variant.threads, plan.shared_bytes, stream>>>(args);
        const cudaError_t status = cudaGetLastError();
        if (status != cudaSuccess) return status;
    }
    return cudaSuccess;
}

template <typename T>
cudaError_t launchTyped(const KernelArgs& args, const Plan& plan, int batch, cudaStream_t stream) {
    static_assert(kNumVariants == 5, "one case per variant");
    switch (plan.variant) {
        case 0: return launchVariant<T, 0>(args, plan, batch, stream);
        case 1: return launchVariant<T, 1>(args, plan, batch, stream);
        case 2: return launchVariant<T, 2>(args, plan, batch, stream);
        case 3: return launchVariant<T, 3>(args, plan, batch, stream);
        default: return launchVariant<T, 4>(args, plan, batch, stream);
    }
}

}  // namespace

int launchAxialAttention(const AxialAttentionParams& params, const Plan& plan, const void* qkv,
                         const AxialAttentionTables& tables, void* y, void* stream) {
    const KernelArgs args = kernelArgs(params, plan, qkv, tables, y);
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    const cudaError_t status =
        params.dtype == AXIAL_ATTENTION_FLOAT16
            ? launchTyped<__half>(args, plan, params.batch, s)
            : launchTyped<float>(args, plan, params.batch, s);
    return static_cast<int>(status);
}

}  // namespace axial_attention
