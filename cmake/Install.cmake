# Install rules of axial-deploy, relative to the install prefix = the root of the Python
# packages (scikit-build-core's wheel platlib, wheel.install-dir = ""):
#   axial_deploy/data/AxialAttention_PluginConfig.yaml  the operator spec (axial_deploy/op_spec.py)
#   axial_deploy/lib/libaxial_attention_capi.so         the kernel C ABI (ctypes, kernel.py)
#   axial_deploy/lib/libaxial_attention_plugin.so       the TensorRT plugin, where TensorRT was found
#   axial_deploy/lib/libaxial_attention_cpu.so          the CPU AxialAttention op (ort_ops.py)
#   axial_deploy/lib/libaxial_calibration.so            calibration histograms (ranges.py)
# axial_deploy/native.py looks for the libraries there (after its environment overrides).
# A developer's `make plugins` does not install: the libraries stay in build/lib/, where
# native.py finds them in a checkout.

set(AXIAL_DEPLOY_PACKAGE_DIR "axial_deploy" CACHE STRING
    "Install destination of the Python package, relative to the install prefix")

install(FILES "${CMAKE_CURRENT_SOURCE_DIR}/plugins/axial_attention/AxialAttention_PluginConfig.yaml"
        DESTINATION "${AXIAL_DEPLOY_PACKAGE_DIR}/data")

set(_axial_native_installed "")
foreach(_axial_target axial_attention_capi axial_attention_plugin axial_attention_cpu
                      axial_calibration)
  if(TARGET ${_axial_target})
    install(TARGETS ${_axial_target} LIBRARY DESTINATION "${AXIAL_DEPLOY_PACKAGE_DIR}/lib")
    list(APPEND _axial_native_installed ${_axial_target})
  endif()
endforeach()

if(SKBUILD)
  if(_axial_native_installed)
    message(STATUS "axial-deploy: the wheel carries ${_axial_native_installed} (axial_deploy/lib/)")
  else()
    # Said once at build time; at run time `axial-deploy doctor` says the same.
    message(STATUS "axial-deploy: the wheel is pure Python (no native libraries). To add them: "
        "install the CUDA toolkit (nvcc) [and TensorRT, -DTENSORRT_ROOT=...] and reinstall, or "
        "run `make plugins` in a checkout and set AXIAL_DEPLOY_KERNEL_LIB / AXIAL_DEPLOY_PLUGIN_LIB")
  endif()
endif()
