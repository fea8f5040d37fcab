/*
 * TensorRT glue of the AxialAttention plugin: IPluginV3 + creator + the library entry points
 * (getCreators, setLoggerFinder) that IPluginRegistry::loadLibrary, Python
 * registry.load_library and trtexec --dynamicPlugins look up.
 *
 * One error rule, as in TensorRT's own plugins: every noexcept entry point runs its body through
 * guarded(), checks throw a PluginError naming the problem, and guarded() reports it through the
 * logger and returns the entry point's failure value. Nothing throws across the ABI.
 * enqueue only launches: the constant tables reach the GPU in attachToContext (the per-context
 * instance) or, for instances TensorRT runs without one (the builder's timing), in their first
 * onShapeChange. On the success path of enqueue and onShapeChange nothing allocates or formats:
 * check() takes its message parts unformatted (DimsText) and fail() builds the string, so the
 * cost of a diagnostic is paid only on failure (tests/native/plugin_harness.cpp counts heap
 * allocations during those calls; tests/test_plugin_harness.py asserts zero).
 */
#include "axialAttentionPlugin.h"

#include <NvInferVersion.h>

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <atomic>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace axial_deploy
{
namespace
{
constexpr char const* kPLUGIN_NAME = "AxialAttention";
constexpr char const* kPLUGIN_VERSION = "1";
constexpr char const* kPLUGIN_NAMESPACE = "axial_deploy";
constexpr int32_t kINT32_MAX = std::numeric_limits<int32_t>::max();

nvinfer1::ILoggerFinder* gLoggerFinder = nullptr;

class PluginError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

void logMessage(nvinfer1::ILogger::Severity severity, char const* where, char const* msg) noexcept
{
    try
    {
        nvinfer1::ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            std::string const text = std::string("AxialAttention plugin: ") + where + ": " + msg;
            logger->log(severity, text.c_str());
        }
    }
    catch (...)
    {
        // Out of memory while building a message: nothing left to report it with.
    }
}

// Runs body(); a thrown error is logged (naming the entry point) and `onError` returned.
template <typename R, typename Body>
R guarded(char const* where, R onError, Body&& body) noexcept
{
    try
    {
        return body();
    }
    catch (std::exception const& e)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, where, e.what());
    }
    catch (...)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, where, "unknown exception");
    }
    return onError;
}

template <typename... Parts>
[[noreturn]] void fail(Parts const&... parts)
{
    std::ostringstream msg;
    (msg << ... << parts);
    throw PluginError(msg.str());
}

template <typename... Parts>
void check(bool condition, Parts const&... parts)
{
    if (!condition)
    {
        fail(parts...);
    }
}

// The single field table (see FieldSpec). Ranges, parities and table shapes are those of
// AxialAttention_PluginConfig.yaml; order is the order of getFieldNames and serialization.
using C = AxialAttentionConfig;
constexpr FieldSpec intField(char const* name, int32_t C::*member, int32_t min, int32_t max, FieldParity parity)
{
    return FieldSpec{name, nvinfer1::PluginFieldType::kINT32, member, min, max, parity, nullptr, {}};
}
constexpr FieldSpec tableField(char const* name, std::vector<float> C::*member, int32_t C::*d0,
    int32_t C::*d1 = nullptr, int32_t C::*d2 = nullptr)
{
    return FieldSpec{name, nvinfer1::PluginFieldType::kFLOAT32, nullptr, 0, 0, FieldParity::kANY, member, {d0, d1, d2}};
}
FieldSpec const kFIELDS[] = {
    intField("axis", &C::axis, 2, 3, FieldParity::kANY),
    intField("num_heads", &C::numHeads, 1, kINT32_MAX, FieldParity::kANY),
    intField("key_depth", &C::keyDepth, 1, kINT32_MAX, FieldParity::kANY),
    intField("value_depth", &C::valueDepth, 1, kINT32_MAX, FieldParity::kANY),
    intField("span", &C::span, 0, kINT32_MAX, FieldParity::kZERO_OR_ODD),
    intField("table_length", &C::tableLength, 1, kINT32_MAX, FieldParity::kODD),
    tableField("rel_q", &C::relQ, &C::numHeads, &C::keyDepth, &C::tableLength),
    tableField("rel_k", &C::relK, &C::numHeads, &C::keyDepth, &C::tableLength),
    tableField("rel_v", &C::relV, &C::numHeads, &C::valueDepth, &C::tableLength),
    tableField("logit_scale", &C::logitScale, &C::numHeads),
    tableField("out_bias", &C::outBias, &C::numHeads, &C::valueDepth),
};
constexpr int32_t kNB_FIELDS = static_cast<int32_t>(sizeof(kFIELDS) / sizeof(kFIELDS[0]));

