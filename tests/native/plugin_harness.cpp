/*
 * CPU lifecycle harness of the AxialAttention TensorRT plugin.
 *
 * Compiled together with the REAL plugin sources (plugins/axial_attention/axialAttentionPlugin.cpp,
 * axialAttentionApi.cpp) against the public TensorRT headers of one version (10.3.0, 10.16, 11.1),
 * with the kernel's CPU emulation (kernel_emulation.cpp) standing in for the CUDA launch and the
 * few CUDA runtime calls the glue makes defined below on host memory. No libnvinfer, no libcudart,
 * no GPU. It provides the host objects TensorRT hands a plugin, true to the headers (the
 * expression builder and dimension expressions through the headers' apiv interfaces, tensor
 * descriptors, a resource context, a logger finder), and drives the plugin as TensorRT does.
 * Built with -fsanitize=address,undefined by tests/test_plugin_harness.py.
 *
 * Usage (all binary inputs little-endian; written by tests/test_plugin_harness.py):
 *   plugin_harness fields
 *       the creator's identity and field list as one JSON object
 *   plugin_harness create COLLECTIONS
 *       createPlugin (build and runtime phase) on every field collection in the file; one JSON
 *       line each: created or not, and what the plugin logged
 *   plugin_harness lifecycle FIELDS TENSOR OUTPUT
 *       the whole lifecycle on the first collection of FIELDS and the qkv of TENSOR; one JSON line
 *       per step ({"step", "ok", "detail", "log"}); y (float32) written to OUTPUT
 * File formats:
 *   COLLECTIONS: int32 count, then per collection int32 nbFields (INT32_MIN: pass no collection)
 *     and per field: int32 nameLength (-1: null name), name bytes, int32 PluginFieldType,
 *     int32 length, int32 dataBytes (-1: null data), data bytes.
 *   TENSOR: int32 dtype (0 float32, 1 float16), int32 N, C, H, W, float32 values (NCHW).
 * Exit status: 0 when the run completed (steps report their own failures), 2 on bad usage.
 */
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <new>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "axialAttentionPlugin.h"
#include "kernel_emulation.h"

// The plugin library's entry points (axialAttentionPlugin.cpp), as TensorRT looks them up.
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);
extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

// ---------------------------------------------------------------- heap allocations
// Global operator new is replaced for the whole binary (on malloc, so AddressSanitizer still
// tracks every block): while gHeapCounting is set, around the plugin's onShapeChange and enqueue,
// each allocation is counted. std::string / ostringstream formatting allocates through it, and so
// does the emulated cudaMalloc (its ledger is a std::set). The emulated kernel's own threads are
// left out (kernel_emulation::launching()): they stand in for the GPU, not for the plugin.
std::atomic<bool> gHeapCounting{false};
std::atomic<long> gHeapAllocations{0};

void* countedAllocation(std::size_t size) {
    if (gHeapCounting.load() && !kernel_emulation::launching()) ++gHeapAllocations;
    return std::malloc(size > 0 ? size : 1);
}

