// CapturePipeline: see the module's files.
