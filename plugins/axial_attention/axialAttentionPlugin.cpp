/*
 * TensorRT glue of the AxialAttention plugin: IPluginV3 + creator + the library entry points
 * (getCreators, setLoggerFinder) that IPluginRegistry::loadLibrary, Python
 * registry.load_library and trtexec --dynamicPlugins look up. Never throws across the ABI.
 */
#include "axialAttentionPlugin.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <exception>
#include <sstream>
#include <utility>

namespace axial_deploy
{
namespace
{
constexpr char const* kPLUGIN_NAME = "AxialAttention";
constexpr char const* kPLUGIN_VERSION = "1";
constexpr char const* kPLUGIN_NAMESPACE = "axial_deploy";

nvinfer1::ILoggerFinder* gLoggerFinder = nullptr;

void logMessage(nvinfer1::ILogger::Severity severity, std::string const& msg) noexcept
{
    nvinfer1::ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
    if (logger != nullptr)
    {
        logger->log(severity, ("AxialAttention plugin: " + msg).c_str());
    }
}

void logError(std::string const& msg) noexcept
{
    logMessage(nvinfer1::ILogger::Severity::kERROR, msg);
}

// Field names and types exactly as in AxialAttention_PluginConfig.yaml (tests/test_plugin_glue.py
// parses these PluginField lines and compares them to the spec).
std::vector<nvinfer1::PluginField> specFields()
{
    using nvinfer1::PluginField;
    using nvinfer1::PluginFieldType;
    return {
        PluginField("axis", nullptr, PluginFieldType::kINT32, 1),
        PluginField("num_heads", nullptr, PluginFieldType::kINT32, 1),
        PluginField("key_depth", nullptr, PluginFieldType::kINT32, 1),
        PluginField("value_depth", nullptr, PluginFieldType::kINT32, 1),
        PluginField("span", nullptr, PluginFieldType::kINT32, 1),
        PluginField("table_length", nullptr, PluginFieldType::kINT32, 1),
        PluginField("rel_q", nullptr, PluginFieldType::kFLOAT32, 0),
        PluginField("rel_k", nullptr, PluginFieldType::kFLOAT32, 0),
        PluginField("rel_v", nullptr, PluginFieldType::kFLOAT32, 0),
        PluginField("logit_scale", nullptr, PluginFieldType::kFLOAT32, 0),
        PluginField("out_bias", nullptr, PluginFieldType::kFLOAT32, 0),
    };
}

bool isSupportedType(nvinfer1::DataType type)
{
    return type == nvinfer1::DataType::kFLOAT || type == nvinfer1::DataType::kHALF;
}
} // namespace

// ---------------------------------------------------------------- plugin

AxialAttentionPlugin::AxialAttentionPlugin(AxialAttentionConfig config)
    : mConfig(std::move(config))
{
    std::ostringstream id;
    id << "axis=" << mConfig.axis << ";G=" << mConfig.numHeads << ";Dq=" << mConfig.keyDepth
       << ";Dv=" << mConfig.valueDepth << ";span=" << mConfig.span << ";T=" << mConfig.tableLength;
    mTimingCacheId = id.str();

    using nvinfer1::PluginField;
    using nvinfer1::PluginFieldType;
    auto i32 = [](char const* name, int32_t const* v) { return PluginField(name, v, PluginFieldType::kINT32, 1); };
    auto f32 = [](char const* name, std::vector<float> const& v) {
        return PluginField(name, v.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(v.size()));
    };
    mSerialized = {i32("axis", &mConfig.axis), i32("num_heads", &mConfig.numHeads),
        i32("key_depth", &mConfig.keyDepth), i32("value_depth", &mConfig.valueDepth), i32("span", &mConfig.span),
        i32("table_length", &mConfig.tableLength), f32("rel_q", mConfig.relQ), f32("rel_k", mConfig.relK),
        f32("rel_v", mConfig.relV), f32("logit_scale", mConfig.logitScale), f32("out_bias", mConfig.outBias)};
    mSerializedCollection.nbFields = static_cast<int32_t>(mSerialized.size());
    mSerializedCollection.fields = mSerialized.data();
}

AxialAttentionPlugin::~AxialAttentionPlugin()
{
    freeTables();
}

nvinfer1::IPluginCapability* AxialAttentionPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* AxialAttentionPlugin::clone() noexcept
{
    try
    {
        // Deep copy of the host tables; the clone uploads its own device copy on first use.
        return new AxialAttentionPlugin(mConfig);
    }
    catch (std::exception const& e)
    {
        logError(std::string("clone failed: ") + e.what());
        return nullptr;
    }
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
    nvinfer1::DynamicPluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    if (nbInputs != 1 || nbOutputs != 1)
    {
        logError("expects 1 input (qkv) and 1 output (y)");
        return -1;
    }
    AxialAttentionParams params{};
    if (!makeParams(in[0].max, in[0].desc.type, params))
    {
        return -1;
    }
    AxialAttentionStatus const status = axial_attention_check(&params);
    if (status != AXIAL_ATTENTION_SUCCESS)
    {
        logError(std::string("configurePlugin: ") + axial_attention_status_string(status));
        return -1;
    }
    return 0;
}

int32_t AxialAttentionPlugin::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
    nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != 1 || nbOutputs != 1)
    {
        return -1;
    }
    outputTypes[0] = inputTypes[0]; // y has the dtype of qkv
    return 0;
}

