/*
 * Messages for the AxialAttentionStatus codes that mean the same in every implementation of the
 * C ABI (the CUDA kernel's axialAttentionApi.cpp and the CPU op's axialAttentionCpu.cpp); each
 * implementation words the codes whose meaning is its own (shape limits, unsupported, workspace,
 * CUDA) and falls back to this for the rest. Header only, no CUDA: the CPU op includes it too.
 */
#ifndef AXIAL_ATTENTION_STATUS_H
#define AXIAL_ATTENTION_STATUS_H

#include "axialAttentionKernel.h"

namespace axial_attention {

/* The shared message of `status`, or nullptr where the implementation must word it. */
inline const char* sharedStatusString(AxialAttentionStatus status) {
    switch (status) {
        case AXIAL_ATTENTION_SUCCESS:
            return "success";
        case AXIAL_ATTENTION_ERROR_NULL_POINTER:
            return "null pointer: params, qkv, y, tables and every table must be non-NULL";
        case AXIAL_ATTENTION_ERROR_BAD_DTYPE:
            return "bad dtype: must be AXIAL_ATTENTION_FLOAT32 (0) or AXIAL_ATTENTION_FLOAT16 (1)";
        case AXIAL_ATTENTION_ERROR_BAD_AXIS:
            return "bad axis: must be 2 (height) or 3 (width)";
        case AXIAL_ATTENTION_ERROR_BAD_SPAN:
            return "bad span: must be 0 (global) or a positive odd number";
        case AXIAL_ATTENTION_ERROR_BAD_TABLE:
            return "bad table_length: must be a positive odd number";
        default:
            return nullptr;
    }
}

}  // namespace axial_attention

#endif  // AXIAL_ATTENTION_STATUS_H
