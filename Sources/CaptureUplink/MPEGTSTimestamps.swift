import CaptureCore

/// Where a chunk's media says it lies: the presentation timestamps of the PES packets that
/// start in an MPEG-TS stream (ISO/IEC 13818-1 §2.4.3, §2.4.3.6), read from the packet and
/// PES headers only (no demuxer, no decoder). The endpoint checks them against the chunk
/// header before it stores a chunk, so a client cannot declare one timeline and carry
/// another (the export is sized by the declared one).
public enum MPEGTSTimestamps {
    public static let packetBytes = 188
    /// PTS run at 90 kHz and wrap at 2^33 ticks (about 26.5 hours).
    public static let clockHz: Int64 = Ticks90k.hz
    public static let wrapTicks: Int64 = 1 << 33

    public enum Failure: Error, Equatable, Sendable {
        /// Not a whole number of 188-byte packets each starting with 0x47.
        case notTransportStream
        /// A PTS (or DTS) outside the window: its time (ns, as read modulo the wrap).
        case outside(ptsNs: Int64)
        /// Packets, but not one audio or video PES start with a timestamp: nothing to place.
        case noTimestamps
    }

    /// Checks that every PTS and DTS in `payload` lies in [startNs - toleranceNs, startNs +
    /// durationNs + toleranceNs], compared modulo the 33-bit wrap (a stream's clock restarts
    /// every 26.5 h), and that a non-empty payload has at least one. Returns how many
    /// timestamps were read.
    public static func check(_ payload: UnsafeRawBufferPointer, startNs: Int64, durationNs: Int64,
                             toleranceNs: Int64) -> Result<Int, Failure> {
        guard payload.count % packetBytes == 0 else { return .failure(.notTransportStream) }
        let windowStart = ticks(ns: startNs - toleranceNs)
        let windowLength = ticks(ns: durationNs + 2 * toleranceNs)
        var seen = 0
        var offset = 0
        while offset < payload.count {
            defer { offset += packetBytes }
            guard payload[offset] == 0x47 else { return .failure(.notTransportStream) }
            let unitStart = payload[offset + 1] & 0x40 != 0
            let control = (payload[offset + 3] >> 4) & 0x3
            guard unitStart, control & 0x1 != 0 else { continue }   // no PES starts here, or no payload
            var start = offset + 4
            if control & 0x2 != 0 { start += 1 + Int(payload[offset + 4]) }   // adaptation field
            let end = offset + packetBytes
            // PES: 00 00 01, stream id, length (2), flags (2), header length, then PTS (5 bytes).
            guard start + 14 <= end, payload[start] == 0, payload[start + 1] == 0, payload[start + 2] == 1 else { continue }
            let streamId = payload[start + 3]
            guard (0xC0...0xEF).contains(streamId) else { continue }   // audio and video streams only
            let flags = payload[start + 7]
            guard flags & 0x80 != 0 else { continue }   // no PTS
            var stamps = [start + 9]
            if flags & 0x40 != 0, start + 19 <= end { stamps.append(start + 14) }   // and a DTS
            for p in stamps {
                let ts = (Int64(payload[p] >> 1) & 0x7) << 30 | Int64(payload[p + 1]) << 22 | (Int64(payload[p + 2]) >> 1) << 15
                    | Int64(payload[p + 3]) << 7 | Int64(payload[p + 4]) >> 1
                seen += 1
                let distance = ((ts - windowStart) % wrapTicks + wrapTicks) % wrapTicks
                if distance > windowLength { return .failure(.outside(ptsNs: ts * 1_000_000_000 / clockHz)) }
            }
        }
        if seen == 0, !payload.isEmpty { return .failure(.noTimestamps) }
        return .success(seen)
    }

    /// `ns` on the 90 kHz clock, modulo the wrap. Not `Ticks90k(rounding:)`: this truncates
    /// through whole microseconds, safe for any Int64 (a client's header is untrusted), and the
    /// window it sizes is what endpoints have checked chunks against; changing it would move
    /// the edge of what they accept.
    static func ticks(ns: Int64) -> Int64 {
        // Whole seconds and the rest apart: no overflow for any Int64 ns.
        let us = ns / 1000
        let t = (us / 1_000_000) * clockHz + (us % 1_000_000) * clockHz / 1_000_000
        return (t % wrapTicks + wrapTicks) % wrapTicks
    }

    /// A PES header with `ptsNs` (for writers and tests): 14 bytes for a stream id.
    public static func pesHeader(streamId: UInt8, ptsNs: Int64) -> [UInt8] {
        let pts = ticks(ns: ptsNs)
        return [0, 0, 1, streamId, 0, 0, 0x80, 0x80, 5,
                UInt8(0x21 | ((pts >> 29) & 0x0E)), UInt8((pts >> 22) & 0xFF), UInt8(((pts >> 14) & 0xFE) | 1),
                UInt8((pts >> 7) & 0xFF), UInt8(((pts << 1) & 0xFE) | 1)]
    }
}
