import CFFmpeg
import CaptureCore
import FFmpegObjects
import Foundation
import LinuxSupport
import XCTest

/// The owners free what they own (a leak of one object per iteration would show in the
/// process's resident memory), a failure on the way throws instead of crashing, and a
/// muxer's file is complete once its owner is gone.
final class FFmpegObjectsTests: XCTestCase {
    static let iterations = 10_000
    /// Bytes each object makes FFmpeg allocate and write, so that 10,000 leaked ones
    /// would be at least 80 MB of resident memory.
    static let payload = 8 * 1024
    /// What the process may grow by while objects are made and dropped: 0 when run alone,
    /// the rest is room for other threads of a full test run. It is 400 bytes a round, and
    /// the smallest object here, an AVIOContext (~400 bytes with malloc's overhead), is
    /// made 4 times a round in its check, so even that leak shows.
    static let allowedGrowth = 4 * 1024 * 1024

    func testOwnersFreeWhatTheyOwn() throws {
        let directory = FileManager.default.temporaryDirectory.path + "/ffmpeg-objects-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let transportStream = directory + "/null.ts"
        // Ten MPEG-TS null packets: enough for the demuxer to open the file.
        var nullPackets = [UInt8](repeating: 0xFF, count: 188 * 10)
        for i in 0..<10 { nullPackets.replaceSubrange(i * 188..<(i * 188 + 4), with: [0x47, 0x1F, 0xFF, 0x10]) }
        XCTAssertTrue(FileManager.default.createFile(atPath: transportStream, contents: Data(nullPackets)))
        let aac = try XCTUnwrap(avcodec_find_decoder(AV_CODEC_ID_AAC))

        try assertNoGrowth("FFFrame") {
            let frame = try FFFrame()
            frame.raw.pointee.format = AV_SAMPLE_FMT_FLTP.rawValue
            frame.raw.pointee.nb_samples = Int32(Self.payload / 8)
            av_channel_layout_default(&frame.raw.pointee.ch_layout, 2)
            XCTAssertGreaterThanOrEqual(av_frame_get_buffer(frame.raw, 0), 0)
            memset(try XCTUnwrap(frame.raw.pointee.data.0), 1, Self.payload / 2)
            memset(try XCTUnwrap(frame.raw.pointee.data.1), 1, Self.payload / 2)
        }
        try assertNoGrowth("FFPacket and FFPacketList") {
            let packet = try FFPacket()
            XCTAssertEqual(av_new_packet(packet.raw, Int32(Self.payload)), 0)
            memset(packet.raw.pointee.data, 1, Self.payload)
            let list = FFPacketList()
            try list.append(referencing: packet.raw)
            try list.append(referencing: packet.raw)
            XCTAssertEqual(list.count, 2)
        }
        try assertNoGrowth("FFCodecContext") {
            let context = try FFCodecContext(codec: aac)
            av_channel_layout_default(&context.raw.pointee.ch_layout, 2)
            context.raw.pointee.sample_rate = 48_000
            XCTAssertEqual(avcodec_open2(context.raw, aac, nil), 0)
        }
        try assertNoGrowth("FFCodecParameters") {
            let parameters = try FFCodecParameters()
            let extradata = try XCTUnwrap(av_mallocz(Self.payload + Int(AV_INPUT_BUFFER_PADDING_SIZE)))
            memset(extradata, 1, Self.payload)
            parameters.raw.pointee.extradata = extradata.assumingMemoryBound(to: UInt8.self)
            parameters.raw.pointee.extradata_size = Int32(Self.payload)
        }
        try assertNoGrowth("FFOutputFormatContext with a custom FFIOContext") {
            var muxer = try FFOutputFormatContext(format: "mpegts", step: "making a muxer")
            XCTAssertNotNil(avformat_new_stream(muxer.raw, nil))
            let io = try FFIOContext(bufferSize: Int32(Self.payload), opaque: nil, write: { _, _, size in size })
            memset(io.raw.pointee.buffer, 1, Self.payload)
            muxer.attach(io)
        }
        try assertNoGrowth("FFIOContext") {
            for _ in 0..<4 { _ = try FFIOContext(bufferSize: 4096, opaque: nil, write: { _, _, size in size }) }
        }
        try assertNoGrowth("FFOutputFormatContext with a file FFIOContext") {
            var muxer = try FFOutputFormatContext(format: "mp4", step: "making a muxer")
            muxer.attach(try FFIOContext(writingFile: "/dev/null", step: "opening /dev/null"))
        }
        try assertNoGrowth("FFInputFormatContext") {
            var options = FFDictionary()
            try options.set("no_such_option", "1")   // nobody takes it: left in `options`, freed with it
            let input = try FFInputFormatContext(opening: transportStream, format: av_find_input_format("mpegts"),
                                                 options: &options, step: "opening the null packets")
            XCTAssertEqual(input.raw.pointee.nb_streams, 0)
        }
        try assertNoGrowth("FFScaleContext") {
            _ = try FFScaleContext(from: 64, 64, AV_PIX_FMT_BGR0, to: 32, 32, AV_PIX_FMT_YUV420P, flags: SWS_AREA)
        }
    }

