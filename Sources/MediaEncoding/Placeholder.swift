// MediaEncoding: see the module's files.