char const* typeName(nvinfer1::PluginFieldType type)
{
    return type == nvinfer1::PluginFieldType::kINT32 ? "kINT32" : "kFLOAT32";
}

// Elements a table field must hold for `config`'s int fields, or -1 when that exceeds INT32_MAX
// (a PluginField's length is an int32).
int64_t tableElements(FieldSpec const& spec, AxialAttentionConfig const& config)
{
    int64_t elements = 1;
    for (auto dim : spec.shape)
    {
        if (dim != nullptr)
        {
            elements *= config.*dim; // each factor is in [1, INT32_MAX]: the check below keeps
            if (elements > kINT32_MAX) // the product under 2^62, no overflow
            {
                return -1;
            }
        }
    }
    return elements;
}

// Reads every field of the table from fc into a config; throws a message naming the field.
AxialAttentionConfig readFields(nvinfer1::PluginFieldCollection const* fc)
{
    check(fc != nullptr, "no field collection given (fields: the ", kNB_FIELDS, " listed by getFieldNames)");
    check(fc->nbFields >= 0, "the field collection has a negative number of fields (", fc->nbFields, ")");
    check(fc->nbFields == 0 || fc->fields != nullptr, "the field collection has ", fc->nbFields,
        " fields but a null fields pointer");
    AxialAttentionConfig config;
    bool seen[kNB_FIELDS] = {};
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& f = fc->fields[i];
        check(f.name != nullptr, "field #", i, " has no name");
        int32_t index = -1;
        for (int32_t k = 0; k < kNB_FIELDS; ++k)
        {
            if (std::strcmp(f.name, kFIELDS[k].name) == 0)
            {
                index = k;
            }
        }
        if (index < 0)
        {
            logMessage(nvinfer1::ILogger::Severity::kWARNING, "createPlugin",
                (std::string("ignoring unknown field '") + f.name + "'").c_str());
            continue;
        }
        FieldSpec const& spec = kFIELDS[index];
        check(!seen[index], "field '", spec.name, "' is given twice");
        seen[index] = true;
        check(f.type == spec.type, "field '", spec.name, "' must be ", typeName(spec.type), ", got PluginFieldType ",
            static_cast<int32_t>(f.type));
        if (spec.type == nvinfer1::PluginFieldType::kINT32)
        {
            check(f.length == 1, "field '", spec.name, "' must hold exactly one kINT32, got length ", f.length);
            check(f.data != nullptr, "field '", spec.name, "' has no data");
            config.*spec.scalar = *static_cast<int32_t const*>(f.data);
        }
        else
        {
            check(f.length >= 0, "field '", spec.name, "' has a negative length ", f.length);
            check(f.length == 0 || f.data != nullptr, "field '", spec.name, "' has length ", f.length, " but no data");
            auto const* data = static_cast<float const*>(f.data);
            (config.*spec.table).assign(data, data + f.length);
        }
    }
    for (int32_t k = 0; k < kNB_FIELDS; ++k)
    {
        check(seen[k], "missing required field '", kFIELDS[k].name, "'");
    }
    return config;
}

