public import CaptureUplink
import Synchronization

/// Between a recording and its uplink: the spool writer hands each chunk in from its
/// queue from the first chunk on, which may be before the uplink exists (it needs the
/// channels the started session resolved). Those wait here until `attach`.
public final class ChunkRelay: Sendable {
    private let state = Mutex<(offer: (@Sendable (ChunkMetadata) -> Void)?, waiting: [ChunkMetadata])>((nil, []))

    public init() {}

    public func deliver(_ chunk: ChunkMetadata) {
        state.withLock { s in
            if let offer = s.offer { offer(chunk) } else { s.waiting.append(chunk) }
        }
    }

    /// From now on chunks go to `offer`; the ones that waited go first, in order.
    public func attach(_ offer: @escaping @Sendable (ChunkMetadata) -> Void) {
        state.withLock { s in
            s.offer = offer
            for chunk in s.waiting { offer(chunk) }
            s.waiting.removeAll()
        }
    }
}
