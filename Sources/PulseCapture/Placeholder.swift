// PulseCapture: see the module's files.