int32_t AxialAttentionPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /* shapeInputs */, int32_t /* nbShapeInputs */, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != 1 || nbOutputs != 1 || inputs[0].nbDims != 4)
    {
        logError("expects one 4-D NCHW input qkv and one output");
        return -1;
    }
    nvinfer1::DimsExprs const& qkv = inputs[0];
    int64_t const expected
        = static_cast<int64_t>(mConfig.numHeads) * (2 * static_cast<int64_t>(mConfig.keyDepth) + mConfig.valueDepth);
    if (qkv.d[1]->isConstant() && qkv.d[1]->getConstantValue() != expected)
    {
        std::ostringstream msg;
        msg << "qkv has " << qkv.d[1]->getConstantValue() << " channels but num_heads * (2 * key_depth + "
            << "value_depth) = " << expected;
        logError(msg.str());
        return -1;
    }
    outputs[0].nbDims = 4;
    outputs[0].d[0] = qkv.d[0];
    outputs[0].d[1] = exprBuilder.constant(static_cast<int64_t>(mConfig.numHeads) * mConfig.valueDepth);
    outputs[0].d[2] = qkv.d[2];
    outputs[0].d[3] = qkv.d[3];
    return 0;
}

bool AxialAttentionPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > 1)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != nvinfer1::TensorFormat::kLINEAR || !isSupportedType(desc.type))
    {
        return false;
    }
    return pos == 0 || desc.type == inOut[0].desc.type; // y matches qkv
}

int32_t AxialAttentionPlugin::getNbOutputs() const noexcept
{
    return 1;
}

size_t AxialAttentionPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /* outputs */, int32_t /* nbOutputs */) const noexcept
{
    AxialAttentionParams params{};
    if (nbInputs != 1 || !makeParams(inputs[0].max, inputs[0].desc.type, params))
    {
        return 0;
    }
    return axial_attention_workspace_size(&params); // largest shape of the profile
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
    nvinfer1::PluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    if (nbInputs != 1 || nbOutputs != 1)
    {
        return -1;
    }
    AxialAttentionParams params{};
    if (!makeParams(in[0].dims, in[0].type, params))
    {
        return -1;
    }
    AxialAttentionStatus const status = axial_attention_check(&params);
    if (status != AXIAL_ATTENTION_SUCCESS)
    {
        logError(std::string("onShapeChange: ") + axial_attention_status_string(status));
        return -1;
    }
    return 0;
}

int32_t AxialAttentionPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /* outputDesc */, void const* const* inputs, void* const* outputs,
    void* workspace, cudaStream_t stream) noexcept
{
    AxialAttentionParams params{};
    if (!makeParams(inputDesc[0].dims, inputDesc[0].type, params) || !uploadTables())
    {
        return -1;
    }
    size_t const workspaceBytes = axial_attention_workspace_size(&params);
    AxialAttentionStatus const status = axial_attention_enqueue(
        &params, inputs[0], &mTables, outputs[0], workspace, workspaceBytes, static_cast<void*>(stream));
    if (status != AXIAL_ATTENTION_SUCCESS)
    {
        logError(std::string("enqueue: ") + axial_attention_status_string(status));
        return -1;
    }
    return 0;
}

