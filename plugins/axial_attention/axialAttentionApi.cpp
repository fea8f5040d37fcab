/*
 * The C ABI of axialAttentionKernel.h: argument checking (host only, no CUDA call, so it runs and
 * is tested on machines without a GPU) in front of the kernel launch.
 */
#include <stdint.h>

#include "axialAttentionCommon.h"
#include "axialAttentionKernel.h"
#include "axialAttentionStatus.h"

namespace {

constexpr int64_t kInt32Max = 2147483647LL;
constexpr int64_t kElementLimit = 1LL << 62;

/* a * b, or -1 when the product exceeds kElementLimit (a, b >= 0). */
int64_t checkedProduct(int64_t a, int64_t b) {
    if (a != 0 && b > kElementLimit / a) return -1;
    return a * b;
}

AxialAttentionStatus checkShape(const AxialAttentionParams& p) {
    if (p.batch < 1 || p.height < 1 || p.width < 1 || p.num_heads < 1 || p.key_depth < 1 ||
        p.value_depth < 1)
        return AXIAL_ATTENTION_ERROR_BAD_SHAPE;
    /* Offsets inside one H x W plane are 32-bit in the kernel. */
    const int64_t plane = static_cast<int64_t>(p.height) * p.width;
    if (plane > kInt32Max) return AXIAL_ATTENTION_ERROR_BAD_SHAPE;
    /* Channels and elements of qkv (the larger tensor) must fit 64-bit offsets. */
    const int64_t per_head = 2LL * p.key_depth + p.value_depth;
    int64_t elements = checkedProduct(per_head, p.num_heads);
    if (elements >= 0) elements = checkedProduct(elements, plane);
    if (elements >= 0) elements = checkedProduct(elements, p.batch);
    if (elements < 0) return AXIAL_ATTENTION_ERROR_BAD_SHAPE;
    return AXIAL_ATTENTION_SUCCESS;
}

}  // namespace

extern "C" {

AxialAttentionStatus axial_attention_check(const AxialAttentionParams* params) {
    if (params == nullptr) return AXIAL_ATTENTION_ERROR_NULL_POINTER;
    const AxialAttentionParams& p = *params;
    if (p.dtype != AXIAL_ATTENTION_FLOAT32 && p.dtype != AXIAL_ATTENTION_FLOAT16)
        return AXIAL_ATTENTION_ERROR_BAD_DTYPE;
    if (p.axis != 2 && p.axis != 3) return AXIAL_ATTENTION_ERROR_BAD_AXIS;
    const AxialAttentionStatus shape = checkShape(p);
    if (shape != AXIAL_ATTENTION_SUCCESS) return shape;
    if (p.span < 0 || (p.span > 0 && p.span % 2 == 0)) return AXIAL_ATTENTION_ERROR_BAD_SPAN;
    if (p.table_length < 1 || p.table_length % 2 == 0) return AXIAL_ATTENTION_ERROR_BAD_TABLE;
    /* The kernel computes key - query + (T - 1) / 2 and query + radius in 32 bits. */
    const int64_t length = p.axis == 3 ? p.width : p.height;
    if (2 * length + (p.table_length - 1) / 2 > kInt32Max) return AXIAL_ATTENTION_ERROR_BAD_SHAPE;
    axial_attention::Plan plan;
    return axial_attention::makePlan(p, &plan);
}

size_t axial_attention_workspace_size(const AxialAttentionParams* params) {
    /* The fused kernel keeps everything on chip: no scratch memory for valid params either. */
    (void)params;
    return 0;
}

AxialAttentionStatus axial_attention_enqueue(const AxialAttentionParams* params, const void* qkv,
                                             const AxialAttentionTables* tables, void* y,
                                             void* workspace, size_t workspace_bytes,
                                             void* stream) {
    const AxialAttentionStatus status = axial_attention_check(params);
    if (status != AXIAL_ATTENTION_SUCCESS) return status;
    if (qkv == nullptr || y == nullptr || tables == nullptr || tables->rel_q == nullptr ||
        tables->rel_k == nullptr || tables->rel_v == nullptr || tables->logit_scale == nullptr ||
        tables->out_bias == nullptr)
        return AXIAL_ATTENTION_ERROR_NULL_POINTER;
    const size_t needed = axial_attention_workspace_size(params);
    if (workspace_bytes < needed || (needed > 0 && workspace == nullptr))
        return AXIAL_ATTENTION_ERROR_WORKSPACE;
    axial_attention::Plan plan;
    axial_attention::makePlan(*params, &plan);  // succeeded inside axial_attention_check
    if (axial_attention::launchAxialAttention(*params, plan, qkv, *tables, y, stream) != 0)
        return AXIAL_ATTENTION_ERROR_CUDA;
    return AXIAL_ATTENTION_SUCCESS;
}

const char* axial_attention_status_string(AxialAttentionStatus status) {
    if (const char* shared = axial_attention::sharedStatusString(status)) return shared;
    switch (status) {
        case AXIAL_ATTENTION_ERROR_BAD_SHAPE:
            return "bad shape: batch, height, width, num_heads, key_depth and value_depth must be "
                   ">= 1, height * width <= 2^31 - 1 and the tensors within 2^62 elements";
        case AXIAL_ATTENTION_ERROR_UNSUPPORTED:
            return "unsupported: the kernel handles key_depth <= 64 and value_depth <= 128";
        case AXIAL_ATTENTION_ERROR_WORKSPACE:
            return "workspace too small: pass at least axial_attention_workspace_size() bytes";
        case AXIAL_ATTENTION_ERROR_CUDA:
            return "CUDA error: no usable device, or the kernel launch failed";
        default:
            return "unknown status";
    }
}

int32_t axial_attention_abi_version(void) { return AXIAL_ATTENTION_ABI_VERSION; }

}  // extern "C"
