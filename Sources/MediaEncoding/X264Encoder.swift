internal import CX264
import CaptureCore

/// An open libx264 encoder (x264_t) and the two macroblock hint arrays it is handed in
/// turn (`x264_picture_t.prop.mb_info`; see `VideoEncoder`).
///
/// The arrays belong here, not to the encoder's user, because x264 may still read one
/// after x264_encoder_encode has returned: with sliced threads the deblocking of a frame
/// finishes in the slice threads, which x264 waits for only at the start of the next
/// x264_encoder_encode or in x264_encoder_close. `deinit`'s body closes the encoder;
/// the arrays, stored properties, are freed only after it, so no thread is left reading
/// freed memory, whatever order the user's own properties go in.
struct X264Encoder: ~Copyable {
    let handle: OpaquePointer
    let macroblockCount: Int
    /// Both arrays in one allocation, `macroblockCount` bytes each, all 0 ("changed") at first.
    private let hintStorage: OwnedBuffer<UInt8>

    /// Opens an encoder with `parameters` (x264 may adjust them). x264 says why it failed on
    /// stderr only, so the error is `failure`, which should say what was asked for.
    init(parameters: inout x264_param_t, macroblockCount: Int, failure: @autoclosure () -> String) throws(CaptureError) {
        self.macroblockCount = macroblockCount
        hintStorage = OwnedBuffer(count: 2 * macroblockCount, repeating: 0)
        guard let handle = cx264_encoder_open(&parameters) else { throw CaptureError(.encoderError, failure()) }
        self.handle = handle
    }

    /// Hint array 0 or 1.
    func hints(_ index: Int) -> UnsafeMutablePointer<UInt8> {
        hintStorage.pointer + index * macroblockCount
    }

    deinit {
        x264_encoder_close(handle)   // waits for x264's threads: nothing reads the hints after this
    }
}
