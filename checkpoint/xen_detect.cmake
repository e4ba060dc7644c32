# Probe libxenguest's xc_domain_restore signature at configure time.
# Xen 4.22 appends `unsigned int memflags` after send_back_fd; 4.17 (Debian
# bookworm) has 12 arguments. Included from checkpoint/CMakeLists.txt after
# colo_checkpoint is defined:
#     include(${CMAKE_CURRENT_SOURCE_DIR}/xen_detect.cmake)
# Defines COLO_XC_RESTORE_MEMFLAGS=0|1 on colo_checkpoint (PRIVATE). Without
# the include, checkpoint/src/xen/helper_child.c falls back to the 4.17 form
# and its call fails to compile against 4.22 (never silently wrong).
include(CheckCSourceCompiles)
include(CMakePushCheckState)

cmake_push_check_state(RESET)
get_target_property(_colo_xen_inc PkgConfig::XEN INTERFACE_INCLUDE_DIRECTORIES)
if(_colo_xen_inc)
  set(CMAKE_REQUIRED_INCLUDES ${_colo_xen_inc})
endif()
set(CMAKE_REQUIRED_QUIET ON)
# Compile only: the probe asks about the prototype, not the library.
set(_colo_saved_tct "${CMAKE_TRY_COMPILE_TARGET_TYPE}")
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(_colo_xen_probe_head "
#include <stddef.h>
#include <xenctrl.h>
#include <xenguest.h>
int main(void)
{
    unsigned long s = 0, c = 0;
    return xc_domain_restore(NULL, 0, 1, 0, &s, 0, 0, &c, 0,
                             XC_STREAM_PLAIN, NULL, -1")
check_c_source_compiles("${_colo_xen_probe_head}, 0u);
}" COLO_XC_RESTORE_HAS_MEMFLAGS)
check_c_source_compiles("${_colo_xen_probe_head});
}" COLO_XC_RESTORE_IS_4_17)
cmake_pop_check_state()
set(CMAKE_TRY_COMPILE_TARGET_TYPE "${_colo_saved_tct}")

if(COLO_XC_RESTORE_HAS_MEMFLAGS)
  target_compile_definitions(colo_checkpoint PRIVATE COLO_XC_RESTORE_MEMFLAGS=1)
  message(STATUS "libxenguest: xc_domain_restore takes memflags (Xen >= 4.22)")
elseif(COLO_XC_RESTORE_IS_4_17)
  target_compile_definitions(colo_checkpoint PRIVATE COLO_XC_RESTORE_MEMFLAGS=0)
  message(STATUS "libxenguest: xc_domain_restore has the 4.17 signature")
else()
  message(FATAL_ERROR "libxenguest: unknown xc_domain_restore signature; "
                      "extend checkpoint/xen_detect.cmake")
endif()