    /// A measurement that cannot see leaks would pass the test above for nothing: the same
    /// packets kept instead of freed are seen.
    func testKeptObjectsShowInTheMeasurement() throws {
        let before = Self.trimmedResidentBytes()
        var kept: [UnsafeMutablePointer<AVPacket>?] = []
        for _ in 0..<Self.iterations {
            let packet = try XCTUnwrap(av_packet_alloc())
            XCTAssertEqual(av_new_packet(packet, Int32(Self.payload)), 0)
            memset(packet.pointee.data, 1, Self.payload)
            kept.append(packet)
        }
        let grown = Self.trimmedResidentBytes() - before
        for i in kept.indices { av_packet_free(&kept[i]) }
        XCTAssertGreaterThan(grown, Self.iterations * Self.payload / 2, "the resident size misses \(Self.iterations) packets kept")
    }

    /// Every allocation FFmpeg is asked for fails (av_max_alloc); each owner throws
    /// CaptureError(.encoderError). A test process runs its tests one at a time, so no
    /// other test sees the limit, which is lifted again (to FFmpeg's default) on the way out.
    func testAllocationFailuresThrow() throws {
        let aac = try XCTUnwrap(avcodec_find_encoder(AV_CODEC_ID_AAC))
        av_max_alloc(16)
        defer { av_max_alloc(Int(Int32.max)) }
        func assertThrows<T: ~Copyable>(_ what: String, _ make: () throws(CaptureError) -> T) {
            do throws(CaptureError) {
                _ = try make()
                XCTFail("\(what) did not fail")
            } catch {
                XCTAssertEqual(error.code, .encoderError, what)
            }
        }
        assertThrows("FFFrame") { () throws(CaptureError) in try FFFrame() }
        assertThrows("FFPacket") { () throws(CaptureError) in try FFPacket() }
        assertThrows("FFCodecContext") { () throws(CaptureError) in try FFCodecContext(codec: aac) }
        assertThrows("FFCodecParameters") { () throws(CaptureError) in try FFCodecParameters() }
        assertThrows("FFIOContext") { () throws(CaptureError) in
            try FFIOContext(bufferSize: 4096, opaque: nil, write: { _, _, size in size })
        }
        assertThrows("FFOutputFormatContext") { () throws(CaptureError) in
            try FFOutputFormatContext(format: "mpegts", step: "making a muxer")
        }
        assertThrows("FFScaleContext") { () throws(CaptureError) in
            try FFScaleContext(from: 64, 64, AV_PIX_FMT_BGR0, to: 32, 32, AV_PIX_FMT_YUV420P, flags: SWS_AREA)
        }
    }

    /// What FFmpeg refuses throws too, naming the step, and leaves nothing behind.
    func testRefusalsThrowAndLeaveNothingBehind() throws {
        func assertRefused(_ what: String, _ make: () throws(CaptureError) -> Void) {
            do throws(CaptureError) {
                try make()
                XCTFail("\(what) was not refused")
            } catch {
                XCTAssertEqual(error.code, .encoderError, what)
                XCTAssertTrue(error.message.contains(what), "\(error.message) does not name \(what)")
            }
        }
        try assertNoGrowth("refusals", iterations: 1_000) {
            assertRefused("the unknown muxer") { () throws(CaptureError) in
                _ = try FFOutputFormatContext(format: "no-such-format", step: "the unknown muxer")
            }
            assertRefused("the missing input") { () throws(CaptureError) in
                var options = FFDictionary()
                try options.set("no_such_option", "1")
                _ = try FFInputFormatContext(opening: "/nonexistent/chunk.ts", format: nil, options: &options,
                                             step: "the missing input")
            }
            assertRefused("the unwritable file") { () throws(CaptureError) in
                _ = try FFIOContext(writingFile: "/nonexistent/out.mp4", step: "the unwritable file")
            }
            assertRefused("sws_getContext") { () throws(CaptureError) in
                _ = try FFScaleContext(from: 0, 0, AV_PIX_FMT_BGR0, to: 32, 32, AV_PIX_FMT_YUV420P, flags: SWS_AREA)
            }
        }
    }

