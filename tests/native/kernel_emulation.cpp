/*
 * CPU emulation of the fused AxialAttention CUDA kernel, for machines without a GPU: it compiles
 * the kernel's own device code (plugins/axial_attention/axialAttentionDevice.cuh) as host C++ and
 * runs every block with one std::thread per CUDA thread and a std::barrier as __syncthreads, so
 * the tiling, the staging of keys and table columns, the chunking and the online softmax are
 * exercised exactly as written. It checks the indexing and the math, not GPU-only behaviour
 * (memory coalescing, bank conflicts, races the barrier hides, speed).
 *
 * This file defines axial_attention::launchAxialAttention (the symbol axialAttentionKernel.cu
 * defines on a GPU build), so axialAttentionApi.cpp links against it unchanged. No CUDA header may
 * be included here: the builtins below stand in for them. Launches run one at a time.
 */
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "kernel_emulation.h"

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

int g_shared_budget = ax::kSharedMemoryBudget;
std::atomic<long> g_launches{0};
std::atomic<bool> g_launching{false};

}  // namespace

void kernel_emulation::setSharedBudget(int bytes) { g_shared_budget = bytes; }
int kernel_emulation::sharedBudget() { return g_shared_budget; }
long kernel_emulation::launches() { return g_launches.load(); }
bool kernel_emulation::launching() { return g_launching.load(); }

/* The emulated launch behind axial_attention_enqueue (axialAttentionApi.cpp is linked in): the
 * whole C ABI path runs, argument checks included. The plan is recomputed with the budget given
 * on the command line. */
int axial_attention::launchAxialAttention(const AxialAttentionParams& params, const Plan& plan,
                                          const void* qkv, const AxialAttentionTables& tables,
                                          void* y, void* stream) {
    (void)stream;
    ++g_launches;
    Plan emulated = plan;
    if (makePlan(params, &emulated, g_shared_budget) != AXIAL_ATTENTION_SUCCESS) return 1;
    const KernelArgs args = kernelArgs(params, emulated, qkv, tables, y);
    g_launching = true;
    if (params.dtype == AXIAL_ATTENTION_FLOAT16)
        runTyped<__half>(args, emulated, params.batch);
    else
        runTyped<float>(args, emulated, params.batch);
    g_launching = false;
    return 0;
}

