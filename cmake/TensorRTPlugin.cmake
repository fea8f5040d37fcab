# TensorRT plugin glue of AxialAttention. Included at the end of the root CMakeLists.txt, after
# the target axial_attention_kernels (static, PIC CUDA library) is defined.
#   headers + kernels target (libnvinfer linked when found) -> SHARED library axial_attention_plugin
#   headers, no kernels target (no nvcc)                   -> OBJECT library: compile-only check
#   nothing found                          -> skipped, with one message saying how to point at TensorRT
# Point CMake at TensorRT with -DTENSORRT_ROOT=/opt/TensorRT-10.x (or env TENSORRT_ROOT), or with
# -DTENSORRT_INCLUDE_DIR=... [-DTENSORRT_LIB_DIR=...]. JetPack's /usr/include/<arch>-linux-gnu is searched.

set(TENSORRT_ROOT "$ENV{TENSORRT_ROOT}" CACHE PATH "TensorRT install root (include/ and lib/)")
set(TENSORRT_INCLUDE_DIR "" CACHE PATH "Directory holding NvInfer.h")
set(TENSORRT_LIB_DIR "" CACHE PATH "Directory holding libnvinfer")

set(_axial_plugin_dir "${CMAKE_CURRENT_LIST_DIR}/../plugins/axial_attention")
set(_axial_plugin_sources "${_axial_plugin_dir}/axialAttentionPlugin.cpp")

find_path(_axial_trt_include NvInferRuntime.h
    HINTS ${TENSORRT_INCLUDE_DIR} ${TENSORRT_ROOT}
    PATH_SUFFIXES include
    PATHS /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu /usr/local/TensorRT/include
    NO_CACHE)
if(TENSORRT_INCLUDE_DIR AND NOT _axial_trt_include)
    message(WARNING "TENSORRT_INCLUDE_DIR=${TENSORRT_INCLUDE_DIR} has no NvInferRuntime.h")
endif()

if(NOT _axial_trt_include)
    message(STATUS "AxialAttention TensorRT plugin: skipped (TensorRT headers not found); "
        "set -DTENSORRT_ROOT=<TensorRT dir> or -DTENSORRT_INCLUDE_DIR=<dir> -DTENSORRT_LIB_DIR=<dir>")
    return()
endif()

# Version from NvInferVersion.h (TRT_MAJOR_ENTERPRISE in 10.x, NV_TENSORRT_MAJOR in older/newer files).
set(_axial_trt_version "unknown")
file(STRINGS "${_axial_trt_include}/NvInferVersion.h" _axial_trt_defines
    REGEX "#define (NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? +[0-9]+")
foreach(_part MAJOR MINOR PATCH)
    foreach(_line ${_axial_trt_defines})
        if(_line MATCHES "#define (NV_TENSORRT|TRT)_${_part}(_ENTERPRISE)? +([0-9]+)")
            set(_axial_trt_${_part} "${CMAKE_MATCH_3}")
            break()
        endif()
    endforeach()
endforeach()
if(DEFINED _axial_trt_MAJOR)
    set(_axial_trt_version "${_axial_trt_MAJOR}.${_axial_trt_MINOR}.${_axial_trt_PATCH}")
endif()
message(STATUS "AxialAttention TensorRT plugin: TensorRT ${_axial_trt_version} headers in ${_axial_trt_include}")

find_library(_axial_nvinfer NAMES nvinfer nvinfer_10 nvinfer_11
    HINTS ${TENSORRT_LIB_DIR} ${TENSORRT_ROOT}
    PATH_SUFFIXES lib lib64
    PATHS /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu
    NO_CACHE)
find_package(CUDAToolkit QUIET)
if(NOT CUDAToolkit_FOUND)
    message(STATUS "AxialAttention TensorRT plugin: skipped (CUDA toolkit headers not found; "
        "the glue needs cuda_runtime_api.h)")
    return()
endif()

if(TARGET axial_attention_kernels)
    add_library(axial_attention_plugin SHARED ${_axial_plugin_sources})
    target_include_directories(axial_attention_plugin PRIVATE "${_axial_plugin_dir}")
    target_include_directories(axial_attention_plugin SYSTEM PRIVATE "${_axial_trt_include}")
    # The kernels target brings the CUDA runtime (PUBLIC CUDA::cudart_static); linking the shared
    # cudart here as well would put two runtimes in one process, so it is not added again.
    target_link_libraries(axial_attention_plugin PRIVATE axial_attention_kernels)
    # The glue calls TensorRT only through the headers' inline code and virtual interfaces (no
    # libnvinfer symbol), so it links without libnvinfer; it is linked where found all the same.
    if(_axial_nvinfer)
        target_link_libraries(axial_attention_plugin PRIVATE "${_axial_nvinfer}")
    endif()
    target_compile_features(axial_attention_plugin PRIVATE cxx_std_17)
    # Only getCreators / setLoggerFinder (and the kernel's C ABI) are exported: cudart_static's
    # symbols stay hidden, as in the kernel library, so the plugin's CUDA runtime cannot clash
    # with the application's (torch, cuda-python) when both are loaded.
    set_target_properties(axial_attention_plugin PROPERTIES
        CXX_VISIBILITY_PRESET hidden
        VISIBILITY_INLINES_HIDDEN ON
        LIBRARY_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/lib")
    # -z nodelete: the creator registered when the library is opened (axialAttentionPlugin.cpp)
    # stays valid even if a consumer dlcloses it. dlopen/dlsym find the loaded TensorRT library.
    target_link_libraries(axial_attention_plugin PRIVATE ${CMAKE_DL_LIBS})
    target_link_options(axial_attention_plugin PRIVATE
        "LINKER:--exclude-libs,libcudart_static.a" "LINKER:--no-undefined" "LINKER:-z,nodelete")
    if(_axial_nvinfer)
        message(STATUS "AxialAttention TensorRT plugin: building lib/libaxial_attention_plugin.so "
            "against ${_axial_nvinfer}")
    else()
        message(STATUS "AxialAttention TensorRT plugin: building lib/libaxial_attention_plugin.so "
            "(libnvinfer not found; the glue does not need it to link)")
    endif()
else()
    add_library(axial_attention_plugin_check OBJECT ${_axial_plugin_sources})
    target_include_directories(axial_attention_plugin_check PRIVATE "${_axial_plugin_dir}")
    target_include_directories(axial_attention_plugin_check SYSTEM PRIVATE "${_axial_trt_include}"
        ${CUDAToolkit_INCLUDE_DIRS})
    target_compile_features(axial_attention_plugin_check PRIVATE cxx_std_17)
    target_compile_options(axial_attention_plugin_check PRIVATE
        $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra>)
    message(STATUS "AxialAttention TensorRT plugin: compile-only check of the glue (target "
        "axial_attention_kernels not defined: no nvcc); no plugin library is built")
endif()
