/*
 * TensorRT glue of the AxialAttention plugin (spec: AxialAttention_PluginConfig.yaml).
 * Translates TensorRT's IPluginV3 calls into the C ABI of axialAttentionKernel.h; no math here.
 * One code path for the TensorRT 10.x and 11.x headers (the IPluginV3One* interfaces are unchanged).
 */
#ifndef AXIAL_ATTENTION_PLUGIN_H
#define AXIAL_ATTENTION_PLUGIN_H

#include <NvInferRuntime.h>

#include <string>
#include <vector>

#include "axialAttentionKernel.h"

namespace axial_deploy
{

// Host copy of the attributes and tables: what the creator validated and what serialization returns.
struct AxialAttentionConfig
{
    int32_t axis{0};
    int32_t numHeads{0};
    int32_t keyDepth{0};
    int32_t valueDepth{0};
    int32_t span{0};
    int32_t tableLength{0};
    std::vector<float> relQ;
    std::vector<float> relK;
    std::vector<float> relV;
    std::vector<float> logitScale;
    std::vector<float> outBias;
};

// The plugin's fields, in ONE table (axialAttentionPlugin.cpp, kFIELDS) that getFieldNames,
// createPlugin's reading and validation, and getFieldsToSerialize all iterate; it mirrors the
// attributes of AxialAttention_PluginConfig.yaml (tests/test_plugin_harness.py compares the two).
enum class FieldParity : int32_t
{
    kANY = 0,
    kODD = 1,         // odd values only
    kZERO_OR_ODD = 2, // 0 or odd
};

struct FieldSpec
{
    char const* name;
    nvinfer1::PluginFieldType type;                // kINT32 (one value) or kFLOAT32 (a table)
    int32_t AxialAttentionConfig::*scalar;         // kINT32: the attribute
    int32_t min;                                   // kINT32: allowed range and parity
    int32_t max;
    FieldParity parity;
    std::vector<float> AxialAttentionConfig::*table; // kFLOAT32: the table
    int32_t AxialAttentionConfig::*shape[3];         // kFLOAT32: its dims (int fields), nullptr-padded
};

// The table (for the harness and tests; count set to its length).
FieldSpec const* fieldSpecs(int32_t& count) noexcept;

class AxialAttentionPlugin : public nvinfer1::IPluginV3,
                             public nvinfer1::IPluginV3OneCore,
                             public nvinfer1::IPluginV3OneBuild,
                             public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit AxialAttentionPlugin(AxialAttentionConfig config);
    ~AxialAttentionPlugin() override;
    AxialAttentionPlugin(AxialAttentionPlugin const&) = delete;
    AxialAttentionPlugin& operator=(AxialAttentionPlugin const&) = delete;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
        int32_t nbInputs, int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getTimingCacheID() noexcept override;
    char const* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    // Checked kernel params for one qkv shape and dtype (and the y shape when given); throws a
    // message naming the problem (wrong rank, channels, dtype, sizes the kernel refuses).
    AxialAttentionParams makeParams(
        nvinfer1::Dims const& in, nvinfer1::DataType type, nvinfer1::Dims const* out, char const* where) const;
    // Copies the five tables to the GPU once per instance (outside enqueue); throws on failure.
    void uploadTables();
    void freeTables() noexcept;

    AxialAttentionConfig mConfig;
    std::vector<nvinfer1::PluginField> mSerialized;
    nvinfer1::PluginFieldCollection mSerializedCollection{};
    std::string mTimingCacheId;
    float* mDeviceTables{nullptr}; // one allocation holding the five tables back to back
    AxialAttentionTables mTables{};
};

class AxialAttentionPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    AxialAttentionPluginCreator();
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace axial_deploy

#endif // AXIAL_ATTENTION_PLUGIN_H
