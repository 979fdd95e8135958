// PulseAudio's asynchronous client API for Swift.
#ifndef CPULSE_SHIM_H
#define CPULSE_SHIM_H
#include <pulse/pulseaudio.h>

// PA_INVALID_INDEX is ((uint32_t) -1): Swift cannot import that macro.
static inline uint32_t cpulse_invalid_index(void) { return PA_INVALID_INDEX; }

#endif
