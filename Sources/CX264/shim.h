// libx264 for Swift. Used directly (not through libavcodec) because only its own
// API takes per-macroblock "unchanged" hints (x264_image_properties_t.mb_info),
// which is how still parts of the desktop cost almost nothing to encode.
#ifndef CX264_SHIM_H
#define CX264_SHIM_H
#include <stdint.h>
#include <x264.h>

// x264_encoder_open is a macro (x264_encoder_open_<X264_BUILD>, a link-time API
// version check) and does not import.
static inline x264_t *cx264_encoder_open(x264_param_t *param) { return x264_encoder_open(param); }

// Constants spelled as expressions, imported here with fixed types.
static inline uint8_t cx264_mbinfo_constant(void) { return (uint8_t)X264_MBINFO_CONSTANT; }
static inline int cx264_keyint_max_infinite(void) { return X264_KEYINT_MAX_INFINITE; }
static inline int cx264_build(void) { return X264_BUILD; }

#endif
