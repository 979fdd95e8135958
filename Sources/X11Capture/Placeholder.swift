// X11Capture: see the module's files.