    /// The trailer is the owner's to write; the file is flushed and closed when the muxer's
    /// owner goes (after the muxer itself): every byte the muxer counted is in the file,
    /// including the sizes the WAV trailer patches into the header.
    func testAMuxersFileIsCompleteOnceItsOwnerIsGone() throws {
        let path = FileManager.default.temporaryDirectory.path + "/ffmpeg-objects-\(getpid()).wav"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var written: Int64 = 0
        do {
            var muxer = try FFOutputFormatContext(format: "wav", path: path, step: "making the WAV muxer")
            let stream = try XCTUnwrap(avformat_new_stream(muxer.raw, nil))
            stream.pointee.codecpar.pointee.codec_type = AVMEDIA_TYPE_AUDIO
            stream.pointee.codecpar.pointee.codec_id = AV_CODEC_ID_PCM_S16LE
            stream.pointee.codecpar.pointee.sample_rate = 48_000
            av_channel_layout_default(&stream.pointee.codecpar.pointee.ch_layout, 1)
            stream.pointee.time_base = AVRational(num: 1, den: 48_000)
            muxer.attach(try FFIOContext(writingFile: path, step: "opening the WAV file"))
            XCTAssertGreaterThanOrEqual(avformat_write_header(muxer.raw, nil), 0)
            let packet = try FFPacket()
            for i in 0..<10 {
                XCTAssertEqual(av_new_packet(packet.raw, 960), 0)
                memset(packet.raw.pointee.data, 0, 960)
                packet.raw.pointee.pts = Int64(i * 480)
                packet.raw.pointee.dts = Int64(i * 480)
                packet.raw.pointee.duration = 480
                XCTAssertEqual(av_interleaved_write_frame(muxer.raw, packet.raw), 0)
            }
            XCTAssertEqual(av_write_trailer(muxer.raw), 0)
            avio_flush(muxer.raw.pointee.pb)
            written = avio_size(muxer.raw.pointee.pb)
        }
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        XCTAssertGreaterThan(written, 9600)
        XCTAssertEqual((attributes[.size] as? NSNumber)?.int64Value, written)
        // The RIFF size the trailer wrote back: the whole file less the 8-byte RIFF header.
        let riff = try XCTUnwrap(FileManager.default.contents(atPath: path))
        XCTAssertEqual(riff.count, Int(written))
        let riffSize = riff.dropFirst(4).prefix(4).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual(riffSize, riff.count - 8)
    }

    // MARK: Helpers

    /// Runs `body` (which makes and drops objects) `iterations` times after a warm-up and
    /// fails when the resident size grew by more than `allowedGrowth`.
    private func assertNoGrowth(_ what: String, iterations: Int = iterations,
                                _ body: () throws -> Void) throws {
        for _ in 0..<200 { try body() }
        let before = Self.trimmedResidentBytes()
        for _ in 0..<iterations { try body() }
        // Trimmed on both sides: what other threads of a full run malloc'd and freed in
        // between is handed back, what was leaked is not (one CI run, measuring the end
        // untrimmed, saw 4.7 MB for the AAC context's rounds, about 470 bytes a round,
        // where a leaked context would be tens of kilobytes a round).
        let grown = Self.trimmedResidentBytes() - before
        XCTAssertLessThan(grown, Self.allowedGrowth, "\(what): the process grew by \(grown) bytes over \(iterations) rounds")
    }

    /// The resident size once malloc has handed its free pages back: what earlier tests
    /// freed would otherwise be reused without growing the process, hiding a leak.
    static func trimmedResidentBytes() -> Int {
        ProcessMemoryControl.releaseFreeHeap()
        return residentBytes()
    }

    /// The process's resident set size (/proc/self/statm, second field, in pages).
    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return (fields.count > 1 ? Int(fields[1]) ?? 0 : 0) * sysconf(Int32(_SC_PAGESIZE))
    }
}
