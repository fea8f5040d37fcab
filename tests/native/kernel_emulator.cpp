/*
 * Standalone CPU run of the fused AxialAttention kernel through its C ABI (axialAttentionApi.cpp)
 * and the emulated launch (kernel_emulation.cpp, which explains what the emulation checks).
 *
 * Usage: kernel_emulator INPUT OUTPUT [SHARED_BUDGET_BYTES]
 *   INPUT: 10 int32 (AxialAttentionParams in order), then float32 qkv, rel_q, rel_k, rel_v,
 *   logit_scale, out_bias. OUTPUT: float32 y. Prints the launch plan as one JSON line.
 * Built by tests/test_kernel_emulation.py:  g++ -std=c++20 -O2 -pthread -I plugins/axial_attention
 *   tests/native/kernel_emulator.cpp tests/native/kernel_emulation.cpp
 *   plugins/axial_attention/axialAttentionApi.cpp
 */
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>

#include "axialAttentionCommon.h"
#include "kernel_emulation.h"

namespace ax = axial_attention;

namespace {

std::vector<float> readFloats(std::ifstream& in, size_t count) {
    std::vector<float> values(count);
    in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(count * 4));
    return values;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s INPUT OUTPUT [SHARED_BUDGET_BYTES]\n", argv[0]);
        return 2;
    }
    kernel_emulation::setSharedBudget(argc > 3 ? std::atoi(argv[3]) : ax::kSharedMemoryBudget);
    std::ifstream in(argv[1], std::ios::binary);
    AxialAttentionParams p{};
    in.read(reinterpret_cast<char*>(&p), sizeof(p));
    ax::Plan plan{};
    AxialAttentionStatus status = axial_attention_check(&p);
    if (status == AXIAL_ATTENTION_SUCCESS) status = ax::makePlan(p, &plan, kernel_emulation::sharedBudget());
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
    std::vector<_Float16> qkv16(qkv.begin(), qkv.end());
    std::vector<_Float16> y16(out_count, static_cast<_Float16>(NAN));  // poisoned
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