// Checks the int fields' ranges and parities, then the table lengths (products of int fields).
void validate(AxialAttentionConfig const& config)
{
    for (FieldSpec const& spec : kFIELDS)
    {
        if (spec.type != nvinfer1::PluginFieldType::kINT32)
        {
            continue;
        }
        int32_t const v = config.*spec.scalar;
        bool const parityOk = spec.parity == FieldParity::kANY || (spec.parity == FieldParity::kODD && v % 2 != 0)
            || (spec.parity == FieldParity::kZERO_OR_ODD && (v == 0 || v % 2 != 0));
        char const* parity = spec.parity == FieldParity::kODD ? "odd " : spec.parity == FieldParity::kZERO_OR_ODD ? "0 or odd " : "";
        check(v >= spec.min && v <= spec.max && parityOk, "field '", spec.name, "' is ", v, ", must be ", parity, "in [",
            spec.min, ", ", spec.max, "]");
    }
    for (FieldSpec const& spec : kFIELDS)
    {
        if (spec.type != nvinfer1::PluginFieldType::kFLOAT32)
        {
            continue;
        }
        int64_t const expected = tableElements(spec, config);
        check(expected >= 0, "field '", spec.name, "' would need more than 2^31 - 1 values for these sizes "
            "(num_heads, key_depth, value_depth, table_length)");
        size_t const actual = (config.*spec.table).size();
        check(static_cast<int64_t>(actual) == expected, "field '", spec.name, "' has ", actual, " values, expected ",
            expected, " (its shape follows from the int fields)");
    }
}

bool isSupportedType(nvinfer1::DataType type)
{
    return type == nvinfer1::DataType::kFLOAT || type == nvinfer1::DataType::kHALF;
}

// Dims for a message, formatted only when a failed check builds one: check()'s arguments are
// evaluated on every call, so they must not allocate (enqueue and onShapeChange are hot paths).
struct DimsText
{
    nvinfer1::Dims const& dims;
};

std::ostream& operator<<(std::ostream& out, DimsText text)
{
    out << "[";
    for (int32_t i = 0; i < text.dims.nbDims; ++i)
    {
        out << (i ? ", " : "") << text.dims.d[i];
    }
    return out << "]";
}
} // namespace

FieldSpec const* fieldSpecs(int32_t& count) noexcept
{
    count = kNB_FIELDS;
    return kFIELDS;
}

// ---------------------------------------------------------------- plugin

AxialAttentionPlugin::AxialAttentionPlugin(AxialAttentionConfig config)
    : mConfig(std::move(config))
{
    std::ostringstream id;
    id << "axis=" << mConfig.axis << ";G=" << mConfig.numHeads << ";Dq=" << mConfig.keyDepth
       << ";Dv=" << mConfig.valueDepth << ";span=" << mConfig.span << ";T=" << mConfig.tableLength;
    mTimingCacheId = id.str();

    // Serialization reads the same table: pointers into this instance's own config.
    for (FieldSpec const& spec : kFIELDS)
    {
        if (spec.type == nvinfer1::PluginFieldType::kINT32)
        {
            mSerialized.emplace_back(spec.name, &(mConfig.*spec.scalar), spec.type, 1);
        }
        else
        {
            std::vector<float> const& table = mConfig.*spec.table;
            mSerialized.emplace_back(spec.name, table.data(), spec.type, static_cast<int32_t>(table.size()));
        }
    }
    mSerializedCollection.nbFields = static_cast<int32_t>(mSerialized.size());
    mSerializedCollection.fields = mSerialized.data();
}

AxialAttentionPlugin::~AxialAttentionPlugin()
{
    freeTables();
}

nvinfer1::IPluginCapability* AxialAttentionPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    return guarded("getCapabilityInterface", static_cast<nvinfer1::IPluginCapability*>(nullptr),
        [&]() -> nvinfer1::IPluginCapability* {
            switch (type)
            {
            case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
            case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
            case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
            }
            fail("unknown capability type ", static_cast<int32_t>(type));
        });
}

