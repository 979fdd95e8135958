/// The one audio format that flows between capture and encoder: 48 kHz,
/// stereo, interleaved 32-bit float, in blocks of `AudioFormat.blockFrames`
/// frames (one AAC-LC frame).
public enum AudioFormat {
    public static let sampleRate = 48_000
    public static let channels = 2
    public static let blockFrames = 1024
    public static var blockSamples: Int { blockFrames * channels }
}

/// A view of 32-bit pixels in memory (BGRX, little endian, as XShm delivers
/// them at depth 24). It does not own the memory: whoever hands it out says
/// how long it stays valid.
public struct PixelBufferView {
    public var baseAddress: UnsafeMutableRawPointer
    public var width: Int
    public var height: Int
    public var bytesPerRow: Int

    public init(baseAddress: UnsafeMutableRawPointer, width: Int, height: Int, bytesPerRow: Int) {
        self.baseAddress = baseAddress
        self.width = width
        self.height = height
        self.bytesPerRow = bytesPerRow
    }
}
