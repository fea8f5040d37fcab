/*
 * A minimal double of TensorRT 10's plugin registry, built as a shared library whose soname is
 * libnvinfer.so.10 and which exports getPluginRegistry, for tests/test_plugin_loading.py.
 *
 * Only for what TensorRT-RTX cannot stand in for: RTX's registry has the TensorRT 11.x vtable
 * (11 dropped the deprecated IPluginCreator methods), so a plugin built with 10.x headers must
 * find and call a 10.x-layout registry, and none runs here. True to the 10.x header
 * (NvInferRuntimeCommon.h): creators keyed by name, version and namespace; registerCreator refuses
 * a duplicate; loadLibrary dlopens the library, then registers what its getCreators returns and
 * fails (nullptr) when one of them is already registered, as TensorRT documents.
 */
#include <NvInferRuntime.h>
#include <NvInferVersion.h>
#include <dlfcn.h>

#include <cstring>
#include <string>
#include <tuple>
#include <vector>

namespace {
using namespace nvinfer1;

std::tuple<std::string, std::string, std::string> key(IPluginCreatorInterface const& creator) {
    auto const& v3 = static_cast<IPluginCreatorV3One const&>(creator);  // the plugin's kind
    return {v3.getPluginName(), v3.getPluginVersion(), v3.getPluginNamespace()};
}

class RegistryDouble : public IPluginRegistry {
public:
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const) noexcept override {
        for (auto* known : mCreators) {
            if (key(*known) == key(creator)) return false;
        }
        mCreators.push_back(&creator);
        return true;
    }
    bool deregisterCreator(IPluginCreatorInterface const& creator) noexcept override {
        for (auto it = mCreators.begin(); it != mCreators.end(); ++it) {
            if (*it == &creator) {
                mCreators.erase(it);
                return true;
            }
        }
        return false;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const numCreators) const noexcept override {
        *numCreators = static_cast<int32_t>(mCreators.size());
        return mCreators.data();
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* const name, AsciiChar const* const version,
                                        AsciiChar const* const ns) noexcept override {
        for (auto* known : mCreators) {
            if (key(*known) == std::make_tuple(std::string(name), std::string(version), std::string(ns))) return known;
        }
        return nullptr;
    }
    PluginLibraryHandle loadLibrary(AsciiChar const* pluginPath) noexcept override {
        void* handle = dlopen(pluginPath, RTLD_LAZY | RTLD_LOCAL);
        if (handle == nullptr) return nullptr;
        using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
        auto getCreators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
        if (getCreators == nullptr) return nullptr;
        int32_t count = 0;
        IPluginCreatorInterface* const* creators = getCreators(count);
        for (int32_t i = 0; i < count; ++i) {
            if (!registerCreator(*creators[i], "")) return nullptr;
        }
        return handle;
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}

    // Not used by the plugin: refused. The IPluginCreator (V1) methods exist in the 10.x
    // interface only (TensorRT 11 removed them), so the double builds against either.
#if NV_TENSORRT_MAJOR < 11
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override { return false; }
    IPluginCreator* const* getPluginCreatorList(int32_t* const numCreators) const noexcept override {
        *numCreators = 0;
        return nullptr;
    }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override {
        return nullptr;
    }
    bool deregisterCreator(IPluginCreator const&) noexcept override { return false; }
#endif
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool isParentSearchEnabled() const override { return false; }
    void setParentSearchEnabled(bool const) override {}
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override { return nullptr; }
    int32_t releasePluginResource(AsciiChar const*) noexcept override { return -1; }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const numCreators) noexcept override {
        return getAllCreators(numCreators);
    }

private:
    std::vector<IPluginCreatorInterface*> mCreators;
};

RegistryDouble gRegistry;
}  // namespace

extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept { return &gRegistry; }

// For the test (ctypes): how many creators match, and loadLibrary's success.
extern "C" __attribute__((visibility("default"))) int registry_double_count(char const* name) {
    int32_t count = 0;
    IPluginCreatorInterface* const* creators = gRegistry.getAllCreators(&count);
    int matches = 0;
    for (int32_t i = 0; i < count; ++i) matches += std::get<0>(key(*creators[i])) == name;
    return matches;
}
extern "C" __attribute__((visibility("default"))) int registry_double_load_library(char const* path) {
    return gRegistry.loadLibrary(path) != nullptr;
}