nvinfer1::IPluginV3* AxialAttentionPlugin::clone() noexcept
{
    // Deep copy of the host tables; the clone puts its own copy on the GPU (attachToContext).
    return guarded("clone", static_cast<nvinfer1::IPluginV3*>(nullptr),
        [&]() -> nvinfer1::IPluginV3* { return new AxialAttentionPlugin(mConfig); });
}

char const* AxialAttentionPlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* AxialAttentionPlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* AxialAttentionPlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

int32_t AxialAttentionPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guarded("configurePlugin", int32_t{-1}, [&] {
        check(in != nullptr && out != nullptr && nbInputs == 1 && nbOutputs == 1,
            "expects 1 input (qkv) and 1 output (y), got ", nbInputs, " and ", nbOutputs);
        // Both ends of the profile must be shapes the kernel runs.
        makeParams(in[0].min, in[0].desc.type, nullptr, "the profile's min qkv");
        makeParams(in[0].max, in[0].desc.type, &out[0].max, "the profile's max qkv");
        check(out[0].desc.type == in[0].desc.type, "y must have the dtype of qkv");
        return int32_t{0};
    });
}

int32_t AxialAttentionPlugin::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
    nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    return guarded("getOutputDataTypes", int32_t{-1}, [&] {
        check(outputTypes != nullptr && inputTypes != nullptr && nbInputs == 1 && nbOutputs == 1,
            "expects 1 input (qkv) and 1 output (y)");
        check(isSupportedType(inputTypes[0]), "qkv has DataType ", static_cast<int32_t>(inputTypes[0]),
            "; AxialAttention takes FP32 or FP16 (cast before the plugin)");
        outputTypes[0] = inputTypes[0]; // y has the dtype of qkv
        return int32_t{0};
    });
}

int32_t AxialAttentionPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /* shapeInputs */, int32_t /* nbShapeInputs */, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    return guarded("getOutputShapes", int32_t{-1}, [&] {
        check(inputs != nullptr && outputs != nullptr && nbInputs == 1 && nbOutputs == 1,
            "expects 1 input (qkv) and 1 output (y)");
        nvinfer1::DimsExprs const& qkv = inputs[0];
        check(qkv.nbDims == 4, "qkv must be 4-D NCHW, got ", qkv.nbDims, " dims");
        int64_t const expected = static_cast<int64_t>(mConfig.numHeads)
            * (2 * static_cast<int64_t>(mConfig.keyDepth) + mConfig.valueDepth);
        check(!qkv.d[1]->isConstant() || qkv.d[1]->getConstantValue() == expected, "qkv has ",
            qkv.d[1]->getConstantValue(), " channels but num_heads * (2 * key_depth + value_depth) = ", expected);
        nvinfer1::IDimensionExpr const* channels
            = exprBuilder.constant(static_cast<int64_t>(mConfig.numHeads) * mConfig.valueDepth);
        check(channels != nullptr, "the expression builder returned no constant");
        outputs[0].nbDims = 4;
        outputs[0].d[0] = qkv.d[0];
        outputs[0].d[1] = channels;
        outputs[0].d[2] = qkv.d[2];
        outputs[0].d[3] = qkv.d[3];
        return int32_t{0};
    });
}

bool AxialAttentionPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return guarded("supportsFormatCombination", false, [&] {
        if (inOut == nullptr || nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > 1)
        {
            return false;
        }
        nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != nvinfer1::TensorFormat::kLINEAR || !isSupportedType(desc.type))
        {
            return false;
        }
        return pos == 0 || desc.type == inOut[0].desc.type; // y matches qkv
    });
}

int32_t AxialAttentionPlugin::getNbOutputs() const noexcept
{
    return 1;
}

size_t AxialAttentionPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /* outputs */, int32_t /* nbOutputs */) const noexcept
{
    return guarded("getWorkspaceSize", size_t{0}, [&] {
        check(inputs != nullptr && nbInputs == 1, "expects 1 input (qkv)");
        AxialAttentionParams const params = makeParams(inputs[0].max, inputs[0].desc.type, nullptr, "the profile's max qkv");
        return axial_attention_workspace_size(&params); // largest shape of the profile
    });
}

