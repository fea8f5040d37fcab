/*
 * C ABI of the fused AxialAttention CUDA kernel (operator contract:
 * AxialAttention_PluginConfig.yaml beside this file). Plain C so that the TensorRT plugin
 * glue, the ctypes binding (axial_deploy/kernel.py) and the torch custom op all call the
 * same entry points. Every pointer passed to axial_attention_enqueue is a device pointer.
 */
#ifndef AXIAL_ATTENTION_KERNEL_H
#define AXIAL_ATTENTION_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define AXIAL_ATTENTION_API __declspec(dllexport)
#else
#define AXIAL_ATTENTION_API __attribute__((visibility("default")))
#endif

/* Bumped whenever a struct below or a function signature changes. */
#define AXIAL_ATTENTION_ABI_VERSION 1

typedef enum AxialAttentionStatus {
    AXIAL_ATTENTION_SUCCESS = 0,
    AXIAL_ATTENTION_ERROR_NULL_POINTER = 1,   /* a required pointer is NULL */
    AXIAL_ATTENTION_ERROR_BAD_DTYPE = 2,      /* dtype is not FLOAT32 or FLOAT16 */
    AXIAL_ATTENTION_ERROR_BAD_AXIS = 3,       /* axis is not 2 (H) or 3 (W) */
    AXIAL_ATTENTION_ERROR_BAD_SHAPE = 4,      /* batch/height/width/heads/depths not positive,
                                                 or the tensor exceeds the index range */
    AXIAL_ATTENTION_ERROR_BAD_SPAN = 5,       /* span is negative or even (0 = global) */
    AXIAL_ATTENTION_ERROR_BAD_TABLE = 6,      /* table_length is not positive and odd */
    AXIAL_ATTENTION_ERROR_UNSUPPORTED = 7,    /* valid but outside what the kernel implements */
    AXIAL_ATTENTION_ERROR_WORKSPACE = 8,      /* workspace smaller than axial_attention_workspace_size */
    AXIAL_ATTENTION_ERROR_CUDA = 9            /* a CUDA call failed (no device, launch error) */
} AxialAttentionStatus;

typedef enum AxialAttentionDataType {
    AXIAL_ATTENTION_FLOAT32 = 0,
    AXIAL_ATTENTION_FLOAT16 = 1
} AxialAttentionDataType;

/* Shapes and attributes. qkv is [batch, num_heads * (2 * key_depth + value_depth), height, width]
 * and y is [batch, num_heads * value_depth, height, width], both linear NCHW of `dtype`. */
typedef struct AxialAttentionParams {
    int32_t batch;
    int32_t height;
    int32_t width;
    int32_t axis;          /* 2 = attend along height, 3 = along width */
    int32_t num_heads;     /* G */
    int32_t key_depth;     /* Dq */
    int32_t value_depth;   /* Dv */
    int32_t span;          /* 0 = global, odd m >= 1 = |key - query| <= (m - 1) / 2 */
    int32_t table_length;  /* T, odd */
    int32_t dtype;         /* AxialAttentionDataType of qkv and y */
} AxialAttentionParams;

/* Device pointers to the float32 constant tables (shapes as in the spec). */
typedef struct AxialAttentionTables {
    const float* rel_q;        /* [G, Dq, T] */
    const float* rel_k;        /* [G, Dq, T] */
    const float* rel_v;        /* [G, Dv, T] */
    const float* logit_scale;  /* [G] */
    const float* out_bias;     /* [G * Dv] */
} AxialAttentionTables;

/* Checks params without touching the GPU. */
AXIAL_ATTENTION_API AxialAttentionStatus axial_attention_check(const AxialAttentionParams* params);

/* Bytes of device scratch memory axial_attention_enqueue needs (0 if none); 0 for bad params. */
AXIAL_ATTENTION_API size_t axial_attention_workspace_size(const AxialAttentionParams* params);

/* Launches the kernel(s) on `stream` (a cudaStream_t; NULL = legacy default stream).
 * Asynchronous: returns after the launch; errors of the launch itself come back as
 * AXIAL_ATTENTION_ERROR_CUDA. Arguments are validated before anything is launched. */
AXIAL_ATTENTION_API AxialAttentionStatus axial_attention_enqueue(
    const AxialAttentionParams* params, const void* qkv, const AxialAttentionTables* tables,
    void* y, void* workspace, size_t workspace_bytes, void* stream);

/* A static, human-readable description of a status ("bad axis: must be 2 or 3", ...). */
AXIAL_ATTENTION_API const char* axial_attention_status_string(AxialAttentionStatus status);

/* AXIAL_ATTENTION_ABI_VERSION of the built library, to catch a stale binary. */
AXIAL_ATTENTION_API int32_t axial_attention_abi_version(void);

#ifdef __cplusplus
}
#endif

#endif /* AXIAL_ATTENTION_KERNEL_H */