nvinfer1::IPluginV3* AxialAttentionPlugin::attachToContext(nvinfer1::IPluginResourceContext* /* context */) noexcept
{
    return clone(); // no per-context resources beyond the tables, which each instance owns
}

nvinfer1::PluginFieldCollection const* AxialAttentionPlugin::getFieldsToSerialize() noexcept
{
    return &mSerializedCollection;
}

bool AxialAttentionPlugin::makeParams(
    nvinfer1::Dims const& dims, nvinfer1::DataType type, AxialAttentionParams& params) const
{
    if (dims.nbDims != 4)
    {
        logError("qkv must be 4-D NCHW");
        return false;
    }
    if (!isSupportedType(type))
    {
        logError("qkv must be FP32 or FP16");
        return false;
    }
    params.batch = static_cast<int32_t>(dims.d[0]);
    params.height = static_cast<int32_t>(dims.d[2]);
    params.width = static_cast<int32_t>(dims.d[3]);
    params.axis = mConfig.axis;
    params.num_heads = mConfig.numHeads;
    params.key_depth = mConfig.keyDepth;
    params.value_depth = mConfig.valueDepth;
    params.span = mConfig.span;
    params.table_length = mConfig.tableLength;
    params.dtype = type == nvinfer1::DataType::kHALF ? AXIAL_ATTENTION_FLOAT16 : AXIAL_ATTENTION_FLOAT32;
    return true;
}

