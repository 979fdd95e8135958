// CaptureSpool: see the module's files.
