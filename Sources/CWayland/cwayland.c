#include "CWayland.h"

const struct wl_interface *cwl_output_interface(void) { return &wl_output_interface; }
const struct wl_interface *cwl_xdg_output_manager_interface(void) { return &zxdg_output_manager_v1_interface; }
