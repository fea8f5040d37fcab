# CPU libraries of axial-deploy (plain C++17 + threads, no CUDA: they build on every machine).
# Included by the root CMakeLists.txt.
#   build/lib/libaxial_attention_cpu.so  the native CPU AxialAttention op (C ABI
#                                        plugins/axial_attention/axialAttentionCpu.h), used by the
#                                        ONNX Runtime custom op in axial_deploy/ort_ops.py
#   build/lib/libaxial_calibration.so    calibration histograms (calibration/csrc/), used by
#                                        calibration/ranges.py
# Both are built for the machine that builds them (-march=native where the compiler has it): they
# are built where they run (`make cpu-libs`, run by `make test`). Turn that off for a portable
# build with -DAXIAL_DEPLOY_CPU_NATIVE=OFF.
# A wheel (scikit-build-core sets SKBUILD) may run on another CPU: portable by default there.
if(SKBUILD)
  set(_axial_cpu_native_default OFF)
else()
  set(_axial_cpu_native_default ON)
endif()
option(AXIAL_DEPLOY_CPU_NATIVE "Build the CPU libraries for this machine's instruction set"
       ${_axial_cpu_native_default})
find_package(Threads REQUIRED)
include(CheckCXXCompilerFlag)
check_cxx_compiler_flag(-march=native AXIAL_DEPLOY_HAS_MARCH_NATIVE)

set(_axial_cpu_options -O3 -fno-math-errno -Wall -Wextra -Wshadow)
if(AXIAL_DEPLOY_CPU_NATIVE AND AXIAL_DEPLOY_HAS_MARCH_NATIVE)
  list(APPEND _axial_cpu_options -march=native)
endif()
if(AXIAL_ATTENTION_WERROR)
  list(APPEND _axial_cpu_options -Werror)
endif()

function(axial_deploy_cpu_library name)
  add_library(${name} SHARED ${ARGN})
  target_link_libraries(${name} PRIVATE Threads::Threads)
  target_compile_options(${name} PRIVATE ${_axial_cpu_options})
  set_target_properties(${name} PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/lib)
  target_link_options(${name} PRIVATE "LINKER:--no-undefined")
endfunction()

axial_deploy_cpu_library(axial_attention_cpu
  ${CMAKE_CURRENT_LIST_DIR}/../plugins/axial_attention/axialAttentionCpu.cpp)
target_include_directories(axial_attention_cpu PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/../plugins/axial_attention)

axial_deploy_cpu_library(axial_calibration
  ${CMAKE_CURRENT_LIST_DIR}/../calibration/csrc/calibrationHistogram.cpp)
target_include_directories(axial_calibration PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../calibration/csrc)
message(STATUS "axial-deploy: building the CPU libraries axial_attention_cpu and axial_calibration")