char const* AxialAttentionPlugin::getTimingCacheID() noexcept
{
    return mTimingCacheId.c_str(); // timing depends on the attributes, not on the table values
}

char const* AxialAttentionPlugin::getMetadataString() noexcept
{
    return mTimingCacheId.c_str();
}

int32_t AxialAttentionPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guarded("onShapeChange", int32_t{-1}, [&] {
        check(in != nullptr && out != nullptr && nbInputs == 1 && nbOutputs == 1,
            "expects 1 input (qkv) and 1 output (y)");
        makeParams(in[0].dims, in[0].type, &out[0].dims, "qkv");
        check(out[0].type == in[0].type, "y must have the dtype of qkv");
        // Instances the builder times were never attached to a context: their tables go up here,
        // still outside enqueue (and outside any CUDA-graph capture of it).
        uploadTables();
        return int32_t{0};
    });
}

int32_t AxialAttentionPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /* outputDesc */, void const* const* inputs, void* const* outputs,
    void* workspace, cudaStream_t stream) noexcept
{
    // Only launches: the shapes were checked in onShapeChange and the tables are on the GPU.
    return guarded("enqueue", int32_t{-1}, [&] {
        check(mDeviceTables != nullptr, "the tables are not on the GPU (onShapeChange did not run)");
        check(inputDesc != nullptr && inputs != nullptr && outputs != nullptr, "null tensor pointers");
        AxialAttentionParams const params = makeParams(inputDesc[0].dims, inputDesc[0].type, nullptr, "qkv");
        size_t const workspaceBytes = axial_attention_workspace_size(&params);
        AxialAttentionStatus const status = axial_attention_enqueue(
            &params, inputs[0], &mTables, outputs[0], workspace, workspaceBytes, static_cast<void*>(stream));
        check(status == AXIAL_ATTENTION_SUCCESS, axial_attention_status_string(status));
        return int32_t{0};
    });
}

nvinfer1::IPluginV3* AxialAttentionPlugin::attachToContext(nvinfer1::IPluginResourceContext* /* context */) noexcept
{
    // The per-context instance owns its tables on the GPU from here on.
    return guarded("attachToContext", static_cast<nvinfer1::IPluginV3*>(nullptr), [&]() -> nvinfer1::IPluginV3* {
        auto attached = std::make_unique<AxialAttentionPlugin>(mConfig);
        attached->uploadTables();
        return attached.release();
    });
}

nvinfer1::PluginFieldCollection const* AxialAttentionPlugin::getFieldsToSerialize() noexcept
{
    return &mSerializedCollection;
}

AxialAttentionParams AxialAttentionPlugin::makeParams(
    nvinfer1::Dims const& in, nvinfer1::DataType type, nvinfer1::Dims const* out, char const* where) const
{
    check(in.nbDims == 4, where, " must be 4-D NCHW, got ", DimsText{in});
    check(isSupportedType(type), where, " must be FP32 or FP16, got DataType ", static_cast<int32_t>(type));
    int64_t const channels = static_cast<int64_t>(mConfig.numHeads)
        * (2 * static_cast<int64_t>(mConfig.keyDepth) + mConfig.valueDepth);
    check(in.d[1] == channels, where, " ", DimsText{in}, " has ", in.d[1],
        " channels, the fields need num_heads * (2 * key_depth + value_depth) = ", channels);
    for (int32_t i : {0, 2, 3})
    {
        check(in.d[i] >= 1 && in.d[i] <= kINT32_MAX, where, " ", DimsText{in}, ": dimension ", i,
            " must be in [1, 2^31 - 1]");
    }
    if (out != nullptr)
    {
        int64_t const outChannels = static_cast<int64_t>(mConfig.numHeads) * mConfig.valueDepth;
        check(out->nbDims == 4 && out->d[0] == in.d[0] && out->d[1] == outChannels && out->d[2] == in.d[2]
                && out->d[3] == in.d[3],
            "y is ", DimsText{*out}, ", expected [", in.d[0], ", ", outChannels, ", ", in.d[2], ", ", in.d[3], "]");
    }
    AxialAttentionParams params{};
    params.batch = static_cast<int32_t>(in.d[0]);
    params.height = static_cast<int32_t>(in.d[2]);
    params.width = static_cast<int32_t>(in.d[3]);
    params.axis = mConfig.axis;
    params.num_heads = mConfig.numHeads;
    params.key_depth = mConfig.keyDepth;
    params.value_depth = mConfig.valueDepth;
    params.span = mConfig.span;
    params.table_length = mConfig.tableLength;
    params.dtype = type == nvinfer1::DataType::kHALF ? AXIAL_ATTENTION_FLOAT16 : AXIAL_ATTENTION_FLOAT32;
    AxialAttentionStatus const status = axial_attention_check(&params);
    check(status == AXIAL_ATTENTION_SUCCESS, where, " ", DimsText{in}, ": ", axial_attention_status_string(status));
    return params;
}

