/*
 * C ABI of the native CPU AxialAttention op (operator contract: AxialAttention_PluginConfig.yaml
 * beside this file). Same structs, status codes and style as the CUDA kernel's C ABI
 * (axialAttentionKernel.h); every pointer here is a host pointer. Built by the root CMake into
 * build/lib/libaxial_attention_cpu.so (no CUDA needed) and called through ctypes by ONNX
 * Runtime's custom op (axial_deploy/ort_ops.py).
 *
 * The computation runs one line (n, head, position on the other axis) at a time, one query at a
 * time: the logits of a query are one row of at most 2 * radius + 1 floats (a row-wise softmax),
 * so memory stays O(threads * line length) and no L x L logits matrix ever exists. Every output
 * element is computed by one thread in a fixed order: results do not depend on the thread count.
 */
#ifndef AXIAL_ATTENTION_CPU_H
#define AXIAL_ATTENTION_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "axialAttentionKernel.h" /* AxialAttentionParams, AxialAttentionTables, status codes */

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a signature below changes (the structs are versioned by
 * AXIAL_ATTENTION_ABI_VERSION, which this library also reports). */
#define AXIAL_ATTENTION_CPU_ABI_VERSION 1

/* Checks params (dtype, axis, shape, span, table length). No depth limits on the CPU. */
AXIAL_ATTENTION_API AxialAttentionStatus
axial_attention_cpu_check(const AxialAttentionParams* params);

/* Computes y from qkv and the float32 tables, synchronously, on `threads` threads (<= 0: one per
 * hardware thread; never more than there are lines of work). Returns
 * AXIAL_ATTENTION_ERROR_UNSUPPORTED when the per-thread scratch cannot be allocated. */
AXIAL_ATTENTION_API AxialAttentionStatus axial_attention_cpu_run(
    const AxialAttentionParams* params, const void* qkv, const AxialAttentionTables* tables,
    void* y, int32_t threads);

/* A static, human-readable description of a status, in the CPU library's terms. */
AXIAL_ATTENTION_API const char* axial_attention_cpu_status_string(AxialAttentionStatus status);

/* AXIAL_ATTENTION_CPU_ABI_VERSION * 1000 + AXIAL_ATTENTION_ABI_VERSION of the built library. */
AXIAL_ATTENTION_API int32_t axial_attention_cpu_abi_version(void);

#ifdef __cplusplus
}
#endif

#endif /* AXIAL_ATTENTION_CPU_H */
