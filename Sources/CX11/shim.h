// Xlib, MIT-SHM, XFixes, RandR and Damage for Swift.
// Function-like macros do not import into Swift; their static inline twins live here.
#ifndef CX11_SHIM_H
#define CX11_SHIM_H
#include <X11/Xlib.h>
#include <X11/Xutil.h>
#include <X11/extensions/XShm.h>
#include <X11/extensions/Xfixes.h>
#include <X11/extensions/Xrandr.h>
#include <X11/extensions/Xdamage.h>
#include <sys/ipc.h>
#include <sys/shm.h>

static inline int cx11_destroy_image(XImage *image) { return XDestroyImage(image); }

/// Screen-size, CRTC and output changes of `root` arrive as events from now on.
static inline void cx11_watch_screen_layout(Display *display, Window root) {
    XRRSelectInput(display, root, RRScreenChangeNotifyMask | RRCrtcChangeNotifyMask | RROutputChangeNotifyMask);
}

#endif
