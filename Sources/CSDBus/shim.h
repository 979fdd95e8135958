// sd-bus (libsystemd) for Swift: the session bus the ScreenCast portal and the compositor
// are reached on. sd-bus needs no main loop of its own: the owner polls its fd.
// Everything used is non-variadic (message building with append_basic and containers),
// so the header imports as it is.
#ifndef CSDBUS_SHIM_H
#define CSDBUS_SHIM_H
#include <systemd/sd-bus.h>
#endif