void AxialAttentionPlugin::uploadTables()
{
    if (mDeviceTables != nullptr)
    {
        return;
    }
    std::vector<float> const* tables[]
        = {&mConfig.relQ, &mConfig.relK, &mConfig.relV, &mConfig.logitScale, &mConfig.outBias};
    size_t total = 0;
    for (auto const* t : tables)
    {
        total += t->size();
    }
    void* device = nullptr;
    cudaError_t const status = cudaMalloc(&device, total * sizeof(float));
    check(status == cudaSuccess, "cudaMalloc of the constant tables (", total * sizeof(float),
        " bytes) failed: ", cudaGetErrorString(status));
    mDeviceTables = static_cast<float*>(device);
    float const* starts[5] = {};
    size_t offset = 0;
    for (size_t i = 0; i < 5; ++i)
    {
        // Synchronous copy: once per instance, never inside enqueue.
        cudaError_t const copied = cudaMemcpy(mDeviceTables + offset, tables[i]->data(),
            tables[i]->size() * sizeof(float), cudaMemcpyHostToDevice);
        if (copied != cudaSuccess)
        {
            freeTables();
            fail("copying the constant tables to the GPU failed: ", cudaGetErrorString(copied));
        }
        starts[i] = mDeviceTables + offset;
        offset += tables[i]->size();
    }
    mTables = AxialAttentionTables{starts[0], starts[1], starts[2], starts[3], starts[4]};
}

void AxialAttentionPlugin::freeTables() noexcept
{
    if (mDeviceTables != nullptr)
    {
        cudaFree(mDeviceTables);
        mDeviceTables = nullptr;
        mTables = AxialAttentionTables{};
    }
}

// ---------------------------------------------------------------- creator

AxialAttentionPluginCreator::AxialAttentionPluginCreator()
{
    for (FieldSpec const& spec : kFIELDS)
    {
        mFields.emplace_back(spec.name, nullptr, spec.type, spec.type == nvinfer1::PluginFieldType::kINT32 ? 1 : 0);
    }
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

char const* AxialAttentionPluginCreator::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* AxialAttentionPluginCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* AxialAttentionPluginCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

nvinfer1::PluginFieldCollection const* AxialAttentionPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

nvinfer1::IPluginV3* AxialAttentionPluginCreator::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /* phase */) noexcept
{
    return guarded("createPlugin", static_cast<nvinfer1::IPluginV3*>(nullptr), [&]() -> nvinfer1::IPluginV3* {
        AxialAttentionConfig config;
        try
        {
            config = readFields(fc);
            validate(config);
        }
        catch (PluginError const& e)
        {
            fail("layer '", name != nullptr ? name : "", "': ", e.what()); // which node of the network
        }
        return new AxialAttentionPlugin(std::move(config));
    });
}

} // namespace axial_deploy