void* operator new(std::size_t size) {
    if (void* p = countedAllocation(size)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
    if (void* p = countedAllocation(size)) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t size, std::nothrow_t const&) noexcept { return countedAllocation(size); }
void* operator new[](std::size_t size, std::nothrow_t const&) noexcept { return countedAllocation(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::nothrow_t const&) noexcept { std::free(p); }
void operator delete[](void* p, std::nothrow_t const&) noexcept { std::free(p); }

namespace {

// Heap allocations made while `call` runs.
template <typename Call>
long heapAllocationsDuring(Call&& call) {
    long const before = gHeapAllocations.load();
    gHeapCounting = true;
    call();
    gHeapCounting = false;
    return gHeapAllocations.load() - before;
}

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::IDimensionExpr;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::TensorFormat;

// ---------------------------------------------------------------- emulated CUDA runtime state

// Allocations and copies the glue makes, by lifecycle phase: enqueue must make none.
struct CudaLedger {
    std::set<void*> live;
    long mallocs = 0;
    long frees = 0;
    long copies = 0;
    long badFrees = 0;
};
CudaLedger gCuda;

// ---------------------------------------------------------------- JSON

std::string quote(std::string const& s) {
    std::string out = "\"";
    for (char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\t': out += "\\t"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof(buf), "\\u%04x", c);
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
    return out + "\"";
}

// ---------------------------------------------------------------- logger

class Logger final : public nvinfer1::ILogger {
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
        char const* level = severity <= Severity::kERROR ? "E" : severity == Severity::kWARNING ? "W" : "I";
        messages.push_back(std::string(level) + ": " + (msg != nullptr ? msg : "(null)"));
    }
    std::vector<std::string> take() {
        std::vector<std::string> out;
        out.swap(messages);
        return out;
    }
    std::vector<std::string> messages;
};

class LoggerFinder final : public nvinfer1::ILoggerFinder {
public:
    explicit LoggerFinder(Logger* logger) : mLogger(logger) {}
    nvinfer1::ILogger* findLogger() noexcept override { return mLogger; }

private:
    Logger* mLogger;
};

Logger gLogger;
LoggerFinder gFinder(&gLogger);

// ---------------------------------------------------------------- dimension expressions

// A node of a symbolic integer expression: a constant, a named symbol (N, H, W) or an operation.
class DimImpl final : public nvinfer1::apiv::VDimensionExpr {
public:
    bool isConstant() const override { return kind == Kind::kCONSTANT; }
    int64_t getConstantValue() const override {
        return kind == Kind::kCONSTANT ? value : std::numeric_limits<int64_t>::min();
    }
    bool isSizeTensor() const override { return false; }

    enum class Kind { kCONSTANT, kSYMBOL, kOPERATION };
    Kind kind = Kind::kCONSTANT;
    int64_t value = 0;
    std::string symbol;
    nvinfer1::DimensionOperation op{};
    DimImpl const* lhs = nullptr;
    DimImpl const* rhs = nullptr;
};

// IDimensionExpr is what the plugin sees; its inline methods forward to mImpl (apiv), exactly as
// with TensorRT's own implementation.
class HostDim final : public IDimensionExpr {
public:
    HostDim() { mImpl = &impl; }
    ~HostDim() noexcept override = default;
    DimImpl impl;
};

DimImpl const& implOf(IDimensionExpr const& e) {
    auto const* host = dynamic_cast<HostDim const*>(&e);
    if (host == nullptr) {
        std::fprintf(stderr, "harness: an IDimensionExpr not made by the harness reached it\n");
        std::abort();
    }
    return host->impl;
}

int64_t evaluate(DimImpl const& e, std::map<std::string, int64_t> const& bindings) {
    using Op = nvinfer1::DimensionOperation;
    switch (e.kind) {
        case DimImpl::Kind::kCONSTANT: return e.value;
        case DimImpl::Kind::kSYMBOL: return bindings.at(e.symbol);
        case DimImpl::Kind::kOPERATION: break;
    }
    int64_t const a = evaluate(*e.lhs, bindings);
    int64_t const b = evaluate(*e.rhs, bindings);
    switch (e.op) {
        case Op::kSUM: return a + b;
        case Op::kPROD: return a * b;
        case Op::kMAX: return std::max(a, b);
        case Op::kMIN: return std::min(a, b);
        case Op::kSUB: return a - b;
        case Op::kEQUAL: return a == b ? 1 : 0;
        case Op::kLESS: return a < b ? 1 : 0;
        case Op::kFLOOR_DIV: return a / b - ((a % b != 0) && ((a < 0) != (b < 0)) ? 1 : 0);
        case Op::kCEIL_DIV: return -((-a) / b - (((-a) % b != 0) && (((-a) < 0) != (b < 0)) ? 1 : 0));
    }
    return std::numeric_limits<int64_t>::min();
}

std::string describe(DimImpl const& e) {
    switch (e.kind) {
        case DimImpl::Kind::kCONSTANT: return std::to_string(e.value);
        case DimImpl::Kind::kSYMBOL: return e.symbol;
        case DimImpl::Kind::kOPERATION: break;
    }
    return "op" + std::to_string(static_cast<int>(e.op)) + "(" + describe(*e.lhs) + "," + describe(*e.rhs) + ")";
}

class BuilderImpl final : public nvinfer1::apiv::VExprBuilder {
public:
    IDimensionExpr const* constant(int64_t value) override {
        HostDim* d = make();
        d->impl.kind = DimImpl::Kind::kCONSTANT;
        d->impl.value = value;
        return d;
    }
    IDimensionExpr const* operation(
        nvinfer1::DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override {
        DimImpl const& a = implOf(first);
        DimImpl const& b = implOf(second);
        HostDim* d = make();
        d->impl.kind = DimImpl::Kind::kOPERATION;
        d->impl.op = op;
        d->impl.lhs = &a;
        d->impl.rhs = &b;
        if (a.isConstant() && b.isConstant()) {  // TensorRT folds constants too
            int64_t const v = evaluate(d->impl, {});
            d->impl = DimImpl{};
            d->impl.value = v;
        }
        return d;
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override {
        ++sizeTensorCalls;  // AxialAttention has no size-tensor output: never expected
        return nullptr;
    }
    HostDim const* symbol(std::string const& name) {
        HostDim* d = make();
        d->impl.kind = DimImpl::Kind::kSYMBOL;
        d->impl.symbol = name;
        return d;
    }
    int sizeTensorCalls = 0;

private:
    HostDim* make() {
        owned.push_back(std::make_unique<HostDim>());
        return owned.back().get();
    }
    std::vector<std::unique_ptr<HostDim>> owned;
};

class HostExprBuilder final : public nvinfer1::IExprBuilder {
public:
    HostExprBuilder() { mImpl = &impl; }
    ~HostExprBuilder() noexcept override = default;
    BuilderImpl impl;
};

// ---------------------------------------------------------------- resource context

class ResourceContext final : public nvinfer1::IPluginResourceContext {
public:
    nvinfer1::IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
    nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
};

// ---------------------------------------------------------------- inputs

struct FieldData {
    bool nullName = false;
    std::string name;
    int32_t type = 0;
    int32_t length = 0;
    bool nullData = false;
    std::vector<unsigned char> data;
};

struct Collection {
    bool null = false;
    int32_t nbFields = 0;
    std::vector<FieldData> fields;
    std::vector<PluginField> view;  // points into `fields`
    PluginFieldCollection fc{};

    PluginFieldCollection const* get() {
        if (null) return nullptr;
        view.clear();
        for (auto const& f : fields) {
            view.emplace_back(f.nullName ? nullptr : f.name.c_str(), f.nullData ? nullptr : f.data.data(),
                static_cast<PluginFieldType>(f.type), f.length);
        }
        fc.nbFields = nbFields;
        fc.fields = view.empty() ? nullptr : view.data();
        return &fc;
    }
};

int32_t readI32(std::ifstream& in) {
    int32_t v = 0;
    in.read(reinterpret_cast<char*>(&v), sizeof(v));
    if (!in) throw std::runtime_error("input file too short");
    return v;
}

std::vector<Collection> readCollections(char const* path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(std::string("cannot open ") + path);
    int32_t const count = readI32(in);
    std::vector<Collection> out(static_cast<size_t>(count));
    for (auto& c : out) {
        c.nbFields = readI32(in);
        if (c.nbFields == std::numeric_limits<int32_t>::min()) {
            c.null = true;
            continue;
        }
        int32_t const stored = readI32(in);  // fields present in the file (may differ from nbFields)
        for (int32_t i = 0; i < stored; ++i) {
            FieldData f;
            int32_t const nameLength = readI32(in);
            f.nullName = nameLength < 0;
            if (nameLength > 0) {
                f.name.resize(static_cast<size_t>(nameLength));
                in.read(f.name.data(), nameLength);
            }
            f.type = readI32(in);
            f.length = readI32(in);
            int32_t const bytes = readI32(in);
            f.nullData = bytes < 0;
            if (bytes > 0) {
                f.data.resize(static_cast<size_t>(bytes));
                in.read(reinterpret_cast<char*>(f.data.data()), bytes);
            }
            if (!in) throw std::runtime_error("collection file too short");
            c.fields.push_back(std::move(f));
        }
    }
    return out;
}

struct Tensor {
    int32_t dtype = 0;
    int64_t n = 0, c = 0, h = 0, w = 0;
    std::vector<float> values;
};

Tensor readTensor(char const* path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(std::string("cannot open ") + path);
    Tensor t;
    t.dtype = readI32(in);
    t.n = readI32(in);
    t.c = readI32(in);
    t.h = readI32(in);
    t.w = readI32(in);
    t.values.resize(static_cast<size_t>(t.n * t.c * t.h * t.w));
    in.read(reinterpret_cast<char*>(t.values.data()), static_cast<std::streamsize>(t.values.size() * 4));
    if (!in) throw std::runtime_error("tensor file too short");
    return t;
}

// ---------------------------------------------------------------- reporting

void printStep(std::string const& step, bool ok, std::string const& detail) {
    std::string log = "[";
    auto messages = gLogger.take();
    for (size_t i = 0; i < messages.size(); ++i) log += (i ? ", " : "") + quote(messages[i]);
    log += "]";
    std::printf("{\"step\": %s, \"ok\": %s, \"detail\": %s, \"log\": %s}\n", quote(step).c_str(),
        ok ? "true" : "false", quote(detail).c_str(), log.c_str());
    std::fflush(stdout);
}

Dims dims4(int64_t a, int64_t b, int64_t c, int64_t d) {
    Dims out{};
    out.nbDims = 4;
    out.d[0] = a;
    out.d[1] = b;
    out.d[2] = c;
    out.d[3] = d;
    return out;
}

std::string dimsText(Dims const& d) {
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims; ++i) s += (i ? "," : "") + std::to_string(d.d[i]);
    return s + "]";
}

nvinfer1::PluginTensorDesc tensorDesc(Dims const& dims, DataType type, TensorFormat format = TensorFormat::kLINEAR) {
    nvinfer1::PluginTensorDesc desc{};
    desc.dims = dims;
    desc.type = type;
    desc.format = format;
    desc.scale = -1.0F;
    return desc;
}

nvinfer1::IPluginCreatorV3One* theCreator(std::string& error) {
    int32_t count = -1;
    nvinfer1::IPluginCreatorInterface* const* creators = getCreators(count);
    if (creators == nullptr || count != 1 || creators[0] == nullptr) {
        error = "getCreators returned " + std::to_string(count) + " creators";
        return nullptr;
    }
    nvinfer1::InterfaceInfo const info = creators[0]->getInterfaceInfo();
    if (std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") != 0 || info.major != 1) {
        error = std::string("creator interface is ") + info.kind;
        return nullptr;
    }
    return static_cast<nvinfer1::IPluginCreatorV3One*>(creators[0]);
}

char const* typeName(PluginFieldType t) {
    switch (t) {
        case PluginFieldType::kINT32: return "kINT32";
        case PluginFieldType::kFLOAT32: return "kFLOAT32";
        case PluginFieldType::kFLOAT16: return "kFLOAT16";
        case PluginFieldType::kFLOAT64: return "kFLOAT64";
        case PluginFieldType::kINT8: return "kINT8";
        case PluginFieldType::kINT16: return "kINT16";
        case PluginFieldType::kCHAR: return "kCHAR";
        case PluginFieldType::kDIMS: return "kDIMS";
        case PluginFieldType::kINT64: return "kINT64";
        default: return "other";
    }
}

size_t fieldBytes(PluginFieldType t) {
    switch (t) {
        case PluginFieldType::kINT32:
        case PluginFieldType::kFLOAT32: return 4;
        case PluginFieldType::kFLOAT64:
        case PluginFieldType::kINT64: return 8;
        case PluginFieldType::kFLOAT16:
        case PluginFieldType::kINT16:
        case PluginFieldType::kBF16: return 2;
        default: return 1;
    }
}

// TensorRT copies the serialized fields into the engine: an owned deep copy.
Collection deepCopy(PluginFieldCollection const& fc) {
    Collection c;
    c.nbFields = fc.nbFields;
    for (int32_t i = 0; i < fc.nbFields; ++i) {
        PluginField const& f = fc.fields[i];
        FieldData d;
        d.name = f.name;
        d.type = static_cast<int32_t>(f.type);
        d.length = f.length;
        auto const* bytes = static_cast<unsigned char const*>(f.data);
        d.data.assign(bytes, bytes + static_cast<size_t>(f.length) * fieldBytes(f.type));
        c.fields.push_back(std::move(d));
    }
    return c;
}

// ---------------------------------------------------------------- modes

int fieldsMode() {
    std::string error;
    setLoggerFinder(&gFinder);
    nvinfer1::IPluginCreatorV3One* creator = theCreator(error);
    if (creator == nullptr) {
        std::printf("{\"error\": %s}\n", quote(error).c_str());
        return 0;
    }
    PluginFieldCollection const* fc = creator->getFieldNames();
    std::printf("{\"name\": %s, \"version\": %s, \"namespace\": %s, \"fields\": [", quote(creator->getPluginName()).c_str(),
        quote(creator->getPluginVersion()).c_str(), quote(creator->getPluginNamespace()).c_str());
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        std::printf("%s{\"name\": %s, \"type\": \"%s\", \"length\": %d}", i ? ", " : "",
            quote(fc->fields[i].name).c_str(), typeName(fc->fields[i].type), fc->fields[i].length);
    }
    // The plugin's field table itself: ranges, parities and table shapes (checked against the YAML).
    int32_t count = 0;
    axial_deploy::FieldSpec const* specs = axial_deploy::fieldSpecs(count);
    auto nameOf = [&](int32_t axial_deploy::AxialAttentionConfig::*member) -> std::string {
        for (int32_t k = 0; k < count; ++k) {
            if (specs[k].scalar != nullptr && specs[k].scalar == member) return specs[k].name;
        }
        return "?";
    };
    std::printf("], \"table\": [");
    for (int32_t k = 0; k < count; ++k) {
        axial_deploy::FieldSpec const& f = specs[k];
        std::printf("%s{\"name\": %s, \"type\": \"%s\"", k ? ", " : "", quote(f.name).c_str(), typeName(f.type));
        if (f.type == PluginFieldType::kINT32) {
            std::printf(", \"min\": %d, \"max\": %d, \"parity\": %d}", f.min, f.max, static_cast<int>(f.parity));
        } else {
            std::printf(", \"shape\": [");
            for (int d = 0; d < 3 && f.shape[d] != nullptr; ++d) std::printf("%s%s", d ? ", " : "", quote(nameOf(f.shape[d])).c_str());
            std::printf("]}");
        }
    }
    std::printf("]}\n");
    return 0;
}

int createMode(char const* path) {
    std::vector<Collection> collections = readCollections(path);
    std::string error;
    setLoggerFinder(&gFinder);
    nvinfer1::IPluginCreatorV3One* creator = theCreator(error);
    if (creator == nullptr) {
        printStep("getCreators", false, error);
        return 0;
    }
    for (size_t i = 0; i < collections.size(); ++i) {
        bool created[2] = {};
        nvinfer1::TensorRTPhase const phases[2] = {nvinfer1::TensorRTPhase::kBUILD, nvinfer1::TensorRTPhase::kRUNTIME};
        for (int p = 0; p < 2; ++p) {
            nvinfer1::IPluginV3* plugin = creator->createPlugin("harness", collections[i].get(), phases[p]);
            created[p] = plugin != nullptr;
            delete plugin;
        }
        printStep("createPlugin#" + std::to_string(i), true,
            std::string("build=") + (created[0] ? "created" : "refused") + " runtime=" + (created[1] ? "created" : "refused"));
    }
    return 0;
}

struct Lifecycle {
    Tensor input;
    Collection fields;
    char const* outputPath;
    nvinfer1::IPluginCreatorV3One* creator = nullptr;

    int run();
};

int Lifecycle::run() {
    std::string error;
    DataType const type = input.dtype == 1 ? DataType::kHALF : DataType::kFLOAT;
    int64_t const n = input.n, c = input.c, h = input.h, w = input.w;

    setLoggerFinder(&gFinder);
    printStep("setLoggerFinder", true, "");

    creator = theCreator(error);
    printStep("getCreators", creator != nullptr, error);
    if (creator == nullptr) return 0;
    printStep("creator identity", true,
        std::string(creator->getPluginName()) + "/" + creator->getPluginVersion() + "/" + creator->getPluginNamespace());

    // -- field names: every field the collection gives is one the creator lists
    PluginFieldCollection const* names = creator->getFieldNames();
    std::set<std::string> listed;
    for (int32_t i = 0; names != nullptr && i < names->nbFields; ++i) listed.insert(names->fields[i].name);
    std::set<std::string> given;
    for (auto const& f : fields.fields) given.insert(f.name);
    printStep("getFieldNames", names != nullptr && listed == given, std::to_string(listed.size()) + " fields");

    // -- build phase
    nvinfer1::IPluginV3* build = creator->createPlugin("axial_build", fields.get(), nvinfer1::TensorRTPhase::kBUILD);
    printStep("createPlugin(kBUILD)", build != nullptr, "");
    if (build == nullptr) return 0;

    auto* core = static_cast<nvinfer1::IPluginV3OneCore*>(build->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE));
    auto* buildCap = static_cast<nvinfer1::IPluginV3OneBuild*>(build->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
    auto* runtimeCap = static_cast<nvinfer1::IPluginV3OneRuntime*>(build->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
    bool capsOk = core != nullptr && buildCap != nullptr && runtimeCap != nullptr;
    if (capsOk) {
        capsOk = std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0
            && std::strcmp(buildCap->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0
            && std::strcmp(runtimeCap->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0
            && std::strcmp(core->getPluginName(), creator->getPluginName()) == 0
            && std::strcmp(core->getPluginVersion(), creator->getPluginVersion()) == 0
            && std::strcmp(core->getPluginNamespace(), creator->getPluginNamespace()) == 0;
    }
    printStep("getCapabilityInterface", capsOk, "core/build/runtime");
    if (!capsOk) return 0;

    int32_t const nbOutputs = buildCap->getNbOutputs();
    printStep("getNbOutputs", nbOutputs == 1, std::to_string(nbOutputs));

    // -- output types
    {
        bool ok = true;
        std::string detail;
        for (DataType t : {DataType::kFLOAT, DataType::kHALF}) {
            DataType out = DataType::kINT8;
            int32_t const rc = buildCap->getOutputDataTypes(&out, 1, &t, 1);
            ok = ok && rc == 0 && out == t;
            detail += std::to_string(static_cast<int>(t)) + "->" + std::to_string(static_cast<int>(out)) + " ";
        }
        DataType const int8 = DataType::kINT8;
        DataType out = DataType::kFLOAT;
        bool const refused = buildCap->getOutputDataTypes(&out, 1, &int8, 1) != 0 && !gLogger.messages.empty();
        gLogger.take();
        printStep("getOutputDataTypes", ok && refused, detail + (refused ? "INT8 refused" : "INT8 accepted"));
    }

    // -- symbolic output shapes: batch, H and W unknown at build time, channels a constant
    int64_t expectedOut = -1;
    {
        HostExprBuilder builder;
        nvinfer1::DimsExprs in{};
        in.nbDims = 4;
        in.d[0] = builder.impl.symbol("N");
        in.d[1] = builder.constant(c);
        in.d[2] = builder.impl.symbol("H");
        in.d[3] = builder.impl.symbol("W");
        nvinfer1::DimsExprs out{};
        int32_t const rc = buildCap->getOutputShapes(&in, 1, nullptr, 0, &out, 1, builder);
        bool ok = rc == 0 && out.nbDims == 4 && builder.impl.sizeTensorCalls == 0;
        std::string detail = "rc=" + std::to_string(rc);
        if (ok) {
            for (int i = 0; i < 4; ++i) ok = ok && out.d[i] != nullptr;
        }
        if (ok) {
            std::map<std::string, int64_t> const bind{{"N", n}, {"H", h}, {"W", w}};
            std::map<std::string, int64_t> const other{{"N", n + 3}, {"H", h + 5}, {"W", w + 7}};
            detail = "[" + describe(implOf(*out.d[0])) + ", " + describe(implOf(*out.d[1])) + ", "
                + describe(implOf(*out.d[2])) + ", " + describe(implOf(*out.d[3])) + "]";
            ok = out.d[1]->isConstant() && !out.d[0]->isConstant() && !out.d[2]->isConstant() && !out.d[3]->isConstant();
            expectedOut = out.d[1]->getConstantValue();
            for (auto const* b : {&bind, &other}) {
                ok = ok && evaluate(implOf(*out.d[0]), *b) == b->at("N")
                    && evaluate(implOf(*out.d[2]), *b) == b->at("H") && evaluate(implOf(*out.d[3]), *b) == b->at("W");
            }
        }
        printStep("getOutputShapes(symbolic N,H,W)", ok, detail);

        // all-constant input dims give all-constant output dims
        nvinfer1::DimsExprs fixed{};
        fixed.nbDims = 4;
        fixed.d[0] = builder.constant(n);
        fixed.d[1] = builder.constant(c);
        fixed.d[2] = builder.constant(h);
        fixed.d[3] = builder.constant(w);
        nvinfer1::DimsExprs outFixed{};
        int32_t const rc2 = buildCap->getOutputShapes(&fixed, 1, nullptr, 0, &outFixed, 1, builder);
        bool ok2 = rc2 == 0 && outFixed.nbDims == 4;
        for (int i = 0; ok2 && i < 4; ++i) ok2 = outFixed.d[i] != nullptr && outFixed.d[i]->isConstant();
        ok2 = ok2 && outFixed.d[0]->getConstantValue() == n && outFixed.d[1]->getConstantValue() == expectedOut
            && outFixed.d[2]->getConstantValue() == h && outFixed.d[3]->getConstantValue() == w;
        printStep("getOutputShapes(constant)", ok2, ok2 ? dimsText(dims4(n, expectedOut, h, w)) : "rc=" + std::to_string(rc2));

        // a qkv whose (constant) channel count contradicts the fields is refused with a message
        nvinfer1::DimsExprs wrong = fixed;
        wrong.d[1] = builder.constant(c + 1);
        nvinfer1::DimsExprs outWrong{};
        int32_t const rc3 = buildCap->getOutputShapes(&wrong, 1, nullptr, 0, &outWrong, 1, builder);
        bool const logged = !gLogger.messages.empty();
        printStep("getOutputShapes(wrong channels) refused", rc3 != 0 && logged, "rc=" + std::to_string(rc3));

        nvinfer1::DimsExprs rank3{};
        rank3.nbDims = 3;
        rank3.d[0] = fixed.d[0];
        rank3.d[1] = fixed.d[1];
        rank3.d[2] = fixed.d[2];
        int32_t const rc4 = buildCap->getOutputShapes(&rank3, 1, nullptr, 0, &outWrong, 1, builder);
        printStep("getOutputShapes(rank 3) refused", rc4 != 0 && !gLogger.messages.empty(), "rc=" + std::to_string(rc4));
    }

    // -- format negotiation over every dtype x format pair, input then output
    {
        int32_t const nbTypes = nvinfer1::EnumMax<DataType>();
        int32_t const nbFormats = nvinfer1::EnumMax<TensorFormat>();
        std::string accepted;
        bool ok = true;
        nvinfer1::DynamicPluginTensorDesc io[2]{};
        Dims const dynamic = dims4(-1, c, -1, -1);
        for (int32_t t = 0; t < nbTypes; ++t) {
            for (int32_t f = 0; f < nbFormats; ++f) {
                io[0].desc = tensorDesc(dynamic, static_cast<DataType>(t), static_cast<TensorFormat>(f));
                bool const in = buildCap->supportsFormatCombination(0, io, 1, 1);
                bool const expected = f == static_cast<int32_t>(TensorFormat::kLINEAR)
                    && (t == static_cast<int32_t>(DataType::kFLOAT) || t == static_cast<int32_t>(DataType::kHALF));
                ok = ok && in == expected;
                if (in) accepted += "in(" + std::to_string(t) + "," + std::to_string(f) + ") ";
                if (!in) continue;
                for (int32_t t2 = 0; t2 < nbTypes; ++t2) {
                    for (int32_t f2 = 0; f2 < nbFormats; ++f2) {
                        io[1].desc = tensorDesc(dynamic, static_cast<DataType>(t2), static_cast<TensorFormat>(f2));
                        bool const out = buildCap->supportsFormatCombination(1, io, 1, 1);
                        ok = ok && out == (t2 == t && f2 == static_cast<int32_t>(TensorFormat::kLINEAR));
                        if (out) accepted += "out(" + std::to_string(t2) + "," + std::to_string(f2) + ") ";
                    }
                }
            }
        }
        bool const outOfRange = !buildCap->supportsFormatCombination(2, io, 1, 1)
            && !buildCap->supportsFormatCombination(-1, io, 1, 1);
        printStep("supportsFormatCombination", ok && outOfRange,
            std::to_string(nbTypes) + " types x " + std::to_string(nbFormats) + " formats; " + accepted);
    }

    // -- configurePlugin with a dynamic profile whose max is the run's shape
    auto dynamicDesc = [&](int64_t channels) {
        nvinfer1::DynamicPluginTensorDesc d{};
        d.desc = tensorDesc(dims4(-1, channels, -1, -1), type);
        d.min = dims4(1, channels, 1, 1);
        d.opt = dims4(n, channels, h, w);
        d.max = dims4(n, channels, h, w);
        return d;
    };
    nvinfer1::DynamicPluginTensorDesc inDesc = dynamicDesc(c);
    nvinfer1::DynamicPluginTensorDesc outDesc = dynamicDesc(expectedOut);
    {
        int32_t const rc = buildCap->configurePlugin(&inDesc, 1, &outDesc, 1);
        printStep("configurePlugin", rc == 0, "max " + dimsText(inDesc.max));
        nvinfer1::DynamicPluginTensorDesc wrongIn = dynamicDesc(c + 2);
        int32_t const rc2 = buildCap->configurePlugin(&wrongIn, 1, &outDesc, 1);
        printStep("configurePlugin(wrong channels) refused", rc2 != 0 && !gLogger.messages.empty(), "rc=" + std::to_string(rc2));
    }
    size_t const workspace = buildCap->getWorkspaceSize(&inDesc, 1, &outDesc, 1);
    printStep("getWorkspaceSize", true, std::to_string(workspace) + " bytes");

    bool const half = type == DataType::kHALF;
    size_t const count = static_cast<size_t>(n * expectedOut * h * w);
    std::vector<_Float16> const qkv16(input.values.begin(), input.values.end());
    void const* inputs[1] = {half ? static_cast<void const*>(qkv16.data()) : input.values.data()};
    std::vector<unsigned char> scratch(std::max<size_t>(workspace, 1));
    auto* stream = reinterpret_cast<cudaStream_t>(0x5);  // never dereferenced by the emulation
    long enqueueHeap = 0;  // heap allocations inside the plugin's enqueue calls, all together
    // One enqueue into a NaN-poisoned y (as float32 either way).
    auto enqueueInto = [&](nvinfer1::IPluginV3OneRuntime* exec, nvinfer1::PluginTensorDesc const& in,
                           nvinfer1::PluginTensorDesc const& out, std::vector<float>& y) {
        y.assign(count, NAN);
        std::vector<_Float16> y16(count, static_cast<_Float16>(NAN));
        void* outputs[1] = {half ? static_cast<void*>(y16.data()) : y.data()};
        int32_t rc = -1;
        enqueueHeap += heapAllocationsDuring([&] {
            rc = exec->enqueue(&in, &out, inputs, outputs, workspace ? scratch.data() : nullptr, stream);
        });
        if (half) std::copy(y16.begin(), y16.end(), y.begin());
        return rc;
    };

    // -- the builder times the build-phase instance itself, never attached to a context:
    //    onShapeChange puts its tables on the GPU, enqueue only launches
    std::vector<float> timedY;
    {
        nvinfer1::PluginTensorDesc const inT = tensorDesc(dims4(n, c, h, w), type);
        nvinfer1::PluginTensorDesc const outT = tensorDesc(dims4(n, expectedOut, h, w), type);
        int32_t const rcShape = runtimeCap->onShapeChange(&inT, 1, &outT, 1);
        long const mallocs = gCuda.mallocs, copies = gCuda.copies;
        int32_t const rc = enqueueInto(runtimeCap, inT, outT, timedY);
        bool const inside = gCuda.mallocs != mallocs || gCuda.copies != copies;
        bool const written = std::none_of(timedY.begin(), timedY.end(), [](float v) { return std::isnan(v); });
        printStep("builder timing: onShapeChange + enqueue on the build instance",
            rcShape == 0 && rc == 0 && !inside && written,
            std::string("rc=") + std::to_string(rc) + (inside ? "; allocated/copied inside enqueue" : "")
                + (written ? "" : "; output left unwritten"));
    }

    // -- serialization: what TensorRT stores in the engine is a deep copy of these fields
    PluginFieldCollection const* serialized = runtimeCap->getFieldsToSerialize();
    bool serialOk = serialized != nullptr && serialized->nbFields == static_cast<int32_t>(fields.fields.size());
    std::string serialDetail;
    Collection engineFields;
    if (serialOk) {
        engineFields = deepCopy(*serialized);
        for (auto const& given : fields.fields) {
            auto match = std::find_if(engineFields.fields.begin(), engineFields.fields.end(),
                [&](FieldData const& f) { return f.name == given.name; });
            bool const same = match != engineFields.fields.end() && match->type == given.type
                && match->length == given.length && match->data == given.data;
            if (!same) serialDetail += given.name + " differs; ";
            serialOk = serialOk && same;
        }
    }
    printStep("getFieldsToSerialize", serialOk, serialDetail.empty() ? "round trip exact" : serialDetail);
    if (!serialOk) return 0;
    std::string const timingId = buildCap->getTimingCacheID() ? buildCap->getTimingCacheID() : "";
    printStep("getTimingCacheID", !timingId.empty(), timingId);

    // The build-phase plugin is gone before the engine is deserialized.
    delete build;
    printStep("destroy(build plugin)", gCuda.live.empty(), std::to_string(gCuda.live.size()) + " device allocations live");

    // -- runtime phase from the engine's copy of the fields; the copy is then freed, so any pointer
    //    the plugin kept into it is caught by AddressSanitizer at enqueue
    auto* stored = new Collection(std::move(engineFields));
    nvinfer1::IPluginV3* runtime = creator->createPlugin("axial_runtime", stored->get(), nvinfer1::TensorRTPhase::kRUNTIME);
    delete stored;
    printStep("createPlugin(kRUNTIME)", runtime != nullptr, "");
    if (runtime == nullptr) return 0;

    nvinfer1::IPluginV3* cloned = runtime->clone();
    bool cloneOk = cloned != nullptr && cloned != runtime;
    if (cloneOk) {
        auto* a = static_cast<nvinfer1::IPluginV3OneRuntime*>(runtime->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
        auto* b = static_cast<nvinfer1::IPluginV3OneRuntime*>(cloned->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
        Collection ca = deepCopy(*a->getFieldsToSerialize());
        Collection cb = deepCopy(*b->getFieldsToSerialize());
        for (size_t i = 0; cloneOk && i < ca.fields.size(); ++i) {
            cloneOk = ca.fields[i].name == cb.fields[i].name && ca.fields[i].data == cb.fields[i].data;
        }
    }
    printStep("clone", cloneOk, "");
    delete cloned;

    ResourceContext context;
    long const mallocsBefore = gCuda.mallocs, copiesBefore = gCuda.copies;
    auto* runtimeOne = static_cast<nvinfer1::IPluginV3OneRuntime*>(runtime->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
    nvinfer1::IPluginV3* attached = runtimeOne->attachToContext(&context);
    printStep("attachToContext", attached != nullptr && attached != runtime,
        "mallocs " + std::to_string(gCuda.mallocs - mallocsBefore) + ", copies " + std::to_string(gCuda.copies - copiesBefore));
    if (attached == nullptr) return 0;
    auto* exec = static_cast<nvinfer1::IPluginV3OneRuntime*>(attached->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));

    nvinfer1::PluginTensorDesc const inRun = tensorDesc(dims4(n, c, h, w), type);
    nvinfer1::PluginTensorDesc const outRun = tensorDesc(dims4(n, expectedOut, h, w), type);
    {
        nvinfer1::PluginTensorDesc const wrong = tensorDesc(dims4(n, c + 2, h, w), type);
        nvinfer1::PluginTensorDesc const wrongOut = tensorDesc(dims4(n, expectedOut, h, w), type);
        int32_t const rc = exec->onShapeChange(&wrong, 1, &wrongOut, 1);
        printStep("onShapeChange(wrong channels) refused", rc != 0 && !gLogger.messages.empty(), "rc=" + std::to_string(rc));
        nvinfer1::PluginTensorDesc const int8In = tensorDesc(dims4(n, c, h, w), DataType::kINT8);
        int32_t const rc2 = exec->onShapeChange(&int8In, 1, &outRun, 1);
        printStep("onShapeChange(INT8) refused", rc2 != 0 && !gLogger.messages.empty(), "rc=" + std::to_string(rc2));
    }
    long const mallocsShape = gCuda.mallocs, copiesShape = gCuda.copies;
    int32_t shapeRc = -1;
    // A large batch first: its dims text ("[123457, ...]") is too long for std::string's inline
    // buffer, so formatting it on success would show up as an allocation. Then the run's shape.
    nvinfer1::PluginTensorDesc const inLarge = tensorDesc(dims4(123457, c, h, w), type);
    nvinfer1::PluginTensorDesc const outLarge = tensorDesc(dims4(123457, expectedOut, h, w), type);
    long const shapeHeap = heapAllocationsDuring([&] {
        shapeRc = exec->onShapeChange(&inLarge, 1, &outLarge, 1);
        if (shapeRc == 0) shapeRc = exec->onShapeChange(&inRun, 1, &outRun, 1);
    });
    printStep("onShapeChange", shapeRc == 0,
        dimsText(inRun.dims) + "; mallocs " + std::to_string(gCuda.mallocs - mallocsShape) + ", copies "
            + std::to_string(gCuda.copies - copiesShape));

    // -- enqueue: the emulated kernel on host buffers; no allocation or copy may happen in here
    std::vector<float> y;
    long const mallocsEnqueue = gCuda.mallocs, copiesEnqueue = gCuda.copies, launches = kernel_emulation::launches();
    int32_t const rc = enqueueInto(exec, inRun, outRun, y);
    long const enqueueMallocs = gCuda.mallocs - mallocsEnqueue, enqueueCopies = gCuda.copies - copiesEnqueue;
    printStep("enqueue", rc == 0 && kernel_emulation::launches() == launches + 1,
        "rc=" + std::to_string(rc) + "; launches " + std::to_string(kernel_emulation::launches() - launches));
    printStep("enqueue only launches", enqueueMallocs == 0 && enqueueCopies == 0,
        "mallocs " + std::to_string(enqueueMallocs) + ", copies " + std::to_string(enqueueCopies));
    std::ofstream(outputPath, std::ios::binary)
        .write(reinterpret_cast<char const*>(y.data()), static_cast<std::streamsize>(count * 4));
    bool const agree = timedY.size() == y.size() && std::memcmp(timedY.data(), y.data(), count * sizeof(float)) == 0;
    printStep("build and runtime instances agree", agree, agree ? "identical outputs" : "outputs differ");

    // -- a second enqueue on the same instance reuses its tables and gives the same output
    std::vector<float> y2;
    int32_t const rcAgain = enqueueInto(exec, inRun, outRun, y2);
    bool const same = std::memcmp(y.data(), y2.data(), count * sizeof(float)) == 0;
    printStep("enqueue again", rcAgain == 0 && same && gCuda.mallocs == mallocsEnqueue + enqueueMallocs, same ? "identical" : "differs");
    // -- the hot path: no heap allocation (nor the string formatting that would need one) in the
    //    successful onShapeChange and enqueue calls of the attached instance
    printStep("hot path allocates nothing", shapeHeap == 0 && enqueueHeap == 0,
        "heap allocations: onShapeChange " + std::to_string(shapeHeap) + ", enqueue " + std::to_string(enqueueHeap));

    delete attached;
    delete runtime;
    printStep("destroy", gCuda.live.empty() && gCuda.badFrees == 0,
        std::to_string(gCuda.mallocs) + " mallocs, " + std::to_string(gCuda.frees) + " frees, "
            + std::to_string(gCuda.live.size()) + " live");
    return 0;
}

}  // namespace

// ---------------------------------------------------------------- the CUDA runtime on the host
// The glue's CUDA runtime calls, emulated on host memory (the kernel emulation reads "device"
// pointers as host pointers). Declarations come from the real cuda_runtime_api.h.
extern "C" {

cudaError_t cudaMalloc(void** devPtr, size_t size) {
    if (devPtr == nullptr) return cudaErrorInvalidValue;
    *devPtr = std::malloc(size > 0 ? size : 1);
    if (*devPtr == nullptr) return cudaErrorMemoryAllocation;
    gCuda.live.insert(*devPtr);
    ++gCuda.mallocs;
    return cudaSuccess;
}

cudaError_t cudaFree(void* devPtr) {
    if (devPtr == nullptr) return cudaSuccess;
    if (gCuda.live.erase(devPtr) == 0) {
        ++gCuda.badFrees;
        return cudaErrorInvalidValue;
    }
    ++gCuda.frees;
    std::free(devPtr);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, void const* src, size_t count, cudaMemcpyKind) {
    ++gCuda.copies;
    if (count > 0) std::memcpy(dst, src, count);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, void const* src, size_t count, cudaMemcpyKind, cudaStream_t) {
    ++gCuda.copies;
    if (count > 0) std::memcpy(dst, src, count);
    return cudaSuccess;
}

char const* cudaGetErrorString(cudaError_t error) {
    return error == cudaSuccess ? "no error" : "emulated CUDA error";
}

}  // extern "C"

int main(int argc, char** argv) {
    std::string const mode = argc > 1 ? argv[1] : "";
    try {
        if (mode == "fields" && argc == 2) return fieldsMode();
        if (mode == "create" && argc == 3) return createMode(argv[2]);
        if (mode == "lifecycle" && argc == 5) {
            Lifecycle run;
            std::vector<Collection> collections = readCollections(argv[2]);
            if (collections.empty()) throw std::runtime_error("no field collection given");
            run.fields = std::move(collections.front());
            run.input = readTensor(argv[3]);
            run.outputPath = argv[4];
            return run.run();
        }
    } catch (std::exception const& e) {
        std::fprintf(stderr, "harness: %s\n", e.what());
        return 2;
    }
    std::fprintf(stderr, "usage: %s fields | create COLLECTIONS | lifecycle FIELDS TENSOR OUTPUT\n", argv[0]);
    return 2;
}
