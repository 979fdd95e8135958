import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// A BGRX (XShm-like) image in memory with a few drawing helpers.
final class TestImage {
    let width: Int
    let height: Int
    let bytesPerRow: Int
    let pixels: UnsafeMutableRawPointer

    init(width: Int, height: Int, rowPadding: Int = 0) {
        self.width = width
        self.height = height
        bytesPerRow = width * 4 + rowPadding
        pixels = .allocate(byteCount: bytesPerRow * height, alignment: 64)
        pixels.initializeMemory(as: UInt8.self, repeating: 0, count: bytesPerRow * height)
    }

    deinit { pixels.deallocate() }

    var view: PixelBufferView {
        PixelBufferView(baseAddress: pixels, width: width, height: height, bytesPerRow: bytesPerRow)
    }

    func set(_ x: Int, _ y: Int, r: UInt8, g: UInt8, b: UInt8) {
        let p = (pixels + y * bytesPerRow + x * 4).assumingMemoryBound(to: UInt8.self)
        p[0] = b; p[1] = g; p[2] = r; p[3] = 0
    }

    func fill(_ rect: PixelRect, r: UInt8, g: UInt8, b: UInt8) {
        let clipped = rect.intersection(PixelRect(x: 0, y: 0, width: width, height: height))
        if clipped.isEmpty { return }
        for y in Int(clipped.y)..<Int(clipped.maxY) {
            for x in Int(clipped.x)..<Int(clipped.maxX) { set(x, y, r: r, g: g, b: b) }
        }
    }

    func randomize(_ rect: PixelRect, using rng: inout some RandomNumberGenerator) {
        let clipped = rect.intersection(PixelRect(x: 0, y: 0, width: width, height: height))
        if clipped.isEmpty { return }
        for y in Int(clipped.y)..<Int(clipped.maxY) {
            let row = (pixels + y * bytesPerRow + Int(clipped.x) * 4).assumingMemoryBound(to: UInt32.self)
            for i in 0..<Int(clipped.width) { row[i] = UInt32.random(in: 0...UInt32.max, using: &rng) }
        }
    }

    /// A static diagonal gradient with a white box that moves with `frame`.
    /// Returns the box's rectangle (what changed, together with the previous box).
    @discardableResult
    func drawMoving(frame: Int) -> PixelRect {
        for y in 0..<height {
            let row = (pixels + y * bytesPerRow).assumingMemoryBound(to: UInt32.self)
            for x in 0..<width {
                let r = UInt32(x & 0xFF), g = UInt32((y * 2) & 0xFF), b = UInt32((x + y) / 4 & 0xFF)
                row[x] = (r << 16) | (g << 8) | b
            }
        }
        return drawBox(frame: frame)
    }

    /// Redraws only what changes between frame-1 and frame (the box over the gradient).
    func advance(to frame: Int) -> DirtyRegion {
        var d = DirtyRegion()
        let old = boxRect(frame: frame - 1)
        for y in Int(old.y)..<Int(old.maxY) {
            let row = (pixels + y * bytesPerRow).assumingMemoryBound(to: UInt32.self)
            for x in Int(old.x)..<Int(old.maxX) {
                let r = UInt32(x & 0xFF), g = UInt32((y * 2) & 0xFF), b = UInt32((x + y) / 4 & 0xFF)
                row[x] = (r << 16) | (g << 8) | b
            }
        }
        d.add(old)
        d.add(drawBox(frame: frame))
        return d
    }

    func boxRect(frame: Int) -> PixelRect {
        let box = min(48, width / 2, height / 2)
        let bx = (frame * 7) % max(1, width - box), by = (frame * 5) % max(1, height - box)
        return PixelRect(x: bx, y: by, width: box, height: box)
    }

    private func drawBox(frame: Int) -> PixelRect {
        let r = boxRect(frame: frame)
        fill(r, r: 255, g: 255, b: 255)
        return r
    }
}

struct ToolResult {
    var status: Int32
    var stdout: Data
    var stderr: String
}

enum Tools {
    static func run(_ executable: String, _ arguments: [String]) throws -> ToolResult {
        let r = try runProcessData(executable, arguments, timeout: .seconds(120))
        return ToolResult(status: r.status, stdout: Data(r.stdout), stderr: r.stderr)
    }

