/*
 * The native CPU AxialAttention op (C ABI: axialAttentionCpu.h). Plain C++17 and std::thread, no
 * CUDA: it builds on every machine with a C++ compiler.
 *
 * Layout of the work: one item = one line (image n, head g, position on the other axis). A thread
 * copies the line's q, k and v into channel-major scratch rows ([channel][position], float32,
 * converted from float16 when needed), then for each query i:
 *
 *   logits[j] = sum_c (s q[c,i]) k[c,j] + q[c,i] rq[c, d] + k[c,j] rk[c, d],   d = j - i
 *   w = softmax(logits) over the window;  y[c,i] = sum_j w[j] (v[c,j] + rv[c, d]) + bias[c]
 *
 * The tables are re-indexed once per call by offset d in [-radius, radius] (the clamp of t(d)
 * applied there), so every inner loop runs over consecutive keys with unit stride: the compiler
 * vectorizes them (no gathers, no branches). Only one query's logits row exists at a time.
 */
#include "axialAttentionCpu.h"
#include "axialAttentionStatus.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <new>
#include <thread>
#include <vector>

namespace {

constexpr int64_t kElementLimit = 1LL << 62;
/* Below this many multiply-adds a call runs on the calling thread only (thread start-up costs
 * more than the work). */
constexpr int64_t kMinWorkPerThread = 1LL << 22;

int64_t checkedProduct(int64_t a, int64_t b) {
    if (a != 0 && b > kElementLimit / a) return -1;
    return a * b;
}

/* IEEE 754 binary16 <-> binary32, round to nearest even (as numpy, torch and ONNX Runtime). */
float halfToFloat(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0) {
        const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // 0 or subnormal
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31)
        bits = sign | 0x7f800000u | (mantissa << 13);  // inf, nan
    else
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

uint16_t floatToHalf(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
    const uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // nan
    if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf
    if (magnitude < 0x38800000u) {
        /* Below 2^-14: a multiple of 2^-24 (subnormal, or 0x400 = the smallest normal). The
         * scaling is exact; nearbyint rounds half to even in the default rounding mode. */
        float positive;
        std::memcpy(&positive, &magnitude, sizeof positive);
        return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(positive * 16777216.0f)));
    }
    uint32_t half = ((((magnitude >> 23) - 112u) << 10) | ((magnitude >> 13) & 0x3ffu));
    const uint32_t rest = magnitude & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // carries into the exponent
    return static_cast<uint16_t>(sign | half);
}

/* Everything one call needs, shared read-only by its threads. */
struct Problem {
    AxialAttentionParams p;
    const void* qkv;
    void* y;
    const float* logit_scale;
    const float* out_bias;
    int64_t length;   /* L */
    int64_t lines;    /* positions on the other axis */
    int64_t radius;   /* max |key - query|, clipped to L - 1 */
    int64_t window;   /* 2 * radius + 1: columns of the re-indexed tables */
    int64_t plane;    /* H * W */
    int64_t in_channels;
    int64_t out_channels;
    std::vector<float> rq, rk, rv;  /* [G * D][window]: table column t(d) at index d + radius */
};

/* Offset of position j of line `line` inside one H x W plane. */
inline int64_t position(const Problem& pb, int64_t line, int64_t j) {
    return pb.p.axis == 3 ? line * pb.p.width + j : j * pb.p.width + line;
}

void reindexTable(const float* table, int64_t rows, int64_t table_length, int64_t radius,
                  std::vector<float>* out) {
    const int64_t window = 2 * radius + 1;
    const int64_t half = (table_length - 1) / 2;
    out->resize(static_cast<size_t>(rows * window));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t d = -radius; d <= radius; ++d) {
            const int64_t t = std::min(std::max(d + half, int64_t{0}), table_length - 1);
            (*out)[static_cast<size_t>(r * window + d + radius)] = table[r * table_length + t];
        }
}

