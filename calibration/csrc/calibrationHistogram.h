/*
 * C ABI of the native calibration helpers (calibration/ranges.py loads it through ctypes from
 * build/lib/libaxial_calibration.so, built by the root CMake without CUDA). Without the library
 * ranges.py computes the same numbers with numpy, only slower.
 */
#ifndef AXIAL_CALIBRATION_HISTOGRAM_H
#define AXIAL_CALIBRATION_HISTOGRAM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define AXIAL_CALIBRATION_API __declspec(dllexport)
#else
#define AXIAL_CALIBRATION_API __attribute__((visibility("default")))
#endif

#define AXIAL_CALIBRATION_ABI_VERSION 1

/* Adds to counts[bins] the histogram of |x| over the non-zero, non-NaN elements of x[count]
 * whose magnitude lies in [0, top], with the bin edges edges[bins + 1] (increasing float32) and
 * numpy.histogram's rule: bin k holds edges[k] <= |x| < edges[k + 1], the last bin also its
 * right edge. With edges = numpy.linspace(0, top, bins + 1, dtype=float32) the counts equal
 * numpy.histogram(|x[x != 0]|, bins, range=(0, top)) exactly. `threads` <= 0: one per hardware
 * thread. Returns 0, or 1 for a NULL pointer or bins < 1, or 2 when out of memory. */
AXIAL_CALIBRATION_API int32_t axial_calibration_abs_histogram(const float* x, int64_t count,
                                                              double top, const float* edges,
                                                              int32_t bins, int64_t* counts,
                                                              int32_t threads);

AXIAL_CALIBRATION_API int32_t axial_calibration_abi_version(void);

#ifdef __cplusplus
}
#endif

#endif /* AXIAL_CALIBRATION_HISTOGRAM_H */
