// The CUDA runtime calls of the plugin glue on host memory, for a plugin library built without
// nvcc (tests/test_plugin_loading.py: registry and parser tests that never launch a kernel).
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>

extern "C" {
cudaError_t cudaMalloc(void** devPtr, size_t size) {
    *devPtr = std::malloc(size > 0 ? size : 1);
    return *devPtr != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* devPtr) {
    std::free(devPtr);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, void const* src, size_t count, cudaMemcpyKind) {
    if (count > 0) std::memcpy(dst, src, count);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, void const* src, size_t count, cudaMemcpyKind, cudaStream_t) {
    if (count > 0) std::memcpy(dst, src, count);
    return cudaSuccess;
}
char const* cudaGetErrorString(cudaError_t error) {
    return error == cudaSuccess ? "no error" : "emulated CUDA error";
}
}