/* Copies `count` channels starting at `channel` of line `line` of image n into rows[c][j]. */
void loadLine(const Problem& pb, int64_t n, int64_t channel, int64_t count, int64_t line,
              float* rows) {
    const int64_t L = pb.length;
    for (int64_t c = 0; c < count; ++c) {
        const int64_t base = (n * pb.in_channels + channel + c) * pb.plane;
        float* row = rows + c * L;
        if (pb.p.dtype == AXIAL_ATTENTION_FLOAT32) {
            const float* src = static_cast<const float*>(pb.qkv) + base;
            if (pb.p.axis == 3) {
                std::memcpy(row, src + line * pb.p.width, static_cast<size_t>(L) * sizeof(float));
            } else {
                for (int64_t j = 0; j < L; ++j) row[j] = src[j * pb.p.width + line];
            }
        } else {
            const uint16_t* src = static_cast<const uint16_t*>(pb.qkv) + base;
            for (int64_t j = 0; j < L; ++j) row[j] = halfToFloat(src[position(pb, line, j)]);
        }
    }
}

void storeLine(const Problem& pb, int64_t n, int64_t channel, int64_t count, int64_t line,
               const float* rows) {
    const int64_t L = pb.length;
    for (int64_t c = 0; c < count; ++c) {
        const int64_t base = (n * pb.out_channels + channel + c) * pb.plane;
        const float* row = rows + c * L;
        if (pb.p.dtype == AXIAL_ATTENTION_FLOAT32) {
            float* dst = static_cast<float*>(pb.y) + base;
            if (pb.p.axis == 3) {
                std::memcpy(dst + line * pb.p.width, row, static_cast<size_t>(L) * sizeof(float));
            } else {
                for (int64_t j = 0; j < L; ++j) dst[j * pb.p.width + line] = row[j];
            }
        } else {
            uint16_t* dst = static_cast<uint16_t*>(pb.y) + base;
            for (int64_t j = 0; j < L; ++j) dst[position(pb, line, j)] = floatToHalf(row[j]);
        }
    }
}

/* exp(x) for x <= 0 (softmax logits minus their maximum) as plain arithmetic, so that the loop
 * over a row vectorizes (std::exp is a library call per element): x = n ln2 + r with |r| <=
 * ln2 / 2, exp(r) by its degree-6 Taylor polynomial (relative error < 2e-7 on that interval),
 * 2^n through the exponent bits. Below -87 (exp < 1.7e-38, nothing next to the row's maximum
 * term exp(0) = 1) it returns 0. */
