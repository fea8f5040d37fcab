/*
 * The CPU emulation of the fused AxialAttention kernel (kernel_emulation.cpp) as a drop-in for the
 * CUDA launch: kernel_emulation.cpp defines axial_attention::launchAxialAttention, so linking it
 * with axialAttentionApi.cpp gives the whole C ABI (checks, plan, launch) on the host. Used by the
 * standalone emulator (kernel_emulator.cpp) and by the TensorRT plugin harness
 * (plugin_harness.cpp), whose "device" pointers are host pointers.
 * Kept free of CUDA headers so that it can be included next to cuda_runtime_api.h.
 */
#ifndef AXIAL_ATTENTION_KERNEL_EMULATION_H
#define AXIAL_ATTENTION_KERNEL_EMULATION_H

namespace kernel_emulation {

/* Shared memory per block the emulated launch plans with (default: the real 48 KiB); lowered by
 * the emulator tests to drive the chunked paths with small shapes. */
void setSharedBudget(int bytes);
int sharedBudget();

/* Emulated kernel launches so far (one per axial_attention_enqueue that reached the launch). */
long launches();

/* Whether an emulated launch is running: its worker threads and barriers are the emulation's
 * own heap use, which the plugin harness leaves out of the plugin's allocation count. */
bool launching();

}  // namespace kernel_emulation

#endif
