// libwebsockets for Swift (the agent's uplink, Sources/WebSocketUplink).
#ifndef CWEBSOCKETS_SHIM_H
#define CWEBSOCKETS_SHIM_H
#include <libwebsockets.h>

/// LWS_PRE: the bytes lws needs free before every buffer given to lws_write (a
/// function-like macro, which Swift cannot import).
static inline size_t cws_pre(void) { return LWS_PRE; }

/// The sul (timer) of a loop lives first in a block whose second word points back
/// to its owner: the callback gets only the sul.
typedef struct cws_timer {
    lws_sorted_usec_list_t sul;
    void *owner;
} cws_timer;

static inline void *cws_timer_owner(lws_sorted_usec_list_t *sul) {
    return ((cws_timer *)sul)->owner;
}
#endif