    static func ffprobeJSON(_ arguments: [String]) throws -> [String: Any] {
        let r = try run("/usr/bin/ffprobe", ["-v", "error", "-print_format", "json"] + arguments)
        guard r.status == 0 else { throw ToolError("ffprobe \(arguments) failed: \(r.stderr)") }
        guard let obj = try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any] else {
            throw ToolError("ffprobe printed no JSON object")
        }
        return obj
    }

    struct Stream {
        var codec: String
        var width: Int
        var height: Int
        var sampleRate: Int
        var channels: Int
        var startTime: Double
        var frames: Int
    }

    /// First stream of a file, with decoded frame count.
    static func probeStream(_ path: String) throws -> Stream {
        let s = try Media.probe(path).first
        return Stream(codec: s.codecName, width: s.width, height: s.height, sampleRate: s.sampleRate,
                      channels: s.channels, startTime: s.startTime, frames: s.frameCount)
    }

    struct Packet { var pts: Int64; var dts: Int64; var key: Bool }

    static func packets(_ path: String) throws -> [Packet] {
        let j = try ffprobeJSON(["-show_packets", path])
        let list = j["packets"] as? [[String: Any]] ?? []
        return list.map { p in
            Packet(pts: (p["pts"] as? NSNumber)?.int64Value ?? .min,
                   dts: (p["dts"] as? NSNumber)?.int64Value ?? .min,
                   key: (p["flags"] as? String ?? "").hasPrefix("K"))
        }
    }

    /// Decodes audio to float samples at 48 kHz; returns the left channel.
    static func decodeAudio(_ path: String) throws -> [Float] {
        let interleaved = try Media.decodeFloat(path, channels: nil, sampleRate: 48_000, seconds: nil)
        return stride(from: 0, to: interleaved.count - 1, by: 2).map { interleaved[$0] }
    }

    /// Decodes the first video frame to packed RGB24.
    static func decodeFirstFrameRGB(_ path: String) throws -> [UInt8] {
        let r = try run("/usr/bin/ffmpeg", ["-nostdin", "-v", "error", "-i", path, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        guard r.status == 0 else { throw ToolError("ffmpeg video decode failed: \(r.stderr)") }
        return [UInt8](r.stdout)
    }
}

extension XCTestCase {
    /// Checks that chunk `index` at `path` stands on its own as MPEG-TS: SI
    /// tables first, and the first PES of its stream carries a PCR. Returns its bytes.
    func assertSelfContainedChunk(_ path: String, index c: Int,
                                  file: StaticString = #filePath, line: UInt = #line) throws -> Data {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let ts = try TransportStreamSummary(data)
        XCTAssertTrue(ts.startsWithTables, "chunk \(c) starts with SI tables: \(ts.packets.prefix(4).map(\.pid))",
                      file: file, line: line)
        let es = try XCTUnwrap(ts.elementaryPID, file: file, line: line)
        let firstPES = try XCTUnwrap(ts.packets.first { $0.pid == es }, file: file, line: line)
        XCTAssertTrue(firstPES.payloadStart && firstPES.hasPCR, "chunk \(c): first PES carries a PCR", file: file, line: line)
        return data
    }
}

struct ToolError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A minimal MPEG-TS reader: the PIDs of the packets in order, and for each PES
/// start whether its adaptation field carries a PCR.
struct TransportStreamSummary {
    struct TSPacket { var pid: Int; var payloadStart: Bool; var hasPCR: Bool; var hasPayload: Bool; var continuity: Int }
    var packets: [TSPacket] = []
    var pmtPID: Int?

    init(_ data: Data) throws {
        guard data.count % 188 == 0, data.count > 0 else { throw ToolError("TS size \(data.count) is not a multiple of 188") }
        let bytes = [UInt8](data)
        var i = 0
        while i < bytes.count {
            guard bytes[i] == 0x47 else { throw ToolError("no TS sync byte at \(i)") }
            let pid = (Int(bytes[i + 1] & 0x1F) << 8) | Int(bytes[i + 2])
            let pusi = bytes[i + 1] & 0x40 != 0
            let afc = (bytes[i + 3] >> 4) & 0x3
            var pcr = false
            if afc & 0x2 != 0 && bytes[i + 4] > 0 { pcr = bytes[i + 5] & 0x10 != 0 }
            packets.append(TSPacket(pid: pid, payloadStart: pusi, hasPCR: pcr, hasPayload: afc & 0x1 != 0,
                                    continuity: Int(bytes[i + 3] & 0x0F)))
            if pid == 0 && pusi && pmtPID == nil {
                // PAT: pointer field, then table; first program's PMT PID.
                let p = i + 4 + 1 + Int(bytes[i + 4])
                pmtPID = (Int(bytes[p + 10] & 0x1F) << 8) | Int(bytes[p + 11])
            }
            i += 188
        }
    }

    /// PIDs whose continuity counter skips somewhere (excluding the null PID).
    var continuityBreaks: [String] {
        var last: [Int: Int] = [:]
        var breaks: [String] = []
        for (n, p) in packets.enumerated() where p.pid != 0x1FFF && p.hasPayload {
            if let prev = last[p.pid], (prev + 1) & 0xF != p.continuity {
                breaks.append("pid \(p.pid) at TS packet \(n): \(prev) -> \(p.continuity)")
            }
            last[p.pid] = p.continuity
        }
        return breaks
    }

    /// The chunk opens with SI tables only (SDT 0x11 may come first, as libavformat
    /// writes it), PAT before PMT, and both before the first elementary-stream packet.
    var startsWithTables: Bool {
        guard let pmt = pmtPID, let es = elementaryPID,
              let firstES = packets.firstIndex(where: { $0.pid == es }),
              let pat = packets.firstIndex(where: { $0.pid == 0 }),
              let pmtIndex = packets.firstIndex(where: { $0.pid == pmt }) else { return false }
        let head = packets[..<firstES]
        return pat < pmtIndex && pmtIndex < firstES && head.allSatisfy { [0, 0x11, pmt].contains($0.pid) }
            && packets[pat].payloadStart && packets[pmtIndex].payloadStart
    }

    /// The elementary stream's PID: the first PID that is not PAT, PMT or SDT.
    var elementaryPID: Int? {
        packets.first { $0.pid != 0 && $0.pid != 0x11 && $0.pid != pmtPID && $0.pid != 0x1FFF }?.pid
    }
}

/// A test case with a fresh temporary directory per test, removed afterwards.
class TemporaryDirectoryTestCase: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("media-encoding-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }
}
