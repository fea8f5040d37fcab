/*
 * CPU emulation of the fused AxialAttention CUDA kernel, for machines without a GPU: it compiles
 * the kernel's own device code (plugins/axial_attention/axialAttentionDevice.cuh) as host C++ and
 * runs every block with one std::thread per CUDA thread and a std::barrier as __syncthreads, so
 * the tiling, the staging of keys and table columns, the chunking and the online softmax are
 * exercised exactly as written. It checks the indexing and the math, not GPU-only behaviour
 * (memory coalescing, bank conflicts, races the barrier hides, speed).
 *
 * Usage: kernel_emulator INPUT OUTPUT [SHARED_BUDGET_BYTES]
 *   INPUT: 10 int32 (AxialAttentionParams in order), then float32 qkv, rel_q, rel_k, rel_v,
 *   logit_scale, out_bias. OUTPUT: float32 y. Prints the launch plan as one JSON line.
 * Built by tests/test_kernel_emulation.py:  g++ -std=c++20 -O2 -pthread -I plugins/axial_attention
 */
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

// ---- the CUDA builtins the device code uses, on the host --------------------------------------
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
thread_local dim3 threadIdx;
thread_local dim3 blockIdx;
static std::barrier<>* g_block_barrier = nullptr;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
using __half = _Float16;
inline float __half2float(__half h) { return static_cast<float>(h); }
inline __half __float2half_rn(float f) { return static_cast<__half>(f); }
template <typename T>
inline T __ldg(const T* p) { return *p; }
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
using std::max;
using std::min;

#include "axialAttentionCommon.h"

namespace axial_attention {
namespace {
// The block's dynamic shared memory: blocks run one after another, so one array serves all.
float shared[kSharedMemoryBudget / sizeof(float)];
}  // namespace
}  // namespace axial_attention

#include "axialAttentionDevice.cuh"

namespace ax = axial_attention;

namespace {

template <typename T, int V>
void runVariant(const ax::KernelArgs& args, const ax::Plan& plan, int batch) {
    constexpr ax::Variant variant = ax::kVariants[V];
    std::barrier<> barrier(variant.threads);
    g_block_barrier = &barrier;
    std::vector<std::thread> threads;
    for (int t = 0; t < variant.threads; ++t) {
        threads.emplace_back([&, t] {
            threadIdx.x = static_cast<unsigned>(t);
            for (int n = 0; n < batch; ++n) {
                for (int64_t b = 0; b < plan.grid_x; ++b) {
                    blockIdx.x = static_cast<unsigned>(b);
                    blockIdx.y = static_cast<unsigned>(n);
                    ax::axialAttentionKernel<T, variant.key_depth, variant.value_depth,
                                             variant.exact, variant.threads,
                                       variant.queries>(args);
                    barrier.arrive_and_wait();  // the next block reuses the shared memory
                }
            }
        });
    }
    for (auto& thread : threads) thread.join();
}

template <typename T>
void runTyped(const ax::KernelArgs& args, const ax::Plan& plan, int batch) {
    switch (plan.variant) {
        case 0: return runVariant<T, 0>(args, plan, batch);
        case 1: return runVariant<T, 1>(args, plan, batch);
        case 2: return runVariant<T, 2>(args, plan, batch);
        case 3: return runVariant<T, 3>(args, plan, batch);
        default: return runVariant<T, 4>(args, plan, batch);
    }
}

std::vector<float> readFloats(std::ifstream& in, size_t count) {
    std::vector<float> values(count);
    in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(count * 4));
    return values;
}

int g_shared_budget = ax::kSharedMemoryBudget;

}  // namespace

/* The emulated launch behind axial_attention_enqueue (axialAttentionApi.cpp is linked in): the
 * whole C ABI path runs, argument checks included. The plan is recomputed with the budget given
 * on the command line. */