inline float expNonPositive(float x) {
    const float clamped = x < -87.0f ? -87.0f : x;
    const float n = std::nearbyint(clamped * 1.44269504088896341f);
    const float r = (clamped - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

/* sum_j w[j] * (a[j] + b[j]) with 8 independent partial sums (vectorizable without -ffast-math,
 * fixed order: the same result on every run). */
inline float weightedSum(const float* w, const float* a, const float* b, int64_t count) {
    float partial[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    int64_t j = 0;
    for (; j + 8 <= count; j += 8)
        for (int u = 0; u < 8; ++u) partial[u] += w[j + u] * (a[j + u] + b[j + u]);
    float total = 0.f;
    for (; j < count; ++j) total += w[j] * (a[j] + b[j]);
    return total + ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
           ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

/* Scratch of one thread: q, k, v and y rows of one line, and one logits row. */
struct Scratch {
    std::vector<float> q, k, v, y, logits;
    explicit Scratch(const Problem& pb) {
        const size_t L = static_cast<size_t>(pb.length);
        q.resize(static_cast<size_t>(pb.p.key_depth) * L);
        k.resize(static_cast<size_t>(pb.p.key_depth) * L);
        v.resize(static_cast<size_t>(pb.p.value_depth) * L);
        y.resize(static_cast<size_t>(pb.p.value_depth) * L);
        logits.resize(static_cast<size_t>(pb.window));
    }
};

void attendLine(const Problem& pb, Scratch& s, int64_t n, int64_t g, int64_t line) {
    const int64_t G = pb.p.num_heads, Dq = pb.p.key_depth, Dv = pb.p.value_depth;
    const int64_t L = pb.length, radius = pb.radius, window = pb.window;
    loadLine(pb, n, g * Dq, Dq, line, s.q.data());
    loadLine(pb, n, G * Dq + g * Dq, Dq, line, s.k.data());
    loadLine(pb, n, 2 * G * Dq + g * Dv, Dv, line, s.v.data());
    const float scale = pb.logit_scale[g];
    const float* rq = pb.rq.data() + g * Dq * window;
    const float* rk = pb.rk.data() + g * Dq * window;
    const float* rv = pb.rv.data() + g * Dv * window;
    const float* bias = pb.out_bias + g * Dv;
    float* logits = s.logits.data();
    for (int64_t i = 0; i < L; ++i) {
        const int64_t lo = std::max(i - radius, int64_t{0});
        const int64_t hi = std::min(i + radius, L - 1);
        const int64_t keys = hi - lo + 1;
        const int64_t column = lo - i + radius;  // re-indexed table column of key lo
        std::fill(logits, logits + keys, 0.f);
        for (int64_t c = 0; c < Dq; ++c) {
            const float qi = s.q[static_cast<size_t>(c * L + i)];
            const float scaled = scale * qi;
            const float* kr = s.k.data() + c * L + lo;
            const float* rqr = rq + c * window + column;
            const float* rkr = rk + c * window + column;
            for (int64_t j = 0; j < keys; ++j)
                logits[j] += scaled * kr[j] + qi * rqr[j] + kr[j] * rkr[j];
        }
        float top = logits[0];
        for (int64_t j = 1; j < keys; ++j) top = logits[j] > top ? logits[j] : top;
        for (int64_t j = 0; j < keys; ++j) logits[j] = expNonPositive(logits[j] - top);
        float partial[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        int64_t j = 0;
        for (; j + 8 <= keys; j += 8)
            for (int u = 0; u < 8; ++u) partial[u] += logits[j + u];
        float total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
                      ((partial[4] + partial[5]) + (partial[6] + partial[7]));
        for (; j < keys; ++j) total += logits[j];
        const float inverse = 1.f / total;
        for (int64_t c = 0; c < Dv; ++c) {
            const float sum = weightedSum(logits, s.v.data() + c * L + lo, rv + c * window + column, keys);
            s.y[static_cast<size_t>(c * L + i)] = sum * inverse + bias[c];
        }
    }
    storeLine(pb, n, g * Dv, Dv, line, s.y.data());
}

AxialAttentionStatus checkParams(const AxialAttentionParams* params) {
    if (params == nullptr) return AXIAL_ATTENTION_ERROR_NULL_POINTER;
    const AxialAttentionParams& p = *params;
    if (p.dtype != AXIAL_ATTENTION_FLOAT32 && p.dtype != AXIAL_ATTENTION_FLOAT16)
        return AXIAL_ATTENTION_ERROR_BAD_DTYPE;
    if (p.axis != 2 && p.axis != 3) return AXIAL_ATTENTION_ERROR_BAD_AXIS;
    if (p.batch < 1 || p.height < 1 || p.width < 1 || p.num_heads < 1 || p.key_depth < 1 ||
        p.value_depth < 1)
        return AXIAL_ATTENTION_ERROR_BAD_SHAPE;
    const int64_t per_head = 2LL * p.key_depth + p.value_depth;
    int64_t elements = checkedProduct(per_head, p.num_heads);
    if (elements >= 0) elements = checkedProduct(elements, static_cast<int64_t>(p.height) * p.width);
    if (elements >= 0) elements = checkedProduct(elements, p.batch);
    if (elements < 0) return AXIAL_ATTENTION_ERROR_BAD_SHAPE;
    if (p.span < 0 || (p.span > 0 && p.span % 2 == 0)) return AXIAL_ATTENTION_ERROR_BAD_SPAN;
    if (p.table_length < 1 || p.table_length % 2 == 0) return AXIAL_ATTENTION_ERROR_BAD_TABLE;
    return AXIAL_ATTENTION_SUCCESS;
}

}  // namespace

extern "C" {

AxialAttentionStatus axial_attention_cpu_check(const AxialAttentionParams* params) {
    return checkParams(params);
}

AxialAttentionStatus axial_attention_cpu_run(const AxialAttentionParams* params, const void* qkv,
                                             const AxialAttentionTables* tables, void* y,
                                             int32_t threads) {
    const AxialAttentionStatus status = checkParams(params);
    if (status != AXIAL_ATTENTION_SUCCESS) return status;
    if (qkv == nullptr || y == nullptr || tables == nullptr || tables->rel_q == nullptr ||
        tables->rel_k == nullptr || tables->rel_v == nullptr || tables->logit_scale == nullptr ||
        tables->out_bias == nullptr)
        return AXIAL_ATTENTION_ERROR_NULL_POINTER;
    try {
        Problem pb;
        pb.p = *params;
        pb.qkv = qkv;
        pb.y = y;
        pb.logit_scale = tables->logit_scale;
        pb.out_bias = tables->out_bias;
        const AxialAttentionParams& p = pb.p;
        pb.length = p.axis == 3 ? p.width : p.height;
        pb.lines = p.axis == 3 ? p.height : p.width;
        const int64_t reach = p.span == 0 ? pb.length - 1 : (p.span - 1) / 2;
        pb.radius = std::min<int64_t>(reach, pb.length - 1);
        pb.window = 2 * pb.radius + 1;
        pb.plane = static_cast<int64_t>(p.height) * p.width;
        pb.in_channels = static_cast<int64_t>(p.num_heads) * (2 * p.key_depth + p.value_depth);
        pb.out_channels = static_cast<int64_t>(p.num_heads) * p.value_depth;
        const int64_t G = p.num_heads;
        reindexTable(tables->rel_q, G * p.key_depth, p.table_length, pb.radius, &pb.rq);
        reindexTable(tables->rel_k, G * p.key_depth, p.table_length, pb.radius, &pb.rk);
        reindexTable(tables->rel_v, G * p.value_depth, p.table_length, pb.radius, &pb.rv);

        /* Items in (n, g, line) order, line fastest: a thread's consecutive lines share cache
         * lines of qkv when the attended axis is the strided one (axis 2). */
        const int64_t items = static_cast<int64_t>(p.batch) * G * pb.lines;
        const int64_t work = items * pb.length * pb.window * (2 * p.key_depth + p.value_depth);
        int64_t count = threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
        count = std::min({count, items, std::max<int64_t>(1, work / kMinWorkPerThread)});

        std::atomic<bool> failed{false};
        auto body = [&](int64_t worker) {
            try {
                Scratch scratch(pb);
                const int64_t begin = items * worker / count, end = items * (worker + 1) / count;
                for (int64_t item = begin; item < end; ++item) {
                    const int64_t line = item % pb.lines;
                    const int64_t g = (item / pb.lines) % G;
                    const int64_t n = item / (pb.lines * G);
                    attendLine(pb, scratch, n, g, line);
                }
            } catch (...) {  // bad_alloc of the scratch: reported, never thrown across the ABI
                failed = true;
            }
        };
        std::vector<std::thread> pool;
        pool.reserve(static_cast<size_t>(count - 1));
        for (int64_t worker = 1; worker < count; ++worker) pool.emplace_back(body, worker);
        body(0);
        for (std::thread& thread : pool) thread.join();
        return failed ? AXIAL_ATTENTION_ERROR_UNSUPPORTED : AXIAL_ATTENTION_SUCCESS;
    } catch (...) {
        return AXIAL_ATTENTION_ERROR_UNSUPPORTED;
    }
}

const char* axial_attention_cpu_status_string(AxialAttentionStatus status) {
    if (const char* shared = axial_attention::sharedStatusString(status)) return shared;
    switch (status) {
        case AXIAL_ATTENTION_ERROR_BAD_SHAPE:
            return "bad shape: batch, height, width, num_heads, key_depth and value_depth must be "
                   ">= 1 and the tensors within 2^62 elements";
        case AXIAL_ATTENTION_ERROR_UNSUPPORTED:
            return "out of memory: the CPU op could not allocate its per-thread scratch or tables";
        case AXIAL_ATTENTION_ERROR_WORKSPACE:
        case AXIAL_ATTENTION_ERROR_CUDA:
            return "not returned by the CPU op";
        default:
            return "unknown status";
    }
}

int32_t axial_attention_cpu_abi_version(void) {
    return AXIAL_ATTENTION_CPU_ABI_VERSION * 1000 + AXIAL_ATTENTION_ABI_VERSION;
}

}  // extern "C"
