/*
 * Histograms of activation magnitudes for INT8 calibration (C ABI: calibrationHistogram.h), one
 * pass over the data instead of numpy's five (mask, compress, abs, bin, count). The bin of a value
 * is computed the way numpy.histogram does for uniform bins: an estimate from the value divided by
 * the range, then corrected against the float32 edges, so both give identical counts.
 */
#include "calibrationHistogram.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

namespace {

constexpr int64_t kMinPerThread = 1 << 20;  // smaller inputs are binned on the calling thread

constexpr int kLanes = 4;  // interleaved sub-histograms (see binRange)

/* Adds the histogram of x[begin, end) to counts[bins]. Consecutive elements count into kLanes
 * separate sub-histograms: runs of equal bins (the zeros of a ReLU output, all "counted" as 0
 * into bin 0) would otherwise chain every increment on the previous one through memory. */
void binRange(const float* x, int64_t begin, int64_t end, double top, const float* edges,
              int32_t bins, int64_t* counts) {
    const float top32 = static_cast<float>(top);
    const double scale = bins / top;
    std::vector<int64_t> lanes(static_cast<size_t>(kLanes) * bins, 0);
    for (int64_t i = begin; i < end; ++i) {
        const float magnitude = std::fabs(x[i]);
        // Exact zeros are left out (see collect_ranges); NaN and values beyond top fail the test.
        // Branch-free: half of a ReLU output is zero, a branch on it would be mispredicted.
        const bool valid = magnitude > 0.0f && magnitude <= top32;
        const float kept = valid ? magnitude : 0.0f;
        // An estimate within one bin of the answer (numpy divides, then multiplies: the edge
        // comparisons below give both the same bin), then numpy's correction against the edges.
        int64_t index = static_cast<int64_t>(static_cast<double>(kept) * scale);
        index = index < bins ? index : bins - 1;
        index -= kept < edges[index];
        index += (index != bins - 1) & (kept >= edges[index + 1]);
        lanes[static_cast<size_t>((i & (kLanes - 1)) * bins + index)] += valid;
    }
    for (int lane = 0; lane < kLanes; ++lane)
        for (int32_t b = 0; b < bins; ++b) counts[b] += lanes[static_cast<size_t>(lane * bins + b)];
}

}  // namespace

extern "C" {

int32_t axial_calibration_abs_histogram(const float* x, int64_t count, double top,
                                        const float* edges, int32_t bins, int64_t* counts,
                                        int32_t threads) {
    if (x == nullptr || edges == nullptr || counts == nullptr || bins < 1 || count < 0) return 1;
    if (!(top > 0.0)) return 0;  // nothing can land in an empty range
    try {
        int64_t workers = threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
        workers = std::max<int64_t>(1, std::min(workers, count / kMinPerThread));
        if (workers == 1) {
            binRange(x, 0, count, top, edges, bins, counts);
            return 0;
        }
        // Per-thread counts, added in worker order: integer sums, identical for any thread count.
        std::vector<std::vector<int64_t>> partial(static_cast<size_t>(workers),
                                                  std::vector<int64_t>(static_cast<size_t>(bins), 0));
        std::vector<std::thread> pool;
        for (int64_t w = 1; w < workers; ++w)
            pool.emplace_back(binRange, x, count * w / workers, count * (w + 1) / workers, top,
                              edges, bins, partial[static_cast<size_t>(w)].data());
        binRange(x, 0, count / workers, top, edges, bins, partial[0].data());
        for (std::thread& thread : pool) thread.join();
        for (const std::vector<int64_t>& local : partial)
            for (int32_t b = 0; b < bins; ++b) counts[b] += local[static_cast<size_t>(b)];
        return 0;
    } catch (...) {
        return 2;
    }
}

int32_t axial_calibration_abi_version(void) { return AXIAL_CALIBRATION_ABI_VERSION; }

}  // extern "C"