int axial_attention::launchAxialAttention(const AxialAttentionParams& params, const Plan& plan,
                                          const void* qkv, const AxialAttentionTables& tables,
                                          void* y, void* stream) {
    (void)stream;
    Plan emulated = plan;
    if (makePlan(params, &emulated, g_shared_budget) != AXIAL_ATTENTION_SUCCESS) return 1;
    const KernelArgs args = kernelArgs(params, emulated, qkv, tables, y);
    if (params.dtype == AXIAL_ATTENTION_FLOAT16)
        runTyped<__half>(args, emulated, params.batch);
    else
        runTyped<float>(args, emulated, params.batch);
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s INPUT OUTPUT [SHARED_BUDGET_BYTES]\n", argv[0]);
        return 2;
    }
    g_shared_budget = argc > 3 ? std::atoi(argv[3]) : ax::kSharedMemoryBudget;
    std::ifstream in(argv[1], std::ios::binary);
    AxialAttentionParams p{};
    in.read(reinterpret_cast<char*>(&p), sizeof(p));
    ax::Plan plan{};
    AxialAttentionStatus status = axial_attention_check(&p);
    if (status == AXIAL_ATTENTION_SUCCESS) status = ax::makePlan(p, &plan, g_shared_budget);
    if (status != AXIAL_ATTENTION_SUCCESS) {
        std::fprintf(stderr, "refused: %s\n", axial_attention_status_string(status));
        return 3;
    }
    const size_t plane = static_cast<size_t>(p.height) * p.width;
    const size_t per_head = 2 * static_cast<size_t>(p.key_depth) + p.value_depth;
    std::vector<float> qkv = readFloats(in, p.batch * p.num_heads * per_head * plane);
    const size_t rows_q = static_cast<size_t>(p.num_heads) * p.key_depth;
    const size_t rows_v = static_cast<size_t>(p.num_heads) * p.value_depth;
    std::vector<float> rel_q = readFloats(in, rows_q * p.table_length);
    std::vector<float> rel_k = readFloats(in, rows_q * p.table_length);
    std::vector<float> rel_v = readFloats(in, rows_v * p.table_length);
    std::vector<float> scale = readFloats(in, p.num_heads);
    std::vector<float> bias = readFloats(in, rows_v);
    if (!in) {
        std::fprintf(stderr, "input file too short\n");
        return 2;
    }
    const AxialAttentionTables tables{rel_q.data(), rel_k.data(), rel_v.data(), scale.data(),
                                      bias.data()};
    const size_t out_count = p.batch * rows_v * plane;
    std::vector<float> y(out_count, NAN);  // poisoned
    std::vector<__half> qkv16(qkv.begin(), qkv.end());
    std::vector<__half> y16(out_count, static_cast<__half>(NAN));  // poisoned
    const bool half = p.dtype == AXIAL_ATTENTION_FLOAT16;
    status = axial_attention_enqueue(&p, half ? static_cast<const void*>(qkv16.data()) : qkv.data(),
                                     &tables, half ? static_cast<void*>(y16.data()) : y.data(),
                                     nullptr, 0, nullptr);
    if (status != AXIAL_ATTENTION_SUCCESS) {
        std::fprintf(stderr, "enqueue: %s\n", axial_attention_status_string(status));
        return 3;
    }
    if (half) std::copy(y16.begin(), y16.end(), y.begin());
    std::ofstream(argv[2], std::ios::binary)
        .write(reinterpret_cast<const char*>(y.data()), static_cast<std::streamsize>(out_count * 4));
    std::printf(
        "{\"variant\": %d, \"tile_lines\": %d, \"tile_queries\": %d, \"key_chunk\": %d, "
        "\"radius\": %d, \"tables_in_shared\": %d, \"shared_bytes\": %d}\n",
        plan.variant, plan.tile_lines, plan.tile_queries, plan.key_chunk, plan.radius,
        plan.tables_in_shared, plan.shared_bytes);
    return 0;
}