// ---------------------------------------------------------------- library entry points
//
// Two ways in, one library:
// - IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, registry.load_library, our loader)
//   dlopens the library and registers what getCreators returns; it fails when one of those
//   creators is already registered.
// - Consumers that only open the library (Polygraphy --plugins, trtexec --staticPlugins, Triton
//   plugins=, LD_PRELOAD, DeepStream custom-lib-path, ctypes.CDLL) never call getCreators: the
//   constructor below registers the creator with the plugin registry of whichever TensorRT
//   library the process already holds (looked up at run time, none is linked).
// getCreators first takes back what the constructor registered, so that a later loadLibrary of
// the same library registers it once, as its own, instead of failing as a duplicate.

namespace axial_deploy
{
namespace
{
using GetPluginRegistryFn = nvinfer1::IPluginRegistry* (*) ();

// Libraries exporting getPluginRegistry whose IPluginRegistry has the layout of the headers this
// file is compiled with: TensorRT 11 dropped the deprecated IPluginCreator methods from the
// interface (NvInferRuntimeCommon.h), so a registry of the other major version must never be
// called. TensorRT-RTX 1.x (`nm -D libtensorrt_rtx.so.1`: getPluginRegistry) has the 11.x layout
// (tests/test_plugin_loading.py registers through it from a library built with 11.x headers).
#if NV_TENSORRT_MAJOR == 10
constexpr char const* kTENSORRT_LIBRARIES[] = {
    "libnvinfer.so.10",
    "libnvinfer_lean.so.10",
    "libnvinfer_dispatch.so.10",
};
#elif NV_TENSORRT_MAJOR == 11
constexpr char const* kTENSORRT_LIBRARIES[] = {
    "libnvinfer.so.11",
    "libnvinfer_lean.so.11",
    "libnvinfer_dispatch.so.11",
    "libtensorrt_rtx.so.1",
};
#else
#error "registration on load knows the IPluginRegistry layouts of TensorRT 10 and 11 only"
#endif

// Never destroyed (and the library is linked -z nodelete): a registry may hold it to the end.
AxialAttentionPluginCreator& theCreator()
{
    static auto* creator = new AxialAttentionPluginCreator();
    return *creator;
}

// The registry the constructor registered the creator with (nullptr: none, or taken back).
std::atomic<nvinfer1::IPluginRegistry*> gRegisteredOnLoad{nullptr};

// The plugin registry of a TensorRT library already in the process, or nullptr. Looked up by
// soname without loading anything (RTLD_NOLOAD): that finds libraries linked by the application
// (trtexec, tritonserver's backend) and those Python bindings load RTLD_LOCAL alike.
nvinfer1::IPluginRegistry* loadedRegistry() noexcept
{
    for (char const* library : kTENSORRT_LIBRARIES)
    {
        void* handle = dlopen(library, RTLD_LAZY | RTLD_NOLOAD);
        if (handle == nullptr)
        {
            continue;
        }
        void* symbol = dlsym(handle, "getPluginRegistry");
        dlclose(handle); // drops only the reference RTLD_NOLOAD took
        if (symbol != nullptr)
        {
            return reinterpret_cast<GetPluginRegistryFn>(symbol)();
        }
    }
    return nullptr;
}

__attribute__((constructor)) void registerOnLoad() noexcept
{
    nvinfer1::IPluginRegistry* registry = loadedRegistry();
    if (registry != nullptr && registry->registerCreator(theCreator(), kPLUGIN_NAMESPACE))
    {
        gRegisteredOnLoad.store(registry);
    }
}

} // namespace
} // namespace axial_deploy

extern "C" AXIAL_ATTENTION_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    axial_deploy::gLoggerFinder = finder;
}

extern "C" AXIAL_ATTENTION_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    using namespace axial_deploy;
    // loadLibrary registers what this returns: take back the constructor's registration first.
    if (nvinfer1::IPluginRegistry* registry = gRegisteredOnLoad.exchange(nullptr))
    {
        registry->deregisterCreator(theCreator());
    }
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&theCreator()};
    nbCreators = 1;
    return creators;
}
