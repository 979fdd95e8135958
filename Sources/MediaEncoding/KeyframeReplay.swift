/// The encoded frames of a still picture, kept so that later chunks can start
/// with the same bytes instead of x264 encoding the same IDR once per chunk.
///
/// Every chunk must start with an IDR, and on a still desktop that IDR is most
/// of the video's cost (~5 ms per 1080p picture with x264 ultrafast, against
/// nearly nothing for the skipped frames around it). When the picture has not
/// changed since x264's last IDR, the H.264 access units x264 produced from that
/// IDR on (the *chain*: the IDR, then P-frames 1, 2, ... after it, all of the
/// same unchanged picture) are a valid stream again from any later chunk start:
///
/// - Nothing in their bytes depends on time. Timestamps live in the MPEG-TS
///   PES headers, which the muxer writes from the packet's pts. x264 codes
///   picture order from frame_num (POC type 2, no B-frames), and frame_num
///   restarts at 0 with every IDR, so P-frame k of a chain always carries
///   frame_num k.
/// - Decoding the chain again gives the same pictures as the first time (same
///   bytes, decoded from an IDR, so with the same references), and those show
///   the current picture because nothing changed.
/// - idr_pic_id: H.264 (7.4.3) only asks two *consecutive* IDRs to differ. A
///   chain is replayed only when the previous frame was not an IDR, and x264
///   alternates the id with each IDR it codes; the chain always starts with x264's
///   latest IDR, so an IDR x264 codes right after a replayed one differs from it.
///
/// x264 is not told about replayed frames, so while a chain is being replayed
/// its state is that of the chain's last frame. Its next frame continues the
/// replayed stream correctly only if the replay has reached that frame
/// (`encoderInSync`); anywhere else the encoder must code an IDR.
///
/// Storage: one byte buffer that grows to the largest chain seen and is then
/// reused, and a fixed table of frame offsets; no allocation per frame.
///
/// Not thread-safe (owned by one `VideoEncoder`).
struct KeyframeReplay: ~Copyable {
    /// Longest chain kept (frames, the IDR included). A still chunk needs two or
    /// three (the IDR, a repeat or two, the chunk's last frame).
    static let maxFrames = 32

    private var storage: UnsafeMutableRawPointer
    private var capacity: Int
    /// Frame k occupies storage[offsets[k] ..< offsets[k + 1]].
    private let offsets: UnsafeMutablePointer<Int>
    /// Frames in the chain (0: none, nothing to replay).
    private(set) var frameCount = 0
    /// Whether the last frame x264 coded is the chain's last frame (x264 has
    /// coded nothing since that was not kept).
    private var encoderAtChainEnd = false
    /// Index of the chain frame sent last while replaying; nil when not replaying.
    private(set) var replayPosition: Int?

    init() {
        capacity = 64 * 1024
        storage = .allocate(byteCount: capacity, alignment: 64)
        offsets = .allocate(capacity: Self.maxFrames + 1)
        offsets.initialize(repeating: 0, count: Self.maxFrames + 1)
    }

    deinit {
        storage.deallocate()
        offsets.deallocate()
    }

    /// Whether the next frame x264 codes continues the stream sent so far: true
    /// unless a replay is under way and the stream sent has not reached the
    /// frame x264 coded last.
    var encoderInSync: Bool {
        guard let p = replayPosition else { return true }
        return p == frameCount - 1 && encoderAtChainEnd
    }

    /// The chain frame to send instead of encoding, or nil (encode with x264).
    /// `keyframe`: the frame must be an IDR (a chunk starts); `unchanged`: the
    /// picture is the one the frame sent last showed; `afterKeyframe`: the frame
    /// sent last was an IDR.
    mutating func nextReplayedFrame(keyframe: Bool, unchanged: Bool, afterKeyframe: Bool) -> Int? {
        guard unchanged, frameCount > 0 else { return nil }
        if keyframe {
            if afterKeyframe { return nil }
            replayPosition = 0
            return 0
        }
        guard let p = replayPosition, p + 1 < frameCount else { return nil }
        replayPosition = p + 1
        return p + 1
    }

    /// The bytes of chain frame `k` (valid until the chain changes).
    func frame(_ k: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage + offsets[k], count: offsets[k + 1] - offsets[k])
    }

    /// Records what x264 just coded (the caller made it an IDR whenever
    /// `encoderInSync` was false). `keyframe`: it was an IDR, and a new chain
    /// starts with it, whatever the picture; otherwise `unchanged` says whether
    /// the picture is the chain's. An unchanged P-frame extends the chain when it
    /// directly follows the chain's last frame.
    mutating func encoded(_ bytes: UnsafeRawBufferPointer, keyframe: Bool, unchanged: Bool) {
        if keyframe {
            frameCount = 0
            replayPosition = nil
            encoderAtChainEnd = append(bytes)
            return
        }
        guard unchanged else {
            invalidate()
            return
        }
        let extends = frameCount > 0 && encoderAtChainEnd
            && (replayPosition == nil || replayPosition == frameCount - 1)
        replayPosition = nil
        encoderAtChainEnd = extends && append(bytes)
    }

    /// Forgets the chain (the picture changed).
    mutating func invalidate() {
        frameCount = 0
        encoderAtChainEnd = false
        replayPosition = nil
    }

    /// Appends a frame; false when the chain is full (it stays as it is).
    private mutating func append(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard frameCount < Self.maxFrames, bytes.count > 0 else { return false }
        let start = offsets[frameCount]
        let end = start + bytes.count
        if end > capacity {
            // Grows only when a bigger IDR than any before arrives.
            var newCapacity = capacity
            while newCapacity < end { newCapacity *= 2 }
            let grown = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 64)
            grown.copyMemory(from: storage, byteCount: start)
            storage.deallocate()
            storage = grown
            capacity = newCapacity
        }
        (storage + start).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        frameCount += 1
        offsets[frameCount] = end
        return true
    }
}
