// libwebsockets for Swift (used by the uplink).
#ifndef CWEBSOCKETS_SHIM_H
#define CWEBSOCKETS_SHIM_H
#include <libwebsockets.h>
#endif