bool AxialAttentionPlugin::uploadTables() noexcept
{
    if (mDeviceTables != nullptr)
    {
        return true;
    }
    std::vector<float> const* tables[] = {
        &mConfig.relQ, &mConfig.relK, &mConfig.relV, &mConfig.logitScale, &mConfig.outBias};
    size_t total = 0;
    for (auto const* t : tables)
    {
        total += t->size();
    }
    void* device = nullptr;
    if (cudaMalloc(&device, total * sizeof(float)) != cudaSuccess)
    {
        logError("cudaMalloc of the constant tables failed");
        return false;
    }
    mDeviceTables = static_cast<float*>(device);
    float const* starts[5] = {};
    size_t offset = 0;
    for (size_t i = 0; i < 5; ++i)
    {
        // Synchronous copy: happens once per instance, before its first launch.
        if (cudaMemcpy(mDeviceTables + offset, tables[i]->data(), tables[i]->size() * sizeof(float),
                cudaMemcpyHostToDevice)
            != cudaSuccess)
        {
            logError("copying the constant tables to the GPU failed");
            freeTables();
            return false;
        }
        starts[i] = mDeviceTables + offset;
        offset += tables[i]->size();
    }
    mTables = AxialAttentionTables{starts[0], starts[1], starts[2], starts[3], starts[4]};
    return true;
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
    : mFields(specFields())
{
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

namespace
{
// Reads every spec field from fc into config; returns "" or an error naming the field.
std::string readFields(nvinfer1::PluginFieldCollection const* fc, AxialAttentionConfig& config)
{
    if (fc == nullptr)
    {
        return "no fields given";
    }
    struct IntField
    {
        char const* name;
        int32_t* value;
        bool seen;
    };
    struct FloatField
    {
        char const* name;
        std::vector<float>* value;
        bool seen;
    };
    IntField ints[] = {{"axis", &config.axis, false}, {"num_heads", &config.numHeads, false},
        {"key_depth", &config.keyDepth, false}, {"value_depth", &config.valueDepth, false},
        {"span", &config.span, false}, {"table_length", &config.tableLength, false}};
    FloatField floats[] = {{"rel_q", &config.relQ, false}, {"rel_k", &config.relK, false},
        {"rel_v", &config.relV, false}, {"logit_scale", &config.logitScale, false},
        {"out_bias", &config.outBias, false}};
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& f = fc->fields[i];
        if (f.name == nullptr)
        {
            continue;
        }
        bool known = false;
        for (auto& field : ints)
        {
            if (std::strcmp(f.name, field.name) == 0)
            {
                if (f.type != nvinfer1::PluginFieldType::kINT32 || f.length != 1 || f.data == nullptr)
                {
                    return std::string("field '") + field.name + "' must be one kINT32";
                }
                *field.value = *static_cast<int32_t const*>(f.data);
                field.seen = known = true;
            }
        }
        for (auto& field : floats)
        {
            if (std::strcmp(f.name, field.name) == 0)
            {
                if (f.type != nvinfer1::PluginFieldType::kFLOAT32 || f.length < 0 || (f.length > 0 && f.data == nullptr))
                {
                    return std::string("field '") + field.name + "' must be kFLOAT32 values";
                }
                auto const* data = static_cast<float const*>(f.data);
                field.value->assign(data, data + f.length);
                field.seen = known = true;
            }
        }
        if (!known)
        {
            logMessage(nvinfer1::ILogger::Severity::kWARNING, std::string("ignoring unknown field '") + f.name + "'");
        }
    }
    for (auto const& field : ints)
    {
        if (!field.seen)
        {
            return std::string("missing required field '") + field.name + "'";
        }
    }
    for (auto const& field : floats)
    {
        if (!field.seen)
        {
            return std::string("missing required field '") + field.name + "'";
        }
    }
    return "";
}

// Checks the attribute values and the table lengths against the spec; "" or a message.
std::string validate(AxialAttentionConfig const& c)
{
    std::ostringstream msg;
    if (c.axis != 2 && c.axis != 3)
    {
        msg << "field 'axis' is " << c.axis << ", must be 2 (height) or 3 (width)";
    }
    else if (c.numHeads < 1)
    {
        msg << "field 'num_heads' is " << c.numHeads << ", must be >= 1";
    }
    else if (c.keyDepth < 1)
    {
        msg << "field 'key_depth' is " << c.keyDepth << ", must be >= 1";
    }
    else if (c.valueDepth < 1)
    {
        msg << "field 'value_depth' is " << c.valueDepth << ", must be >= 1";
    }
    else if (c.span < 0 || (c.span != 0 && c.span % 2 == 0))
    {
        msg << "field 'span' is " << c.span << ", must be 0 (global) or odd >= 1";
    }
    else if (c.tableLength < 1 || c.tableLength % 2 == 0)
    {
        msg << "field 'table_length' is " << c.tableLength << ", must be odd >= 1";
    }
    if (!msg.str().empty())
    {
        return msg.str();
    }
    int64_t const g = c.numHeads;
    int64_t const t = c.tableLength;
    struct Expected
    {
        char const* name;
        size_t actual;
        int64_t expected;
    };
    Expected const tables[] = {{"rel_q", c.relQ.size(), g * c.keyDepth * t},
        {"rel_k", c.relK.size(), g * c.keyDepth * t}, {"rel_v", c.relV.size(), g * c.valueDepth * t},
        {"logit_scale", c.logitScale.size(), g}, {"out_bias", c.outBias.size(), g * c.valueDepth}};
    for (auto const& e : tables)
    {
        if (static_cast<int64_t>(e.actual) != e.expected)
        {
            msg << "field '" << e.name << "' has " << e.actual << " values, expected " << e.expected;
            return msg.str();
        }
    }
    return "";
}
} // namespace

nvinfer1::IPluginV3* AxialAttentionPluginCreator::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /* phase */) noexcept
{
    try
    {
        AxialAttentionConfig config;
        std::string error = readFields(fc, config);
        if (error.empty())
        {
            error = validate(config);
        }
        if (!error.empty())
        {
            logError(std::string("createPlugin(") + (name != nullptr ? name : "") + "): " + error);
            return nullptr;
        }
        return new AxialAttentionPlugin(std::move(config));
    }
    catch (std::exception const& e)
    {
        logError(std::string("createPlugin failed: ") + e.what());
        return nullptr;
    }
}

} // namespace axial_deploy

// ---------------------------------------------------------------- library entry points

extern "C" AXIAL_ATTENTION_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    axial_deploy::gLoggerFinder = finder;
}

extern "C" AXIAL_ATTENTION_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static axial_deploy::AxialAttentionPluginCreator creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}
