package import CaptureCore
package import CFFmpeg

/// One AVPacket. Owners make it once and reuse it for every packet (av_packet_unref
/// between uses, or pointing it at bytes they own), so the per-packet paths allocate
/// nothing; av_packet_free at the end also drops a reference it still holds.
package struct FFPacket: ~Copyable {
    package let raw: UnsafeMutablePointer<AVPacket>

    package init() throws(CaptureError) {
        guard let packet = av_packet_alloc() else { throw outOfMemory("av_packet_alloc") }
        raw = packet
    }

    deinit {
        var packet: UnsafeMutablePointer<AVPacket>? = raw
        av_packet_free(&packet)
    }
}

/// Packets that must outlive the reused packet they came out of (an export's mix
/// segment, encoded on a worker and written later by the muxing thread), each a new
/// reference to the same data (no copy); all freed with the list. A class, not a
/// noncopyable struct, so it can sit in an array, a dictionary or a result handed
/// between threads (Swift's collections need copyable elements).
package final class FFPacketList {
    private var packets: [UnsafeMutablePointer<AVPacket>] = []

    package init() {}

    package var count: Int { packets.count }

    /// Keeps a new reference to `packet`'s data and properties; `packet` stays the caller's.
    package func append(referencing packet: UnsafePointer<AVPacket>) throws(CaptureError) {
        guard let copy = av_packet_clone(packet) else { throw outOfMemory("av_packet_clone") }
        packets.append(copy)
    }

    /// The packets in the order they were appended; they stay the list's (a muxer's
    /// av_interleaved_write_frame takes the reference it is given and leaves the
    /// packet blank, which the list then frees like any other).
    package func forEach<E: Error>(_ body: (UnsafeMutablePointer<AVPacket>) throws(E) -> Void) throws(E) {
        for packet in packets { try body(packet) }
    }

    deinit {
        for packet in packets {
            var p: UnsafeMutablePointer<AVPacket>? = packet
            av_packet_free(&p)
        }
    }
}
